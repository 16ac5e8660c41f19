//! Per-request state carried across Pingora's phases and retry attempts: [`HookCtx`], what hooks
//! see, and the rest of [`RequestCtx`] — the retry walk and the current attempt — which only
//! the proxy touches.

use crate::attempt::{Attempt, End};
use crate::retry::Budget;
use crate::snapshot::RouteRuntime;
use crate::upstream::{UpstreamRuntime, Walk};
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::Instant;
use weir_config::{Plugins, Timeout};

/// What a [`Hook`](crate::Hook) sees of a request: the matched route (its id and merged plugin
/// configuration), its service and upstream, the consumer, and the hook's own per-request
/// state. Headers are read and changed through the `Session` and header arguments of the hook
/// methods. The retry walk and the attempt in flight are out of reach.
#[derive(Debug, Default)]
pub struct HookCtx {
    route: Option<Arc<RouteRuntime>>,
    /// Which (host, uri) pair of the route matched (metrics' `matched_uri`, `matched_host`).
    pub(crate) pair: usize,
    consumer: Option<Arc<str>>,
    /// The consumer's metric number, when key-auth set it.
    pub(crate) consumer_id: Option<u32>,
    extensions: http::Extensions,
}

impl HookCtx {
    /// The matched route's id. Hooks run only for routed requests: always `Some` there.
    pub fn route_id(&self) -> Option<&str> {
        self.route.as_ref().map(|r| r.id.as_str())
    }

    /// The id of the route's service, if it has one.
    pub fn service_id(&self) -> Option<&str> {
        self.route.as_ref()?.service_id.as_ref().map(|s| s.as_str())
    }

    /// The key of the route's upstream (`upstreams/<id>`, or `routes/<id>` / `services/<id>`
    /// for an inline upstream), if it has one.
    pub fn upstream_key(&self) -> Option<&str> {
        self.route
            .as_ref()?
            .upstream
            .as_ref()
            .map(|u| u.key.as_str())
    }

    /// The route's plugins, merged over its service's (the route winning).
    pub fn plugins(&self) -> Option<&Plugins> {
        self.route.as_ref().map(|r| &r.plugins)
    }

    /// The configuration of the embedder's plugin `name` on this route, as written.
    pub fn plugin_config(&self, name: &str) -> Option<&serde_json::Value> {
        self.plugins()?.other.get(name)
    }

    /// The parsed configuration of the typed plugin `name` on this route (see
    /// [`Plugin`](crate::plugin::Plugin)): parsed when the configuration loaded, shared, no
    /// allocation here.
    pub fn plugin<T: Send + Sync + 'static>(&self, name: &str) -> Option<Arc<T>> {
        self.route.as_ref()?.typed.get::<T>(name)
    }

    /// The authenticated consumer's username.
    pub fn consumer(&self) -> Option<&str> {
        self.consumer.as_deref()
    }

    /// Make `consumer` the request's consumer (what an authentication hook does): `chash`
    /// with `hash_on: consumer` hashes it, later hooks see it.
    pub fn set_consumer(&mut self, consumer: Arc<str>) {
        self.consumer = Some(consumer);
        self.consumer_id = None;
    }

    pub(crate) fn consumer_arc(&self) -> Option<&Arc<str>> {
        self.consumer.as_ref()
    }

    /// Per-request state of hooks (allocates only when something is inserted).
    pub fn extensions(&self) -> &http::Extensions {
        &self.extensions
    }

    pub fn extensions_mut(&mut self) -> &mut http::Extensions {
        &mut self.extensions
    }

    /// The matched route itself, for the built-in plugins (key-auth's consumer index).
    pub(crate) fn route(&self) -> Option<&Arc<RouteRuntime>> {
        self.route.as_ref()
    }

    pub(crate) fn set_route(&mut self, route: Arc<RouteRuntime>, pair: usize) {
        self.route = Some(route);
        self.pair = pair;
    }
}

