//! The `request-id` plugin (APISIX's), a typed [`Plugin`] registered like any other: a request
//! without the configured header gets a new UUID v4; the id is sent upstream and, with
//! `include_in_response`, returned to the client.
//!
//! Responses Weir writes itself before the upstream is reached (a key-auth 401) do not carry
//! it: they are answered before the response phase.

use crate::ctx::HookCtx;
use crate::plugin::Plugin;
use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::Session;
use weir_config::RequestId;

/// The built-in `request-id` plugin.
pub struct RequestIdPlugin;

/// The request's id, kept for the response (and the access log).
#[derive(Debug, Clone)]
pub struct RequestIdValue(pub String);

#[async_trait]
impl Plugin for RequestIdPlugin {
    type Config = RequestId;

    fn name(&self) -> &str {
        "request-id"
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        cfg: &RequestId,
        ctx: &mut HookCtx,
    ) -> Result<bool> {
        let given = session
            .req_header()
            .headers
            .get(cfg.header_name.as_str())
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let id = given.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        ctx.extensions_mut().insert(RequestIdValue(id));
        Ok(false)
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        cfg: &RequestId,
        ctx: &mut HookCtx,
    ) -> Result<()> {
        match ctx.extensions().get::<RequestIdValue>() {
            Some(id) => req.insert_header(cfg.header_name.clone(), id.0.as_str()),
            None => Ok(()),
        }
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        cfg: &RequestId,
        ctx: &mut HookCtx,
    ) -> Result<()> {
        if !cfg.include_in_response {
            return Ok(());
        }
        match ctx.extensions().get::<RequestIdValue>() {
            Some(id) => resp.insert_header(cfg.header_name.clone(), id.0.as_str()),
            None => Ok(()),
        }
    }
}
