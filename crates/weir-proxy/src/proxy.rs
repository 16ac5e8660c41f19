//! [`WeirProxy`]: Pingora's `ProxyHttp` with APISIX upstream semantics — routing, node
//! selection across priority levels, retries with a tried set, timeouts, `pass_host`, pool
//! limits and `X-Weir-Upstream-Status`.

use crate::attempt::{report_final, Attempt, End};
use crate::ctx::{HookCtx, Phase, RequestCtx};
use crate::drain::Tracker;
use crate::failure::{exchange_outcome, is_idempotent, is_timeout};
use crate::forwarded::forwarded_headers;
use crate::handle::SnapshotHandle;
use crate::hook::Hook;
use crate::key_auth::KeyAuthPlugin;
use crate::metrics::{count_request, Fail};
use crate::peer::{established_ts, log_rejected_certificate, peer_for};
use crate::plugin::{Plugin, PluginHook};
use crate::request_id::RequestIdPlugin;
use crate::resilience::{
    count_overflow, fail_status, respond_overloaded, retry_permit, OVERLOADED,
};
use crate::respond::{respond_json, respond_json_with};
use crate::retry::{self, Attempted, Decision, Outcome};
use crate::router::strip_port;
use async_trait::async_trait;
use pingora::prelude::*;
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora_error::ErrorSource;
use smallvec::SmallVec;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use weir_accesslog::AccessLog;

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
    /// Where finished requests are logged (`server.access_log`).
    access_log: Option<Arc<AccessLog>>,
    /// Idle upstream connections are pooled per worker thread (`server.work_stealing: false`).
    per_worker_pools: bool,
    /// `server`'s client limits (crate::downstream).
    downstream: Arc<crate::downstream::Limits>,
}

impl WeirProxy {
    pub fn new(handle: Arc<SnapshotHandle>) -> Self {
        WeirProxy {
            handle,
            // The built-in plugins, first; their configuration types are registered in every
            // handle's parsers from the start.
            // request-id before key-auth, as in APISIX (its priority is higher).
            hooks: vec![
                Registered {
                    plugin: Some("request-id".into()),
                    hook: Arc::new(PluginHook(RequestIdPlugin)),
                },
                Registered {
                    plugin: Some("key-auth".into()),
                    hook: Arc::new(PluginHook(KeyAuthPlugin)),
                },
            ],
            tracker: Tracker::default(),
            access_log: None,
            per_worker_pools: false,
            downstream: Arc::default(),
        }
    }

    /// Apply `limits` to every request (the server wiring sets `server`'s).
    pub fn with_downstream_limits(mut self, limits: Arc<crate::downstream::Limits>) -> Self {
        self.downstream = limits;
        self
    }

    /// Pool idle upstream connections per worker thread: needed when every worker runs its own
    /// runtime (Pingora without work stealing), where a connection can only be used on the
    /// runtime that made it. The server wiring sets it from `server.work_stealing: false`.
    pub fn with_per_worker_pools(mut self) -> Self {
        self.per_worker_pools = true;
        self
    }

    /// Log every finished request to `log` (what `server.access_log` configures; the server
    /// wiring starts it).
    pub fn with_access_log(mut self, log: Arc<AccessLog>) -> Self {
        self.access_log = Some(log);
        self
    }

