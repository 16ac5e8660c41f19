//! The Admin API (APISIX 3 compatible) on `admin.listen`: PUT, POST, GET, PATCH and DELETE of
//! routes, services, upstreams, consumers, certificates and CA certificates, written through a
//! [`Backend`] (the file or etcd). See `docs/admin-api.md`.
//!
//! Every request passes the gate first: a client outside `allow_admin` gets 403, a missing or
//! wrong `X-API-KEY` 401, a body over [`MAX_BODY`] 413. Writes are serialised and validated
//! against the whole resulting configuration before they are stored. Answers never contain a
//! private key or an API key, and nothing here logs a request body. Every write (any method
//! but GET and HEAD), refused or not, is logged as one audit line under [`AUDIT_TARGET`].

mod auth;
mod handler;
mod mask;
mod merge;

pub use handler::{resource_key, Reply, Request, PREFIX};
pub use mask::{masked, MASK};
pub use merge::merge_patch;

use crate::source::Backend;
use async_trait::async_trait;
use auth::{allowed, ApiKey};
use http::{Response, StatusCode};
use ipnet::IpNet;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use weir_config::AdminConfig;

/// The largest request body accepted (1 MiB); larger ones get 413.
pub const MAX_BODY: usize = 1 << 20;

/// The Admin API application. Serve it with [`admin_service`], or call [`AdminApi::handle`]
/// from your own server.
pub struct AdminApi {
    backend: Arc<dyn Backend>,
    key: ApiKey,
    allow: Vec<IpNet>,
    /// Writes are serialised: each is validated against the state the previous one left.
    writes: tokio::sync::Mutex<()>,
    last_id: Mutex<u64>,
}

impl AdminApi {
    pub fn new(cfg: &AdminConfig, backend: Arc<dyn Backend>) -> Self {
        AdminApi {
            backend,
            key: ApiKey::new(cfg.api_key.expose()),
            allow: cfg.allow_admin.clone(),
            writes: tokio::sync::Mutex::new(()),
            last_id: Mutex::new(0),
        }
    }

    /// The answer for a client that may not call the API (403 outside `allow_admin`, 401
    /// without the right key), or `None`.
    pub fn gate(&self, client: Option<IpAddr>, api_key: Option<&[u8]>) -> Option<Reply> {
        if !allowed(&self.allow, client) {
            return Some(Reply::error(
                403,
                "client address is not allowed (admin.allow_admin)",
            ));
        }
        match api_key {
            Some(k) if self.key.matches(k) => None,
            Some(_) => Some(Reply::error(401, "wrong X-API-KEY")),
            None => Some(Reply::error(401, "missing X-API-KEY")),
        }
    }
}

/// The Admin API listening on `cfg.listen`, as a Pingora service.
pub fn admin_service(cfg: &AdminConfig, backend: Arc<dyn Backend>) -> Service<AdminApi> {
    let mut svc = Service::new("weir admin API".into(), AdminApi::new(cfg, backend));
    svc.add_tcp(&cfg.listen.to_string());
    svc
}

fn render(reply: &Reply) -> Response<Vec<u8>> {
    let body = reply.body.to_string().into_bytes();
    let len = body.len();
    let mut resp = Response::new(body);
    *resp.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    h.insert(http::header::CONTENT_LENGTH, len.into());
    resp
}

/// How much of a refused body is read and dropped before the 413, so that a client still
/// sending it reads the answer instead of a connection reset; and for how long.
const DISCARD_MAX: usize = 8 * MAX_BODY;
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Read and drop what is left of a refused body, up to [`DISCARD_MAX`] bytes or
/// [`DISCARD_TIME`].
async fn discard(session: &mut ServerSession, mut read: usize) {
    let drain = async {
        while read <= DISCARD_MAX {
            match session.read_request_body().await {
                Ok(Some(chunk)) => read += chunk.len(),
                Ok(None) | Err(_) => break,
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
}

/// Read the whole body, or the 413 / 400 answer when it is too large or broken.
async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Reply> {
    let too_large = || Reply::error(413, format!("request body is larger than {MAX_BODY} bytes"));
    let declared = session
        .get_header(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        if declared.is_some_and(|n| n <= DISCARD_MAX as u64) {
            discard(session, 0).await;
        }
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    discard(session, body.len() + chunk.len()).await;
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(Reply::error(
                    400,
                    format!("cannot read the request body: {e}"),
                ))
            }
        }
    }
}

/// The log target of the audit lines: one per write (any method but GET and HEAD), refused
/// or not. See `docs/admin-api.md` ("Audit log").
pub const AUDIT_TARGET: &str = "weir::audit";

/// Whether `method` only reads.
fn is_read(method: &http::Method) -> bool {
    method == http::Method::GET || method == http::Method::HEAD
}

/// A request path as the audit line shows it: printable ASCII kept, every other byte (and
/// `"`, backslash, `%`) percent-encoded, so that a path can never break or forge a log line.
fn audit_text(s: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'%') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The audit line of one write: who (peer address), what (method, path, the resource key when
/// known) and the answer's status. Never the body, the query string or a header: they may
/// carry secrets (a private key, a consumer's key, the admin key in the wrong place).
fn audit(peer: Option<std::net::SocketAddr>, method: &http::Method, path: &str, reply: &Reply) {
    let key = reply
        .body
        .get("key")
        .and_then(|k| k.as_str())
        .map_or_else(|| "-".to_owned(), audit_text);
    log::info!(
        target: AUDIT_TARGET,
        "admin write: peer={} method={} path={} key={key} status={}",
        peer.map_or_else(|| "-".to_owned(), |p| p.to_string()),
        audit_text(method.as_str()),
        audit_text(path),
        reply.status
    );
}

#[async_trait]
impl ServeHttp for AdminApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let peer = session.client_addr().and_then(|a| a.as_inet()).copied();
        let client = peer.map(|a| a.ip());
        let req = session.req_header();
        let method = req.method.clone();
        let path = req.uri.path().to_owned();
        let query = req.uri.query().map(str::to_owned);
        let key = session
            .get_header("x-api-key")
            .map(|v| v.as_bytes().to_vec());
        let write = !is_read(&method);
        if let Some(r) = self.gate(client, key.as_deref()) {
            if write {
                audit(peer, &method, &path, &r);
            } else {
                log::warn!(
                    "admin: {} {} from {}: {} refused",
                    audit_text(method.as_str()),
                    audit_text(&path),
                    client.map_or("?".into(), |c| c.to_string()),
                    r.status
                );
            }
            // The body was not read: do not reuse the connection.
            session.set_keepalive(None);
            return render(&r);
        }
        let body = match read_body(session).await {
            Ok(b) => b,
            Err(r) => {
                if write {
                    audit(peer, &method, &path, &r);
                }
                session.set_keepalive(None);
                return render(&r);
            }
        };
        let reply = self
            .handle(Request {
                method: &method,
                path: &path,
                query: query.as_deref(),
                body: &body,
            })
            .await;
        if write {
            audit(peer, &method, &path, &reply);
        }
        render(&reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_text_cannot_break_a_line() {
        assert_eq!(
            audit_text("/apisix/admin/routes/r1"),
            "/apisix/admin/routes/r1"
        );
        assert_eq!(
            audit_text("/a b\r\n\"x\\%é"),
            "/a%20b%0D%0A%22x%5C%25%C3%A9"
        );
    }
}
