//! The Pingora peer of one attempt, the identity of its connection, and what a refused
//! upstream certificate is logged as.

use crate::attempt::Attempt;
use crate::ctx::RequestCtx;
use crate::proxy::request_host;
use crate::router::strip_port;
use crate::upstream::sni_for;
use pingora::prelude::*;
use pingora::protocols::Digest;
use pingora::proxy::Session;
use weir_config::{PassHost, Timeout};

/// The Pingora peer of `attempt`: its node's, with the per-request parts (the HTTP/2
/// connection generation, SNI under `pass_host: pass`, timeouts).
pub(crate) fn peer_for(
    session: &Session,
    t: Timeout,
    attempt: &Attempt,
    per_worker: bool,
) -> Box<HttpPeer> {
    let up = attempt.upstream();
    let node = &up.nodes[attempt.node()];
    let mut peer = Box::new(node.peer.clone());
    if per_worker {
        peer.group_key ^= crate::pool::worker_salt();
    }
    if up.conf.scheme.is_grpc() {
        // Golden-ratio mixing keeps generations apart in Pingora's pool key.
        peer.group_key ^= attempt.h2_epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    if up.conf.scheme.is_tls() {
        peer.sni = match &up.conf.pass_host {
            PassHost::Pass => match request_host(session) {
                "" => node.node_sni.clone(),
                h => sni_for(h).to_owned(),
            },
            PassHost::Node => node.node_sni.clone(),
            PassHost::Rewrite(h) => sni_for(strip_port(h)).to_owned(),
        };
        // No SNI (an IP literal) under tls_verify: verify the node IP instead.
        if let Some(v) = &node.ip_verifier {
            v.apply(&mut peer);
        }
    }
    peer.options.connection_timeout = Some(t.connect);
    peer.options.total_connection_timeout = Some(t.connect);
    peer.options.read_timeout = Some(t.read);
    peer.options.write_timeout = Some(t.send);
    peer
}

/// When the connection of `digest` was established: with its fd, the connection's identity.
pub(crate) fn established_ts(digest: Option<&Digest>) -> Option<std::time::SystemTime> {
    digest
        .and_then(|d| d.timing_digest.first())
        .and_then(|t| t.as_ref())
        .map(|t| t.established_ts)
}

/// Say why a certificate was refused in the operator's terms: what it had to chain to and
/// which name or IP it had to carry. OpenSSL's own message only says "verify failed".
pub(crate) fn log_rejected_certificate(ctx: &RequestCtx, peer: &HttpPeer, e: &Error) {
    let Some(up) = &ctx.upstream else {
        return;
    };
    let trust = if up.conf.tls.ca_certificates.is_empty() {
        "the system trust store".to_owned()
    } else {
        let ids: Vec<&str> = up
            .conf
            .tls
            .ca_certificates
            .iter()
            .map(|i| i.as_str())
            .collect();
        format!("ca_certificates [{}]", ids.join(", "))
    };
    let name = if peer.options.verify_hostname {
        format!("name {:?}", peer.sni)
    } else {
        format!("IP {} (no SNI)", peer.sni)
    };
    log::warn!(
        "upstream {}: certificate of {} rejected under tls_verify: it must chain to {trust} and carry {name}: {e}",
        up.key,
        peer._address
    );
}
