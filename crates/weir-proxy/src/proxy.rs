//! [`WeirProxy`]: Pingora's `ProxyHttp` with APISIX upstream semantics — routing, node
//! selection across priority levels, retries with a tried set, timeouts, `pass_host`, pool
//! limits and `X-Weir-Upstream-Status`.

use crate::ctx::RequestCtx;
use crate::drain::Tracker;
use crate::failure::{is_idempotent, is_malformed_response, is_timeout};
use crate::forwarded::forwarded_headers;
use crate::handle::SnapshotHandle;
use crate::hook::Hook;
use crate::key_auth::KeyAuthHook;
use crate::respond::respond_json;
use crate::router::strip_port;
use crate::upstream::sni_for;
use async_trait::async_trait;
use pingora::prelude::*;
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora_error::{ErrorSource, RetryType};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use weir_config::PassHost;

/// A hook and the plugin name that enables it on a route (`None`: every routed request).
struct Registered {
    plugin: Option<String>,
    hook: Arc<dyn Hook>,
}

/// Weir's `ProxyHttp`.
pub struct WeirProxy {
    handle: Arc<SnapshotHandle>,
    /// Built-in plugins first, then user hooks, in registration order.
    hooks: Vec<Registered>,
    /// Requests in progress (and, once served, client connections), for graceful shutdown.
    tracker: Tracker,
}

impl WeirProxy {
    pub fn new(handle: Arc<SnapshotHandle>) -> Self {
        WeirProxy {
            handle,
            hooks: vec![Registered {
                plugin: Some("key-auth".into()),
                hook: Arc::new(KeyAuthHook),
            }],
            tracker: Tracker::default(),
        }
    }

    /// The counts of open client connections and requests in progress.
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// Add a hook that runs for every routed request, after the built-in plugins.
    pub fn with_hook(mut self, hook: Arc<dyn Hook>) -> Self {
        self.hooks.push(Registered { plugin: None, hook });
        self
    }

    /// Register a plugin: `hook` runs only on routes whose `plugins:` (merged with their
    /// service's) name `plugin`; its configuration is in `ctx.route.plugins.other[plugin]`.
    /// Validate configurations with `weir_config::parse_yaml_with_plugins(text, &[plugin])`
    /// so the name is accepted.
    pub fn with_plugin(mut self, plugin: &str, hook: Arc<dyn Hook>) -> Self {
        self.hooks.push(Registered {
            plugin: Some(plugin.to_owned()),
            hook,
        });
        self
    }
}

/// Whether a registered hook applies to the request: global hooks to every routed request,
/// plugins to routes that enable them. Nothing runs for a request without a route.
fn applies(r: &Registered, ctx: &RequestCtx) -> bool {
    match (&r.plugin, &ctx.route) {
        (None, Some(_)) => true,
        (Some(name), Some(route)) => route.plugins.enabled(name),
        (_, None) => false,
    }
}

impl WeirProxy {
    pub fn handle(&self) -> &Arc<SnapshotHandle> {
        &self.handle
    }
}

/// The request's host: `Host`, else the `:authority`, without port.
pub(crate) fn request_host(session: &Session) -> &str {
    let req = session.req_header();
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    strip_port(raw)
}

fn own_error(status: u16, msg: &'static str) -> Box<Error> {
    Error::explain(ErrorType::HTTPStatus(status), msg)
}

