//! A checker's settings ([`ProbeSpec`]) and the built-in checks (docs/health-checks.md):
//! [`TcpCheck`] connects; [`HttpCheck`] connects, optionally TLS, sends the probe request with
//! `Connection: close`, reads the status line, classifies.
//!
//! HTTP and HTTPS probes go through Pingora's own HTTP connector, so a probe's TLS handshake
//! (SNI, verification, CA, client certificate) is exactly the one the data path would make.

use crate::check::Check;
use crate::state::{Report, Thresholds};
use crate::status::StatusClasses;
use crate::target::Target;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::protocols::tls::CaType;
use pingora::upstreams::peer::HttpPeer;
use pingora::utils::tls::CertKey;
use pingora_error::{Error, ErrorType};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A checker's settings (`checks.active` plus the upstream's TLS material). Every check gets
/// all of them; the HTTP options mean what a registered check makes them mean.
#[derive(Clone)]
pub struct ProbeSpec {
    /// `checks.active.type`: the name of the registered [`Check`] that probes.
    pub kind: Arc<str>,
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

/// How an I/O error of a probe counts: a timeout, or a tcp failure.
pub fn io_report(e: &std::io::Error) -> Report {
    match e.kind() {
        std::io::ErrorKind::TimedOut => Report::Timeout,
        _ => Report::TcpFailure,
    }
}

/// A TCP connection for a [`Check`] of your own: every step within the probe's `timeout`,
/// every error already classified as the built-ins classify it (refused, reset, closed:
/// [`Report::TcpFailure`]; out of time: [`Report::Timeout`]), so a check is a chain of `?`.
#[derive(Debug)]
pub struct ProbeStream {
    stream: tokio::net::TcpStream,
    timeout: Duration,
}

impl ProbeStream {
    /// Connect to [`Target::addr`] within `spec.timeout`.
    pub async fn connect(target: &Target, spec: &ProbeSpec) -> Result<Self, Report> {
        let connect = tokio::net::TcpStream::connect(target.addr());
        match tokio::time::timeout(spec.timeout, connect).await {
            Ok(Ok(stream)) => Ok(ProbeStream {
                stream,
                timeout: spec.timeout,
            }),
            Ok(Err(e)) => Err(io_report(&e)),
            Err(_) => Err(Report::Timeout),
        }
    }

    /// Write all of `data` within `timeout`.
    pub async fn write_all(&mut self, data: &[u8]) -> Result<(), Report> {
        use tokio::io::AsyncWriteExt;
        match tokio::time::timeout(self.timeout, self.stream.write_all(data)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_report(&e)),
            Err(_) => Err(Report::Timeout),
        }
    }

    /// Read until `n` bytes have arrived or the peer closed the connection, all within
    /// `timeout`: what arrived, shorter than `n` (empty, even) when the peer closed first.
    pub async fn read_up_to(&mut self, n: usize) -> Result<Vec<u8>, Report> {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0; n];
        let mut got = 0;
        let read = async {
            while got < n {
                match self.stream.read(&mut buf[got..]).await? {
                    0 => break,
                    k => got += k,
                }
            }
            Ok::<(), std::io::Error>(())
        };
        match tokio::time::timeout(self.timeout, read).await {
            Ok(Ok(())) => {
                buf.truncate(got);
                Ok(buf)
            }
            Ok(Err(e)) => Err(io_report(&e)),
            Err(_) => Err(Report::Timeout),
        }
    }

    /// The connection itself, for what the methods above do not cover.
    pub fn into_inner(self) -> tokio::net::TcpStream {
        self.stream
    }
}

/// The built-in `tcp` check: a connect that succeeds within `timeout` is a success.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpCheck;

#[async_trait]
impl Check for TcpCheck {
    async fn check(&self, target: &Target, spec: &ProbeSpec) -> Outcome {
        Some(match ProbeStream::connect(target, spec).await {
            Ok(_) => Report::Success,
            Err(r) => r,
        })
    }
}

/// The built-in `http` and `https` checks: `<http_method> <http_path>` with `Host`,
/// `Connection: close`, `req_headers` and the body, classified by the status line. Its
/// connector is made at the first probe; it never pools (probes close their connections).
pub struct HttpCheck {
    tls: bool,
    connector: OnceLock<Connector>,
}

impl std::fmt::Debug for HttpCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCheck").field("tls", &self.tls).finish()
    }
}

impl HttpCheck {
    /// Plain HTTP (`http`).
    pub fn http() -> Self {
        HttpCheck {
            tls: false,
            connector: OnceLock::new(),
        }
    }

    /// HTTP over TLS (`https`).
    pub fn https() -> Self {
        HttpCheck {
            tls: true,
            connector: OnceLock::new(),
        }
    }
}

#[async_trait]
impl Check for HttpCheck {
    async fn check(&self, target: &Target, spec: &ProbeSpec) -> Outcome {
        // Probes get their own connector, apart from the data path's.
        let connector = self.connector.get_or_init(|| Connector::new(None));
        match probe_http(self.tls, spec, target, connector).await {
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
        }
    }
}

async fn probe_http(
    tls: bool,
    spec: &ProbeSpec,
    target: &Target,
    connector: &Connector,
) -> pingora_error::Result<u16> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Thresholds;
    use crate::target::{TargetId, TargetSpec};
    use std::sync::atomic::AtomicI64;

    fn target(addr: std::net::SocketAddr) -> Target {
        let spec = TargetSpec {
            id: TargetId {
                ip: addr.ip(),
                port: addr.port(),
                hostname: addr.ip().to_string(),
            },
            host: addr.ip().to_string(),
        };
        Target::new(spec, Arc::from("upstreams/u"), Arc::new(AtomicI64::new(0)))
    }

    fn spec() -> ProbeSpec {
        ProbeSpec {
            kind: Arc::from("banner"),
            timeout: Duration::from_secs(5),
            concurrency: 1,
            method: http::Method::GET,
            path: "/".into(),
            body: Bytes::new(),
            headers: Vec::new(),
            verify_certificate: true,
            ca: None,
            client_cert_key: None,
            healthy_interval: Duration::from_secs(1),
            unhealthy_interval: Duration::from_secs(1),
            statuses: StatusClasses::default(),
            thresholds: Thresholds {
                successes: 1,
                http_failures: 1,
                tcp_failures: 1,
                timeouts: 1,
            },
        }
    }

    #[tokio::test]
    async fn a_probe_stream_exchanges_bytes_and_classifies_its_errors() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let t = target(listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut ping = [0u8; 6];
            s.read_exact(&mut ping).await.expect("ping");
            assert_eq!(&ping, b"PING\r\n");
            s.write_all(b"+PONG\r\n").await.expect("pong");
            // Closing early: a read asking for more gets what arrived.
        });
        let mut conn = ProbeStream::connect(&t, &spec()).await.expect("connect");
        conn.write_all(b"PING\r\n").await.expect("write");
        assert_eq!(conn.read_up_to(5).await.expect("read"), b"+PONG");
        server.await.expect("server");
        assert_eq!(conn.read_up_to(100).await.expect("read"), b"\r\n");

        // A bound socket that never listens refuses: a tcp failure, for TcpCheck too.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let refused = target(socket.local_addr().expect("addr"));
        let err = ProbeStream::connect(&refused, &spec()).await.unwrap_err();
        assert_eq!(err, Report::TcpFailure);
        assert_eq!(
            TcpCheck.check(&refused, &spec()).await,
            Some(Report::TcpFailure)
        );
    }
}