    /// The access log, if one is attached.
    pub fn access_log(&self) -> Option<&Arc<AccessLog>> {
        self.access_log.as_ref()
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
    /// service's) name `plugin`; its configuration is [`HookCtx::plugin_config`]`(plugin)`.
    /// Validate configurations with `weir_config::parse_yaml_with_plugins(text, &[plugin])`
    /// so the name is accepted.
    pub fn with_plugin(mut self, plugin: &str, hook: Arc<dyn Hook>) -> Self {
        self.hooks.push(Registered {
            plugin: Some(plugin.to_owned()),
            hook,
        });
        self
    }

    /// Run the typed `plugin` on routes whose `plugins:` enable it, with each route's parsed
    /// configuration (see [`crate::plugin`]). Its configuration type is registered with this
    /// proxy's handle, which recompiles so the running snapshot has it. Validate
    /// configurations with [`Plugin::extension`] merged into your `Extensions`.
    pub fn with_typed_plugin<P: Plugin>(self, plugin: P) -> Self {
        let name = plugin.name().to_owned();
        self.handle.tables().plugins.register::<P::Config>(&name);
        self.handle.refresh();
        self.with_plugin(&name, Arc::new(PluginHook(plugin)))
    }
}

/// Whether a registered hook applies to the request: global hooks to every routed request,
/// plugins to routes that enable them. Nothing runs for a request without a route.
fn applies(r: &Registered, ctx: &HookCtx) -> bool {
    match (&r.plugin, ctx.route()) {
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

    /// No downstream modules. Pingora's default adds a response compression module at level 0
    /// (disabled), which still costs a module context per request and a call on every
    /// response header and body chunk (about 1.7k instructions per request, 2%). Weir does
    /// not compress responses.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            _live: Some(self.tracker.request()),
            start: Some(Instant::now()),
            ..RequestCtx::default()
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if crate::downstream::on_request(&self.downstream, session).await? {
            return Ok(true);
        }
        if let Err(r) = crate::request_guard::check(session.req_header()) {
            log::debug!("refused request: {}", r.reason);
            session.set_keepalive(None);
            respond_json(
                session,
                r.status,
                r#"{"error_msg":"400 Bad Request"}"#,
                None,
            )
            .await?;
            return Ok(true);
        }
        self.handle.tables().resilience.mark_traffic();
        let route = {
            let snap = self.handle.current.load();
            let req = session.req_header();
            snap.route_pair(request_host(session), req.uri.path(), &req.method)
                .map(|(r, pair)| (Arc::clone(r), pair))
        };
        let Some((route, pair)) = route else {
            respond_json(session, 404, r#"{"error_msg":"404 Route Not Found"}"#, None).await?;
            return Ok(true);
        };
        ctx.hook.set_route(Arc::clone(&route), pair);
        for r in &self.hooks {
            if !applies(r, &ctx.hook) {
                continue;
            }
            if r.hook.request_filter(session, &mut ctx.hook).await? {
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
        if let Some((params, limits)) = &up.resilience.limits {
            // Overflow answers attempt nothing and report nothing to health.
            let refused = match limits.try_request(params) {
                Ok(permit) => {
                    ctx.permit = Some(permit);
                    up.all_full()
                        .then_some(weir_resilience::Overflow::MaxRequestsPerNode)
                }
                Err(o) => Some(o),
            };
            if let Some(o) = refused {
                ctx.permit = None;
                count_overflow(&up, o);
                respond_overloaded(session, o).await?;
                return Ok(true);
            }
        }
        if let Some(h) = &up.conf.hash_on {
            crate::hash_key::hash_key(session, h, ctx.hook.consumer(), &mut ctx.hash_key);
        }
        ctx.timeout = route.timeout.or(up.conf.timeout).unwrap_or_default();
        ctx.tries.max_attempts = up.max_attempts();
        ctx.tries.deadline = up.conf.retry_timeout.map(|d| Instant::now() + d);
        ctx.upstream = Some(up);
        Ok(false)
    }

    /// Pick the attempt's node (or repeat the node after a stale pooled connection) and start
    /// the `Attempt` that holds its in-flight counts until it ends.
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
        let tries = &mut ctx.tries;
        let idx = match std::mem::take(&mut tries.phase) {
            // The free retry after a stale pooled connection: the same node, not an attempt.
            Phase::Repeat(i) => i,
            _ => match up.pick(&ctx.hash_key, &mut tries.walk) {
                Some(i) => {
                    tries.attempts += 1;
                    i
                }
                None if tries.attempts == 0 && up.all_full() => {
                    let o = weir_resilience::Overflow::MaxRequestsPerNode;
                    count_overflow(&up, o);
                    tries.overflow = Some(o);
                    return Err(own_error(503, "every node is full"));
                }
                None if tries.attempts == 0 => return Err(own_error(502, "no node can be picked")),
                None => {
                    let status = tries.failure_status();
                    return Err(own_error(status, "no node left to try"));
                }
            },
        };
        let attempt = Attempt::begin(up, idx);
        let peer = peer_for(session, ctx.timeout, &attempt, self.per_worker_pools);
        tries.start(attempt);
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
        let (Some(up), Some(attempt)) = (&ctx.upstream, ctx.tries.waiting()) else {
            return Ok(());
        };
        attempt.reused = reused;
        if let Some(m) = &up.nodes[attempt.node()].metrics {
            m.connections[usize::from(reused)].fetch_add(1, Ordering::Relaxed);
        }
        let pool = &up.conf.keepalive_pool;
        if up.conf.scheme.is_grpc() {
            // HTTP/2: `requests` counts streams per connection. A connection cannot be closed
            // from here without failing its other streams, so the node's connection generation
            // moves on: later streams open a new connection; this one drains and idles out.
            #[cfg(unix)]
            if let Some(ts) = established_ts(digest) {
                let n = up.pool.count_request(fd, ts, reused, pool.idle_timeout);
                if n >= pool.requests {
                    up.pool.forget(fd, ts);
                    let e = attempt.h2_epoch;
                    let _ = up.nodes[attempt.node()].h2_epoch.compare_exchange(
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
            attempt.close_conn = true;
            return Ok(());
        }
        #[cfg(unix)]
        {
            if let Some(ts) = established_ts(digest) {
                let n = up.pool.count_request(fd, ts, reused, pool.idle_timeout);
                if n >= pool.requests || attempt.close_conn {
                    up.pool.forget(fd, ts);
                    attempt.close_conn = true;
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
        let (Some(up), Some(attempt)) = (&ctx.upstream, ctx.tries.waiting()) else {
            return Ok(());
        };
        let close_conn = attempt.close_conn;
        let node = &up.nodes[attempt.node()];
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
        if close_conn {
            req.insert_header(http::header::CONNECTION, "close")?;
        }
        for r in &self.hooks {
            if !applies(r, &ctx.hook) {
                continue;
            }
            r.hook
                .upstream_request_filter(session, req, &mut ctx.hook)
                .await?;
        }
        Ok(())
    }

    /// The attempt's response header: relay it, or discard it for a retry (`retry_on_status`;
    /// Pingora then closes its connection and calls `error_while_proxy`, which passes the
    /// decision on).
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
        let RequestCtx {
            upstream, tries, ..
        } = ctx;
        let Some(up) = upstream.as_deref() else {
            return Ok(());
        };
        let attempt = match std::mem::take(&mut tries.phase) {
            Phase::Waiting(a) => a,
            other => {
                tries.phase = other;
                return Ok(());
            }
        };
        let facts = Attempted {
            outcome: Outcome::Status(status),
            reused: attempt.reused,
            request_written: true,
            idempotent: is_idempotent(&session.req_header().method),
            body_replayable: !session.as_ref().retry_buffer_truncated(),
            retry_on_status: &up.conf.retry_on_status,
            stale_retry_used: tries.stale_retry_used,
        };
        let mut decision = retry::decide(&facts, || tries.budget(up));
        let mut permit = None;
        if decision == Decision::Retry {
            permit = retry_permit(up, tries);
            if permit.is_none() {
                // The retry budget refuses the retry: this response is the answer.
                decision = Decision::Relay;
            }
        }
        match decision {
            Decision::Retry => {
                if let Some(m) = &up.metrics {
                    m.retries.fetch_add(1, Ordering::Relaxed);
                }
                tries.finish(attempt, End::Discarded(status));
                tries.retry_permit = permit.flatten();
                tries.phase = Phase::Discarded;
                let mut e = Error::explain(ErrorType::HTTPStatus(status), "retry_on_status");
                e.set_retry(true);
                Err(e)
            }
            d => {
                debug_assert_eq!(d, Decision::Relay);
                tries.relay(attempt, status);
                Ok(())
            }
        }
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(v) = ctx.tries.upstream_status_header() {
            resp.insert_header("X-Weir-Upstream-Status", v)?;
        }
        if let Some(o) = ctx.tries.overflow {
            resp.insert_header("X-Weir-Overflow", o.as_str())?;
        }
        for r in &self.hooks {
            if !applies(r, &ctx.hook) {
                continue;
            }
            r.hook.response_filter(session, resp, &mut ctx.hook).await?;
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        crate::downstream::on_body(&self.downstream, session)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Phase::Waiting(attempt) = std::mem::take(&mut ctx.tries.phase) else {
            // No attempt under way (cannot happen): nothing to decide.
            e.set_retry(false);
            return e;
        };
        let outcome = Outcome::Connect {
            timed_out: is_timeout(&e),
        };
        settle(ctx, session, peer, attempt, outcome, false, e)
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
        let (attempt, outcome) = match std::mem::take(&mut ctx.tries.phase) {
            Phase::Discarded => {
                // upstream_response_filter discarded the response: the retry is decided.
                e.set_retry(true);
                return e;
            }
            Phase::Relaying(attempt) => (attempt, Outcome::AfterHeader),
            Phase::Waiting(attempt) if *e.esource() == ErrorSource::Downstream => {
                // The client went away, or its request failed: not the node's doing and not
                // retried. The attempt is dropped without an outcome (counts released only).
                drop(attempt);
                e.set_retry(false);
                return e;
            }
            Phase::Waiting(attempt) => {
                let outcome = exchange_outcome(&e);
                (attempt, outcome)
            }
            Phase::Idle | Phase::Repeat(_) => {
                // No attempt under way (cannot happen): nothing to decide.
                e.set_retry(false);
                return e;
            }
        };
        settle(ctx, session, peer, attempt, outcome, client_reused, e)
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
                ErrorSource::Upstream => ctx.tries.failure_status(),
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    // client_body_timeout (nginx answers 408 too).
                    ErrorType::ReadTimedout => 408,
                    ErrorType::WriteTimedout => 0,
                    _ => 400,
                },
                _ if ctx.tries.attempts > 0 => ctx.tries.failure_status(),
                _ => 500,
            },
        };
        ctx.tries.release();
        if code > 0 && session.response_written().is_none() {
            // Pingora closes the client connection after a failed proxy attempt: say so.
            session.as_downstream_mut().set_keepalive(None);
            let overflow = ctx.tries.overflow;
            let body = match code {
                503 if overflow.is_some() && ctx.tries.attempts == 0 => OVERLOADED,
                502 => r#"{"error_msg":"502 Bad Gateway"}"#,
                503 => r#"{"error_msg":"503 Service Unavailable"}"#,
                504 => r#"{"error_msg":"504 Gateway Timeout"}"#,
                400 => r#"{"error_msg":"400 Bad Request"}"#,
                408 => r#"{"error_msg":"408 Request Timeout"}"#,
                413 => r#"{"error_msg":"413 Request Entity Too Large"}"#,
                _ => r#"{"error_msg":"internal error"}"#,
            };
            let status_list = ctx.tries.upstream_status_header();
            let mut headers: SmallVec<[(&'static str, &str); 2]> = SmallVec::new();
            if let Some(s) = status_list.as_deref() {
                headers.push(("X-Weir-Upstream-Status", s));
            }
            if let Some(o) = overflow {
                headers.push(("X-Weir-Overflow", o.as_str()));
            }
            if let Err(we) = respond_json_with(session, code, body, &headers).await {
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
        // The relayed response has ended: the attempt's counts are released, and the
        // request's places under the upstream's limits (Pingora drops the context only after
        // draining an unread request body).
        ctx.tries.release();
        ctx.permit = None;
        ctx.tries.retry_permit = None;
        if let Some(e) = e {
            crate::downstream::on_error(&self.downstream, e);
        }
        let metrics = &self.handle.tables().metrics;
        if metrics.enabled() {
            count_request(metrics, session, ctx);
        }
        if let Some(log) = &self.access_log {
            log.log(&crate::access_log::Finished::new(session, ctx));
        }
        if let (Some(resp), Some(up), Some(node)) = (
            session.response_written(),
            &ctx.upstream,
            ctx.tries.last_node,
        ) {
            if ctx.tries.attempts > 0 {
                report_final(up, node, resp.status.as_u16());
            }
        }
        for r in &self.hooks {
            if !applies(r, &ctx.hook) {
                continue;
            }
            r.hook.logging(session, e, &mut ctx.hook).await;
        }
    }
}

/// Decide what follows the attempt that ended as `outcome` says, and apply it: the attempt's
/// feedback ([`Tries::finish`]), the retry mark Pingora acts on, and for a stale pooled
/// connection the node to repeat.
fn settle(
    ctx: &mut RequestCtx,
    session: &Session,
    peer: &HttpPeer,
    attempt: Attempt,
    outcome: Outcome,
    reused: bool,
    mut e: Box<Error>,
) -> Box<Error> {
    if *e.etype() == ErrorType::InvalidCert {
        log_rejected_certificate(ctx, peer, &e);
    }
    let RequestCtx {
        upstream, tries, ..
    } = ctx;
    let Some(up) = upstream.as_deref() else {
        e.set_retry(false);
        return e;
    };
    let facts = Attempted {
        outcome,
        reused,
        request_written: !matches!(outcome, Outcome::Connect { .. }),
        idempotent: is_idempotent(&session.req_header().method),
        body_replayable: !session.as_ref().retry_buffer_truncated(),
        retry_on_status: &up.conf.retry_on_status,
        stale_retry_used: tries.stale_retry_used,
    };
    let decision = retry::decide(&facts, || tries.budget(up));
    let fail = Fail::of(
        &e,
        outcome.timed_out(),
        matches!(outcome, Outcome::Connect { .. }),
    );
    let mut decision = decision;
    let mut permit = None;
    if decision == Decision::Retry {
        permit = retry_permit(up, tries);
        if permit.is_none() {
            // The retry budget refuses the retry: this attempt's failure is the answer.
            decision = Decision::Fail(fail_status(fail));
        }
    }
    match decision {
        Decision::Retry => {
            if let Some(m) = &up.metrics {
                m.retries.fetch_add(1, Ordering::Relaxed);
            }
            tries.finish(
                attempt,
                End::Failed {
                    fail,
                    retried: true,
                },
            );
            tries.retry_permit = permit.flatten();
        }
        Decision::RetryStaleSameNode => {
            tries.stale_retry_used = true;
            tries.phase = Phase::Repeat(attempt.node());
            tries.finish(attempt, End::Stale);
        }
        Decision::Fail(status) => {
            tries.finish(
                attempt,
                End::Failed {
                    fail,
                    retried: false,
                },
            );
            // fail_to_proxy answers the request's failure status: this one.
            debug_assert_eq!(status, tries.failure_status());
        }
        // After the response header: its feedback was given when it was relayed.
        Decision::Relay => drop(attempt),
    }
    e.set_retry(matches!(
        decision,
        Decision::Retry | Decision::RetryStaleSameNode
    ));
    e
}