#[async_trait]
impl ProxyHttp for WeirProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            _live: Some(self.tracker.request()),
            ..RequestCtx::default()
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let route = {
            let snap = self.handle.current.load();
            let req = session.req_header();
            snap.route(request_host(session), req.uri.path(), &req.method)
                .cloned()
        };
        let Some(route) = route else {
            respond_json(session, 404, r#"{"error_msg":"404 Route Not Found"}"#, None).await?;
            return Ok(true);
        };
        ctx.route = Some(Arc::clone(&route));
        for r in &self.hooks {
            if !applies(r, ctx) {
                continue;
            }
            let hook = &r.hook;
            if hook.request_filter(session, ctx).await? {
                return Ok(true);
            }
        }
        let Some(up) = route.upstream.clone() else {
            respond_json(
                session,
                503,
                r#"{"error_msg":"no upstream for this route"}"#,
                None,
            )
            .await?;
            return Ok(true);
        };
        if up.nodes.is_empty() {
            respond_json(session, 503, r#"{"error_msg":"no available node"}"#, None).await?;
            return Ok(true);
        }
        if let Some(h) = &up.conf.hash_on {
            crate::hash_key::hash_key(session, h, ctx.consumer.as_deref(), &mut ctx.hash_key);
        }
        ctx.timeout = route.timeout.or(up.conf.timeout).unwrap_or_default();
        ctx.max_attempts = up.max_attempts();
        ctx.deadline = up.conf.retry_timeout.map(|d| Instant::now() + d);
        ctx.upstream = Some(up);
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let up = Arc::clone(
            ctx.upstream
                .as_ref()
                .ok_or_else(|| own_error(503, "no upstream"))?,
        );
        let idx = match (ctx.repeat_node, ctx.current) {
            (true, Some(i)) => {
                ctx.repeat_node = false;
                i
            }
            _ => match up.pick(&ctx.hash_key, &mut ctx.walk) {
                Some(i) => {
                    ctx.attempts += 1;
                    i
                }
                None if ctx.attempts == 0 => return Err(own_error(502, "no node can be picked")),
                None => {
                    let status = ctx.failure_status();
                    return Err(own_error(status, "no node left to try"));
                }
            },
        };
        ctx.current = Some(idx);
        ctx.response_started = false;
        ctx.status_retry = false;
        let node = &up.nodes[idx];
        let (busy, busy_now) = up.pool.begin();
        // More than `size` attempts busy: this connection must not go back to the pool.
        // (HTTP/1.1 only: an HTTP/2 connection is shared by streams and is not closed per
        // request; `Connection: close` is not even valid there.)
        ctx.close_conn = !up.conf.scheme.is_grpc() && busy_now > up.conf.keepalive_pool.size as u64;
        ctx.in_flight = Some((node.state.begin(), busy));
        ctx.attempt_start = Some(Instant::now());

        let mut peer = Box::new(node.peer.clone());
        if up.conf.scheme.is_grpc() {
            ctx.h2_epoch = node.h2_epoch.load(Ordering::Relaxed);
            // Golden-ratio mixing keeps generations apart in Pingora's pool key.
            peer.group_key ^= ctx.h2_epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
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
        let t = ctx.timeout;
        peer.options.connection_timeout = Some(t.connect);
        peer.options.total_connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(t.read);
        peer.options.write_timeout = Some(t.send);
        Ok(peer)
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        digest: Option<&Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Every time, not only on new connections: Pingora pools a new HTTP/2 connection
        // before this hook runs, so a later stream may reuse one whose certificate was refused.
        weir_health::tls::check_ip_verified(digest)?;
        let Some(up) = &ctx.upstream else {
            return Ok(());
        };
        let pool = &up.conf.keepalive_pool;
        if up.conf.scheme.is_grpc() {
            // HTTP/2: `requests` counts streams per connection. A connection cannot be closed
            // from here without failing its other streams, so the node's connection generation
            // moves on: later streams open a new connection; this one drains and idles out.
            #[cfg(unix)]
            if let (Some(ts), Some(node)) = (established_ts(digest), ctx.current) {
                let n = up.pool.count_request(fd, ts, reused, pool.idle_timeout);
                if n >= pool.requests {
                    up.pool.forget(fd, ts);
                    let e = ctx.h2_epoch;
                    let _ = up.nodes[node].h2_epoch.compare_exchange(
                        e,
                        e.wrapping_add(1),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
            }
            return Ok(());
        }
        if pool.idle_timeout.is_zero() {
            ctx.close_conn = true;
            return Ok(());
        }
        #[cfg(unix)]
        {
            if let Some(ts) = established_ts(digest) {
                let n = up.pool.count_request(fd, ts, reused, pool.idle_timeout);
                if n >= pool.requests || ctx.close_conn {
                    up.pool.forget(fd, ts);
                    ctx.close_conn = true;
                }
            }
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let (Some(up), Some(idx)) = (&ctx.upstream, ctx.current) else {
            return Ok(());
        };
        let node = &up.nodes[idx];
        match up.host_header(node) {
            Some(h) => req.insert_header(http::header::HOST, h)?,
            None => {
                if req.headers.get(http::header::HOST).is_none() {
                    // HTTP/2 clients send :authority; HTTP/1.1 upstreams need Host.
                    let authority = req.uri.authority().map(|a| a.as_str().to_owned());
                    match authority {
                        Some(a) => req.insert_header(http::header::HOST, a)?,
                        None => {
                            req.insert_header(http::header::HOST, node.node_host_header.as_str())?
                        }
                    }
                }
            }
        }
        forwarded_headers(session, req)?;
        if ctx.close_conn {
            req.insert_header(http::header::CONNECTION, "close")?;
        }
        for r in &self.hooks {
            if !applies(r, ctx) {
                continue;
            }
            let hook = &r.hook;
            hook.upstream_request_filter(session, req, ctx).await?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = resp.status.as_u16();
        if status < 200 {
            return Ok(());
        }
        ctx.statuses.push(status);
        if let Some(up) = &ctx.upstream {
            if up.conf.retry_on_status.contains(&status)
                && is_idempotent(&session.req_header().method)
                && !session.as_ref().retry_buffer_truncated()
                && ctx.may_retry()
            {
                ctx.status_retry = true;
                ctx.report_status(status);
                ctx.attempt_answered(true);
                ctx.in_flight = None;
                let mut e = Error::explain(ErrorType::HTTPStatus(status), "retry_on_status");
                e.set_retry(true);
                return Err(e);
            }
        }
        ctx.attempt_answered(false);
        ctx.response_started = true;
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(v) = ctx.upstream_status_header() {
            resp.insert_header("X-Weir-Upstream-Status", v)?;
        }
        for r in &self.hooks {
            if !applies(r, ctx) {
                continue;
            }
            let hook = &r.hook;
            hook.response_filter(session, resp, ctx).await?;
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        connect_failure(ctx, peer, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if ctx.status_retry {
            // The response was discarded by retry_on_status; the decision is already made.
            ctx.status_retry = false;
            e.set_retry(true);
            return e;
        }
        if ctx.response_started || *e.esource() == ErrorSource::Downstream {
            // The response is being relayed (or the client went away): never retried.
            ctx.in_flight = None;
            e.set_retry(false);
            return e;
        }
        if *e.etype() == ErrorType::InvalidCert {
            // The certificate was rejected right after the handshake, before anything was
            // sent: a connect failure.
            return connect_failure(ctx, peer, e);
        }
        let idempotent = is_idempotent(&session.req_header().method);
        let truncated = session.as_ref().retry_buffer_truncated();
        let timed_out = is_timeout(&e);
        // A pooled connection that died before any response byte: one free retry on the
        // same node, not counted as an attempt.
        if client_reused
            && matches!(e.retry, RetryType::ReusedOnly)
            && idempotent
            && !truncated
            && !ctx.stale_retry_used
        {
            ctx.stale_retry_used = true;
            ctx.repeat_node = true;
            ctx.in_flight = None;
            e.set_retry(true);
            return e;
        }
        ctx.attempt_failed(timed_out);
        let retry = idempotent && !truncated && !is_malformed_response(&e) && ctx.may_retry();
        if retry {
            ctx.report_transport(&e);
        }
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(c) if *c >= 400 => *c,
            _ => match e.esource() {
                ErrorSource::Upstream => ctx.failure_status(),
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                _ if ctx.attempts > 0 => ctx.failure_status(),
                _ => 500,
            },
        };
        ctx.in_flight = None;
        if code > 0 && session.response_written().is_none() {
            // Pingora closes the client connection after a failed proxy attempt: say so.
            session.as_downstream_mut().set_keepalive(None);
            let body = match code {
                502 => r#"{"error_msg":"502 Bad Gateway"}"#,
                503 => r#"{"error_msg":"503 Service Unavailable"}"#,
                504 => r#"{"error_msg":"504 Gateway Timeout"}"#,
                400 => r#"{"error_msg":"400 Bad Request"}"#,
                _ => r#"{"error_msg":"internal error"}"#,
            };
            let status_list = ctx.upstream_status_header();
            if let Err(we) = respond_json(session, code, body, status_list.as_deref()).await {
                log::debug!("cannot send error response: {we}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        // A client that went away is not an error of the proxy.
        *e.esource() == ErrorSource::Downstream
            && matches!(
                e.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            )
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        ctx.in_flight = None;
        if let Some(resp) = session.response_written() {
            ctx.report_final(resp.status.as_u16());
        }
        for r in &self.hooks {
            if !applies(r, ctx) {
                continue;
            }
            let hook = &r.hook;
            hook.logging(session, e, ctx).await;
        }
    }
}

/// When the connection of `digest` was established: with its fd, the connection's identity.
fn established_ts(digest: Option<&Digest>) -> Option<std::time::SystemTime> {
    digest
        .and_then(|d| d.timing_digest.first())
        .and_then(|t| t.as_ref())
        .map(|t| t.established_ts)
}

/// A failed connect (TCP, TLS handshake, certificate): nothing was sent, so every method may
/// go to the next node; a retried failure is reported passively.
fn connect_failure(ctx: &mut RequestCtx, peer: &HttpPeer, mut e: Box<Error>) -> Box<Error> {
    if *e.etype() == ErrorType::InvalidCert {
        log_rejected_certificate(ctx, peer, &e);
    }
    ctx.attempt_failed(is_timeout(&e));
    let retry = ctx.may_retry();
    if retry {
        ctx.report_transport(&e);
    }
    e.set_retry(retry);
    e
}

/// Say why a certificate was refused in the operator's terms: what it had to chain to and
/// which name or IP it had to carry. OpenSSL's own message only says "verify failed".
fn log_rejected_certificate(ctx: &RequestCtx, peer: &HttpPeer, e: &Error) {
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
