//! Responses Weir produces itself: JSON bodies `{"error_msg": ...}` (SEMANTICS.md §1.5).

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
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    for (k, v) in headers {
        resp.insert_header(*k, *v)?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
        .await
}