/// Where the request's current attempt is.
#[derive(Debug, Default)]
pub(crate) enum Phase {
    /// No attempt under way: before the first, or after one that ended.
    #[default]
    Idle,
    /// An attempt waits for its response header.
    Waiting(Attempt),
    /// The attempt's response header was relayed; its body is under way.
    Relaying(Attempt),
    /// `upstream_response_filter` discarded a `retry_on_status` response: the retry is decided
    /// and `error_while_proxy` passes it on.
    Discarded,
    /// A stale pooled connection: the next attempt repeats this node.
    Repeat(usize),
}

/// The retry walk of one request (docs/data-path.md, "Retries").
#[derive(Debug, Default)]
pub(crate) struct Tries {
    /// Level and tried set of the node walk.
    pub walk: Walk,
    /// Attempts made (a free stale-connection retry is not one).
    pub attempts: u32,
    pub max_attempts: u32,
    pub deadline: Option<Instant>,
    pub phase: Phase,
    /// Node of the last attempt (the final health report goes there).
    pub last_node: Option<usize>,
    /// Status of every attempt, in order (`X-Weir-Upstream-Status`); 502/504 for attempts
    /// without a response.
    pub statuses: SmallVec<[u16; 4]>,
    /// The last attempt that ended without a response timed out.
    pub last_timed_out: bool,
    /// The one free retry on a stale pooled connection was used.
    pub stale_retry_used: bool,
    /// Every attempt that ended, in order (the access log's `$upstream_*` lists).
    pub log: SmallVec<[AttemptLog; 2]>,
    /// The relayed attempt's time to its response header (`http_latency{type="upstream"}`).
    pub upstream_time: Option<std::time::Duration>,
    /// The retry in flight holds its place under `max_retries` or the retry budget.
    pub retry_permit: Option<weir_resilience::RetryPermit>,
    /// A limit refused this request (`X-Weir-Overflow`).
    pub overflow: Option<weir_resilience::Overflow>,
}

/// One ended attempt, as the access log shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptLog {
    /// Index of the node in the request's upstream.
    pub node: u32,
    /// Its status: the response's, or 502/504 for an attempt without one.
    pub status: u16,
    /// From the attempt's start to its response header or failure.
    pub elapsed: std::time::Duration,
}

impl Tries {
    /// The attempt waiting for its response header.
    pub fn waiting(&mut self) -> Option<&mut Attempt> {
        match &mut self.phase {
            Phase::Waiting(a) => Some(a),
            _ => None,
        }
    }

    /// `attempt` is under way (a previous attempt still held is dropped).
    pub fn start(&mut self, attempt: Attempt) {
        self.last_node = Some(attempt.node());
        self.phase = Phase::Waiting(attempt);
    }

    /// Drop the attempt held, if any: the request is over (the counts of a relayed response
    /// are released; an attempt without an outcome is abandoned).
    pub fn release(&mut self) {
        if matches!(self.phase, Phase::Waiting(_) | Phase::Relaying(_)) {
            self.phase = Phase::Idle;
        }
    }

    /// End `attempt` as `end` says: its feedback, and its entry in `X-Weir-Upstream-Status`.
    pub fn finish(&mut self, attempt: Attempt, end: End) {
        self.note(end, &attempt);
        attempt.finish(end);
        // The attempt a retry permit was taken for has ended (a stale connection's free
        // repeat is the same attempt: it keeps the permit).
        if end != End::Stale {
            self.retry_permit = None;
        }
    }

    /// `attempt`'s response header is relayed: record it, and hold the attempt until the
    /// request ends.
    pub fn relay(&mut self, mut attempt: Attempt, status: u16) {
        self.note(End::Relayed(status), &attempt);
        self.upstream_time = Some(attempt.elapsed());
        self.retry_permit = None;
        attempt.relaying(status);
        self.phase = Phase::Relaying(attempt);
    }

    fn note(&mut self, end: End, attempt: &Attempt) {
        if let Some(s) = end.status() {
            self.statuses.push(s);
            self.log.push(AttemptLog {
                node: attempt.node() as u32,
                status: s,
                elapsed: attempt.elapsed(),
            });
        }
        if let End::Failed { fail, .. } = end {
            self.last_timed_out = fail.timed_out();
        }
    }

