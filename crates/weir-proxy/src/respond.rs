//! Responses Weir produces itself: JSON bodies `{"error_msg": ...}` (docs/configuration.md).
//!
//! gRPC requests get the same status with an empty body: a gRPC client reads a body as gRPC
//! messages, and with no body and no `grpc-status` it maps the HTTP status (502, 503, 504 to
//! `UNAVAILABLE`, 404 to `UNIMPLEMENTED`, 401 to `UNAUTHENTICATED`). Weir never synthesises
//! `grpc-status` (docs/grpc.md).

use bytes::Bytes;
use pingora::prelude::*;
use pingora::proxy::Session;

/// Write a complete JSON response. `upstream_status` adds `X-Weir-Upstream-Status`.
pub async fn respond_json(
    session: &mut Session,
    status: u16,
    body: &'static str,
    upstream_status: Option<&str>,
) -> Result<()> {
    match upstream_status {
        Some(s) => respond_json_with(session, status, body, &[("X-Weir-Upstream-Status", s)]).await,
        None => respond_json_with(session, status, body, &[]).await,
    }
}

/// Write a complete JSON response with extra headers.
pub async fn respond_json_with(
    session: &mut Session,
    status: u16,
    body: &'static str,
    headers: &[(&'static str, &str)],
) -> Result<()> {
    let body = if is_grpc(session) { "" } else { body };
    let mut resp = ResponseHeader::build(status, Some(4))?;
    if !body.is_empty() {
        resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    }
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    for (k, v) in headers {
        resp.insert_header(*k, *v)?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    // Pingora's `Session::write_response_header` does not end an HTTP/2 stream; the body write
    // (empty or not) carries the end.
    session
        .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
        .await?;
    Ok(())
}

/// A gRPC request: `content-type: application/grpc` (or `application/grpc+proto`, ...).
fn is_grpc(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
