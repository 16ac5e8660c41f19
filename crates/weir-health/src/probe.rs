//! One active probe (docs/health-checks.md): connect, optionally TLS, send the probe request
//! with `Connection: close`, read the status line, classify.
//!
//! HTTP and HTTPS probes go through Pingora's own HTTP connector, so a probe's TLS handshake
//! (SNI, verification, CA, client certificate) is exactly the one the data path would make.

use crate::state::{Report, Thresholds};
use crate::status::StatusClasses;
use crate::target::Target;
use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::CertKey;
use pingora_error::{Error, ErrorType};
use std::sync::Arc;
use std::time::Duration;

/// `checks.active.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Http,
    Https,
    Tcp,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Http => "http",
            ProbeKind::Https => "https",
            ProbeKind::Tcp => "tcp",
        }
    }
}

/// A checker's settings (`checks.active` plus the upstream's TLS material).
#[derive(Clone)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    /// Applies separately to connect, TLS handshake, write and reading the status line.
    pub timeout: Duration,
    /// Probes in flight at most, per checker.
    pub concurrency: usize,
    pub method: http::Method,
    pub path: String,
    pub body: Bytes,
    pub headers: Vec<(String, String)>,
    pub verify_certificate: bool,
    pub ca: Option<Arc<CaType>>,
    pub client_cert_key: Option<Arc<CertKey>>,
    /// Probe period of up targets.
    pub healthy_interval: Duration,
    /// Probe period of down targets.
    pub unhealthy_interval: Duration,
    pub statuses: StatusClasses,
    pub thresholds: Thresholds,
}

impl std::fmt::Debug for ProbeSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Certificates and keys are left out: keys never reach logs.
        f.debug_struct("ProbeSpec")
            .field("kind", &self.kind)
            .field("timeout", &self.timeout)
            .field("path", &self.path)
            .field("healthy_interval", &self.healthy_interval)
            .field("unhealthy_interval", &self.unhealthy_interval)
            .finish_non_exhaustive()
    }
}

/// A probe's outcome: a report, or `None` for a status in neither list.
pub type Outcome = Option<Report>;

/// How a transport error counts: a timeout, or a tcp failure. Also used for passive reports.
pub fn transport_report(e: &Error) -> Report {
    match e.etype() {
        ErrorType::ConnectTimedout
        | ErrorType::TLSHandshakeTimedout
        | ErrorType::ReadTimedout
        | ErrorType::WriteTimedout => Report::Timeout,
        _ => Report::TcpFailure,
    }
}

/// Probe `target` once.
pub async fn probe(spec: &ProbeSpec, target: &Target, connector: &Connector) -> Outcome {
    match spec.kind {
        ProbeKind::Tcp => Some(probe_tcp(spec, target).await),
        ProbeKind::Http | ProbeKind::Https => match probe_http(spec, target, connector).await {
            Ok(status) => spec.statuses.classify(status),
            Err(e) => {
                log::debug!(
                    "upstream {}: probe of {} failed: {e}",
                    target.upstream,
                    target.id
                );
                Some(match e.etype() {
                    ErrorType::InvalidHTTPHeader | ErrorType::H1Error => Report::HttpFailure,
                    _ => transport_report(&e),
                })
            }
        },
    }
}

async fn probe_tcp(spec: &ProbeSpec, target: &Target) -> Report {
    match tokio::time::timeout(spec.timeout, tokio::net::TcpStream::connect(target.addr())).await {
        Ok(Ok(_)) => Report::Success,
        Ok(Err(_)) => Report::TcpFailure,
        Err(_) => Report::Timeout,
    }
}

async fn probe_http(
    spec: &ProbeSpec,
    target: &Target,
    connector: &Connector,
) -> pingora_error::Result<u16> {
    let tls = spec.kind == ProbeKind::Https;
    let bare = target.host.trim_start_matches('[').trim_end_matches(']');
    let sni = if bare.parse::<std::net::IpAddr>().is_ok() {
        String::new()
    } else {
        target.host.clone()
    };
    let mut peer = HttpPeer::new(target.addr(), tls, sni);
    let o = &mut peer.options;
    o.connection_timeout = Some(spec.timeout);
    // The handshake gets its own `timeout` on top of the TCP connect's.
    o.total_connection_timeout = Some(spec.timeout * 2);
    o.read_timeout = Some(spec.timeout);
    o.write_timeout = Some(spec.timeout);
    o.verify_cert = spec.verify_certificate;
    o.verify_hostname = spec.verify_certificate;
    o.ca = spec.ca.clone();
    peer.client_cert_key = spec.client_cert_key.clone();
    if tls && peer.sni.is_empty() {
        crate::tls::IpVerifier::new(target.id.ip).apply(&mut peer);
    }

    let (mut session, _) = connector.get_http_session(&peer).await?;
    crate::tls::check_ip_verified(session.digest())?;
    let mut req =
        pingora::http::RequestHeader::build(spec.method.clone(), spec.path.as_bytes(), None)?;
    req.insert_header(http::header::HOST, target.host.as_str())?;
    req.insert_header(http::header::CONNECTION, "close")?;
    for (name, value) in &spec.headers {
        req.append_header(name.clone(), value.as_str())?;
    }
    if !spec.body.is_empty() {
        req.insert_header(http::header::CONTENT_LENGTH, spec.body.len().to_string())?;
    }
    session.set_write_timeout(Some(spec.timeout));
    session.set_read_timeout(Some(spec.timeout));
    session.write_request_header(Box::new(req)).await?;
    if !spec.body.is_empty() {
        session.write_request_body(spec.body.clone(), true).await?;
    }
    session.finish_request_body().await?;
    session.read_response_header().await?;
    let status = session
        .response_header()
        .map(|r| r.status.as_u16())
        .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "no response header"))?;
    // Only the status line matters; the connection is dropped (closed), never pooled.
    Ok(status)
}
