//! The forwarded headers Weir adds to every upstream request, as APISIX sets them.

use crate::proxy::request_host;
use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

/// `X-Forwarded-For` (appended), `X-Real-IP`, `X-Forwarded-Proto`, `X-Forwarded-Host`,
/// `X-Forwarded-Port`, as APISIX sets them.
///
/// Per-request cost matters here (five inserts on every request): names are static, values are
/// formatted on the stack and copied once, constant values are static.
pub(crate) fn forwarded_headers(session: &Session, req: &mut RequestHeader) -> Result<()> {
    use http::HeaderValue;
    use std::io::Write;
    let mut buf = [0u8; 64];
    if let Some(client) = session.client_addr().and_then(|a| a.as_inet()) {
        let ip = client.ip();
        let mut w = &mut buf[..];
        let _ = write!(w, "{ip}");
        let n = 64 - w.len();
        let ip_bytes = &buf[..n];
        let xff = match req.headers.get("x-forwarded-for") {
            Some(prev) if !prev.is_empty() => {
                let mut v = Vec::with_capacity(prev.len() + 2 + n);
                v.extend_from_slice(prev.as_bytes());
                v.extend_from_slice(b", ");
                v.extend_from_slice(ip_bytes);
                HeaderValue::from_maybe_shared(Bytes::from(v))
            }
            _ => HeaderValue::from_bytes(ip_bytes),
        };
        let ip_value = HeaderValue::from_bytes(ip_bytes);
        if let (Ok(xff), Ok(ip_value)) = (xff, ip_value) {
            req.insert_header(Bytes::from_static(b"X-Forwarded-For"), xff)?;
            req.insert_header(Bytes::from_static(b"X-Real-IP"), ip_value)?;
        }
    }
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    let proto = HeaderValue::from_static(if tls { "https" } else { "http" });
    req.insert_header(Bytes::from_static(b"X-Forwarded-Proto"), proto)?;
    let host = request_host(session);
    if !host.is_empty() {
        if let Ok(v) = HeaderValue::from_str(host) {
            req.insert_header(Bytes::from_static(b"X-Forwarded-Host"), v)?;
        }
    }
    if let Some(local) = session.server_addr().and_then(|a| a.as_inet()) {
        let mut w = &mut buf[..];
        let _ = write!(w, "{}", local.port());
        let n = 64 - w.len();
        if let Ok(v) = HeaderValue::from_bytes(&buf[..n]) {
            req.insert_header(Bytes::from_static(b"X-Forwarded-Port"), v)?;
        }
    }
    Ok(())
}
