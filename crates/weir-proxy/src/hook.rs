//! The extension point: a [`Hook`] runs in Pingora's phases, named after `ProxyHttp`'s, with
//! access to the request session and a [`HookCtx`]: the matched route (id, merged plugin
//! configuration), its service and upstream, the consumer, and anything a hook keeps in
//! [`HookCtx::extensions_mut`]. The proxy's retry walk and attempts are not part of it.
//!
//! Built-in plugins (key-auth) are hooks; user hooks are registered on the proxy with
//! [`WeirProxy::with_hook`](crate::WeirProxy::with_hook) and run for every routed request, in
//! registration order, after the built-in ones.

use crate::ctx::HookCtx;
use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::Session;

/// A request hook. Every method has a no-op default; implement what you need.
#[async_trait]
pub trait Hook: Send + Sync {
    /// A name for logs.
    fn name(&self) -> &str;

    /// After routing, before the upstream is contacted. Return `Ok(true)` when the hook wrote
    /// a response itself (the request ends there), `Ok(false)` to continue.
    async fn request_filter(&self, _session: &mut Session, _ctx: &mut HookCtx) -> Result<bool> {
        Ok(false)
    }

    /// Change the request sent upstream (called for every attempt).
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        _upstream_request: &mut RequestHeader,
        _ctx: &mut HookCtx,
    ) -> Result<()> {
        Ok(())
    }

    /// Change the response header sent to the client.
    async fn response_filter(
        &self,
        _session: &mut Session,
        _response: &mut ResponseHeader,
        _ctx: &mut HookCtx,
    ) -> Result<()> {
        Ok(())
    }

    /// After the request ended (success or not).
    async fn logging(&self, _session: &mut Session, _error: Option<&Error>, _ctx: &mut HookCtx) {}
}