    /// What the upstream's policy still allows. Reads the clock when there is a deadline.
    pub fn budget(&self, up: &UpstreamRuntime) -> Budget {
        Budget {
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            deadline_passed: self.deadline.is_some_and(|d| Instant::now() > d),
            candidate: up.has_candidate(&self.walk),
        }
    }

    /// Status for a request that ended without a relayed response after attempts.
    pub fn failure_status(&self) -> u16 {
        if self.last_timed_out {
            504
        } else {
            502
        }
    }

    /// `X-Weir-Upstream-Status` value, when the last attempt's status is 5xx.
    pub fn upstream_status_header(&self) -> Option<String> {
        let last = *self.statuses.last()?;
        if last < 500 {
            return None;
        }
        let mut s = String::with_capacity(self.statuses.len() * 5);
        for (i, st) in self.statuses.iter().enumerate() {
            if i > 0 {
                s.push_str(", ");
            }
            push_status(&mut s, *st);
        }
        Some(s)
    }
}

/// Append a status code's decimal digits (no formatting machinery, no temporary string).
fn push_status(s: &mut String, status: u16) {
    let mut digits = [0u8; 5];
    let mut n = status;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        s.push(d as char);
    }
}

/// Weir's request context (Pingora's `CTX`). Creating it allocates nothing.
///
/// Hooks get its [`HookCtx`]; everything else is the proxy's own.
#[derive(Debug, Default)]
pub struct RequestCtx {
    pub(crate) hook: HookCtx,
    pub(crate) upstream: Option<Arc<UpstreamRuntime>>,
    pub(crate) timeout: Timeout,
    /// chash key, computed once per request (retries hash the same key).
    pub(crate) hash_key: Vec<u8>,
    pub(crate) tries: Tries,
    /// Counts this request as in progress for a graceful shutdown (see [`crate::drain`]).
    pub(crate) _live: Option<crate::drain::LiveRequest>,
    /// When the request's header had been read (`$request_time`, `http_latency`).
    pub(crate) start: Option<Instant>,
    /// The request's place under the upstream's `max_requests`.
    pub(crate) permit: Option<weir_resilience::RequestPermit>,
}

impl RequestCtx {
    /// What hooks see.
    pub fn hook_ctx(&self) -> &HookCtx {
        &self.hook
    }

    /// The matched route's id.
    pub fn route_id(&self) -> Option<&str> {
        self.hook.route_id()
    }

    /// The id of the route's service.
    pub fn service_id(&self) -> Option<&str> {
        self.hook.service_id()
    }

    /// The key of the route's upstream.
    pub fn upstream_key(&self) -> Option<&str> {
        self.hook.upstream_key()
    }

    /// The authenticated consumer's username.
    pub fn consumer(&self) -> Option<&str> {
        self.hook.consumer()
    }

    /// Hooks' per-request state.
    pub fn extensions(&self) -> &http::Extensions {
        self.hook.extensions()
    }

    /// Attempts made so far (a free retry on a stale pooled connection is not one).
    pub fn attempts(&self) -> u32 {
        self.tries.attempts
    }

    /// Status of every attempt so far, in order; 502/504 for attempts without a response.
    pub fn upstream_statuses(&self) -> &[u16] {
        &self.tries.statuses
    }

    /// Every attempt that ended, in order.
    pub fn attempt_log(&self) -> &[AttemptLog] {
        &self.tries.log
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_list() {
        let mut t = Tries::default();
        assert_eq!(t.upstream_status_header(), None);
        t.statuses.extend([504, 502, 503]);
        assert_eq!(t.upstream_status_header().as_deref(), Some("504, 502, 503"));
        t.statuses.push(200);
        assert_eq!(t.upstream_status_header(), None);
        let mut s = String::new();
        for st in [0, 7, 42, 100, 599, 65535] {
            s.clear();
            push_status(&mut s, st);
            assert_eq!(s, st.to_string());
        }
    }
}
