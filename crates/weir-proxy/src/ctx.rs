//! Per-request state carried across Pingora's phases and retry attempts.

use crate::pool::Busy;
use crate::snapshot::RouteRuntime;
use crate::upstream::{UpstreamRuntime, Walk};
use smallvec::SmallVec;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_balance::InFlight;
use weir_config::{LbType, Timeout};

/// Weir's request context (Pingora's `CTX`). Creating it allocates nothing.
#[derive(Debug, Default)]
pub struct RequestCtx {
    pub route: Option<Arc<RouteRuntime>>,
    pub upstream: Option<Arc<UpstreamRuntime>>,
    pub timeout: Timeout,
    /// Level and tried set of the node walk.
    pub walk: Walk,
    /// Attempts made (a free stale-connection retry is not one).
    pub attempts: u32,
    pub max_attempts: u32,
    pub deadline: Option<Instant>,
    /// Node of the current attempt.
    pub current: Option<usize>,
    /// The current attempt's in-flight counts (node, upstream); dropped when it ends.
    pub in_flight: Option<(InFlight, Busy)>,
    /// Status of every attempt, in order (`X-Weir-Upstream-Status`); 502/504 for attempts
    /// without a response.
    pub statuses: SmallVec<[u16; 4]>,
    pub last_timed_out: bool,
    /// The current attempt's response header arrived and is being relayed.
    pub response_started: bool,
    /// The current attempt's response was discarded by `retry_on_status`.
    pub status_retry: bool,
    /// The one free retry on a stale pooled connection was used.
    pub stale_retry_used: bool,
    /// The next `upstream_peer` repeats the current node without counting an attempt.
    pub repeat_node: bool,
    /// Send this attempt with `Connection: close` (pool size or requests limit reached).
    pub close_conn: bool,
    /// The node's HTTP/2 connection generation this attempt was sent with (grpc/grpcs).
    pub h2_epoch: u64,
    /// chash key, computed once per request (retries hash the same key).
    pub hash_key: Vec<u8>,
    /// When the current attempt started (pool checkout or connect), for EWMA samples.
    pub attempt_start: Option<Instant>,
    /// The authenticated consumer's username (key-auth).
    pub consumer: Option<Arc<str>>,
    /// Per-request state of user hooks (allocates only when something is inserted).
    pub extensions: http::Extensions,
    /// Counts this request as in progress for a graceful shutdown (see [`crate::drain`]).
    pub(crate) _live: Option<crate::drain::LiveRequest>,
}

impl RequestCtx {
    /// Record the end of a failed attempt: its status, its EWMA sample (the elapsed time for a
    /// timeout, at least 1 s for an error), and the release of its in-flight count.
    pub fn attempt_failed(&mut self, timed_out: bool) {
        self.statuses.push(if timed_out { 504 } else { 502 });
        self.last_timed_out = timed_out;
        let sample = self.attempt_elapsed();
        self.observe(if timed_out {
            sample
        } else {
            sample.max(Duration::from_secs(1))
        });
        self.in_flight = None;
    }

    fn attempt_elapsed(&self) -> Duration {
        self.attempt_start.map(|t| t.elapsed()).unwrap_or_default()
    }

    /// Feed an EWMA sample for the current attempt's node (ewma upstreams only).
    pub fn observe(&self, sample: Duration) {
        if let (Some(up), Some((node, _))) = (&self.upstream, &self.in_flight) {
            if up.conf.lb == LbType::Ewma {
                node.node().observe(sample);
            }
        }
    }

    /// The current attempt's upstream health and node target, when the upstream has `checks`.
    /// Single-node upstreams are reported too (their selection just never consults health).
    fn health_target(&self) -> Option<(&crate::health::UpstreamHealth, &Arc<weir_health::Target>)> {
        let up = self.upstream.as_ref()?;
        let health = up.health.as_ref()?;
        let target = up.nodes.get(self.current?)?.health.as_ref()?;
        Some((health, target))
    }

    /// Passive report of a failed attempt that will be retried (docs/health-checks.md).
    pub fn report_transport(&self, e: &pingora::prelude::Error) {
        if let Some((h, t)) = self.health_target() {
            h.report_transport(t, e);
        }
    }

    /// Passive report of a `retry_on_status` response.
    pub fn report_status(&self, status: u16) {
        if let Some((h, t)) = self.health_target() {
            h.report_status(t, status);
        }
    }

    /// The final report: the status the client received, against the last node attempted
    /// (only with `checks.passive`).
    pub fn report_final(&self, status: u16) {
        if self.attempts == 0 {
            return;
        }
        if let Some((h, t)) = self.health_target() {
            if h.final_report {
                h.report_status(t, status);
            }
        }
    }

    /// The response header of the current attempt arrived.
    pub fn attempt_answered(&self, discarded: bool) {
        let sample = self.attempt_elapsed();
        self.observe(if discarded {
            sample.max(Duration::from_secs(1))
        } else {
            sample
        });
    }

    /// Whether another attempt may start: attempts left, deadline not passed, a node left.
    pub fn may_retry(&self) -> bool {
        let Some(up) = &self.upstream else {
            return false;
        };
        self.attempts < self.max_attempts
            && self.deadline.is_none_or(|d| Instant::now() <= d)
            && up.has_candidate(&self.walk)
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
            s.push_str(&st.to_string());
        }
        Some(s)
    }
}
