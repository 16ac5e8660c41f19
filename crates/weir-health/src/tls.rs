//! Certificate verification for IP-literal upstreams.
//!
//! Pingora's TLS connector turns verification **off** when a peer has no SNI (as nginx does),
//! and it only checks DNS names. Weir never skips verification silently: for a node reached by
//! IP with verification on, the peer's SNI is set to the IP text (OpenSSL sends no SNI for an
//! IP literal, but the connector then verifies the chain), host-name checking is left off, and
//! this hook checks the certificate's IP SANs once the handshake completes. A mismatch is
//! recorded in the TLS digest; [`check_ip_verified`] turns it into a connect-class error.
//! Written by hand because no crate hooks into Pingora's connector at this point.

use pingora::protocols::tls::{HandshakeCompleteHook, TlsRef};
use pingora::protocols::Digest;
use pingora::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType};
use std::net::IpAddr;
use std::sync::Arc;

/// Marker left in the TLS digest when the certificate does not name the IP.
#[derive(Debug)]
pub struct IpSanMismatch(pub IpAddr);

/// A handshake hook that checks the peer certificate's IP SANs against `ip`.
pub fn ip_san_hook(ip: IpAddr) -> HandshakeCompleteHook {
    let want: Vec<u8> = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    Arc::new(move |ssl: &TlsRef| {
        let names_ip = ssl
            .peer_certificate()
            .and_then(|c| c.subject_alt_names())
            .is_some_and(|names| names.iter().any(|n| n.ipaddress() == Some(&want[..])));
        if names_ip {
            None
        } else {
            Some(Arc::new(IpSanMismatch(ip)) as Arc<dyn std::any::Any + Send + Sync>)
        }
    })
}

/// Verification of one IP by its certificate's IP SANs, ready to attach to peers.
#[derive(Clone)]
pub struct IpVerifier {
    ip: IpAddr,
    hook: HandshakeCompleteHook,
}

impl std::fmt::Debug for IpVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("IpVerifier").field(&self.ip).finish()
    }
}

impl IpVerifier {
    pub fn new(ip: IpAddr) -> Self {
        IpVerifier {
            ip,
            hook: ip_san_hook(ip),
        }
    }

    /// Make a TLS peer with an empty SNI verify against the IP (see the module docs). No-op
    /// unless the peer is TLS, verifies certificates and has no SNI.
    pub fn apply(&self, peer: &mut HttpPeer) {
        if peer.scheme != pingora::upstreams::peer::Scheme::HTTPS
            || !peer.options.verify_cert
            || !peer.sni.is_empty()
        {
            return;
        }
        peer.sni = self.ip.to_string();
        peer.options.verify_hostname = false;
        peer.options.upstream_tls_handshake_complete_hook = Some(Arc::clone(&self.hook));
    }
}

/// `Err` (`InvalidCert`) when the handshake hook found that the certificate does not name
/// the IP it was verified against.
pub fn check_ip_verified(digest: Option<&Digest>) -> pingora_error::Result<()> {
    let mismatch = digest
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|s| s.extension.get::<IpSanMismatch>());
    match mismatch {
        Some(IpSanMismatch(ip)) => Err(Error::explain(
            ErrorType::InvalidCert,
            format!("certificate verify failed: the upstream certificate has no IP SAN {ip}"),
        )),
        None => Ok(()),
    }
}
