//! One attempt of a request on one node, and the one place its outcome is fed back: the EWMA
//! latency sample (docs/algorithms.md; given when the upstream's algorithm asks for samples:
//! `ewma`, or a registered algorithm whose `latency_samples` is true), the passive health report (docs/health-checks.md) and
//! the release of its in-flight counts.
//!
//! An [`Attempt`] is created when `upstream_peer` picks a node and holds the node's in-flight
//! count and the upstream's busy count (keepalive `size`) until it is dropped. Its outcome is
//! recorded once, by [`Attempt::record`] — through [`Attempt::finish`] when it ends, or
//! [`Attempt::relaying`] when its response header is relayed (the counts are then held while
//! the body is relayed, until the attempt is dropped):
//!
//! | outcome | EWMA sample | passive report | `X-Weir-Upstream-Status` |
//! |---|---|---|---|
//! | failed, retried | timeout: elapsed; error: at least 1 s | timeout, or tcp failure | 504 / 502 |
//! | failed, not retried | the same | none (the final report covers it) | 504 / 502 |
//! | stale pooled connection | none | none | none (not an attempt) |
//! | response discarded by `retry_on_status` | at least 1 s | its status | its status |
//! | response relayed | time to the response header | none (the final report covers it) | its status |
//! | dropped without an outcome | none | none | none |
//!
//! **Dropped without an outcome**: the request was cancelled (the client went away before the
//! response header, or Pingora dropped the request's task). Its elapsed time measures the
//! client's patience, not the node, and nothing failed on the node's side, so it gives no
//! sample and no report; it only releases its counts.
//!
//! The final report of a request (the status the client received, with `checks.passive`) is
//! not an attempt's: [`report_final`] gives it against the last node attempted.

use crate::metrics::Fail;
use crate::pool::Busy;
use crate::upstream::UpstreamRuntime;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_balance::InFlight;
use weir_health::{Report, Source};

/// How an attempt ended, for its feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// No usable response (connect, write or read failure, malformed header), classified as
    /// `fail`. `retried`: a retry follows, which is when a transport failure is reported to
    /// health.
    Failed { fail: Fail, retried: bool },
    /// A pooled connection the peer had closed: the request is repeated on the node for free.
    Stale,
    /// A `retry_on_status` response, discarded for a retry.
    Discarded(u16),
    /// The response header is relayed to the client.
    Relayed(u16),
    /// Dropped without an outcome (see the module documentation).
    Abandoned,
}

impl End {
    /// The attempt's entry in `X-Weir-Upstream-Status`.
    pub(crate) fn status(self) -> Option<u16> {
        match self {
            End::Failed { fail, .. } => Some(if fail.timed_out() { 504 } else { 502 }),
            End::Discarded(s) | End::Relayed(s) => Some(s),
            End::Stale | End::Abandoned => None,
        }
    }
}

/// One attempt in flight (see the module documentation).
pub(crate) struct Attempt {
    up: Arc<UpstreamRuntime>,
    node: usize,
    start: Instant,
    in_flight: InFlight,
    _busy: Busy,
    /// Send the attempt with `Connection: close` (pool `size` or `requests` limit reached).
    pub(crate) close_conn: bool,
    /// The node's HTTP/2 connection generation the attempt was sent with (grpc, grpcs).
    pub(crate) h2_epoch: u64,
    /// The attempt went out on a pooled connection (known once connected).
    pub(crate) reused: bool,
    /// The outcome was recorded (feedback is given once).
    recorded: bool,
}

impl fmt::Debug for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attempt")
            .field("upstream", &self.up.key)
            .field("node", &self.node)
            .field("start", &self.start)
            .field("close_conn", &self.close_conn)
            .field("reused", &self.reused)
            .field("recorded", &self.recorded)
            .finish()
    }
}

impl Attempt {
    /// Start an attempt on node `node` of `up`: count it in flight on the node and busy on the
    /// upstream; an attempt that starts while more than `keepalive_pool.size` others are busy
    /// goes with `Connection: close` (HTTP/1.1 only: an HTTP/2 connection is shared by streams
    /// and not closed per request).
    pub(crate) fn begin(up: Arc<UpstreamRuntime>, node: usize) -> Attempt {
        let n = &up.nodes[node];
        let (busy, busy_now) = up.pool.begin();
        let grpc = up.conf.scheme.is_grpc();
        let close_conn = !grpc && busy_now > up.conf.keepalive_pool.size as u64;
        let h2_epoch = if grpc {
            n.h2_epoch.load(Ordering::Relaxed)
        } else {
            0
        };
        let in_flight = n.state.begin();
        Attempt {
            up,
            node,
            start: Instant::now(),
            in_flight,
            _busy: busy,
            close_conn,
            h2_epoch,
            reused: false,
            recorded: false,
        }
    }

    /// The attempt's upstream.
    pub(crate) fn upstream(&self) -> &UpstreamRuntime {
        &self.up
    }

    /// Index of the attempt's node in its upstream.
    pub(crate) fn node(&self) -> usize {
        self.node
    }

    /// Time since the attempt started.
    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The attempt ended: record how, and release its counts.
    pub(crate) fn finish(mut self, end: End) {
        self.record(end);
    }

    /// The response header arrived and is relayed: record it. The counts stay held while the
    /// body is relayed, until the attempt is dropped.
    pub(crate) fn relaying(&mut self, status: u16) {
        self.record(End::Relayed(status));
    }

    /// Give the attempt's feedback: the one place it is given. Only the first call counts.
    fn record(&mut self, end: End) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        // (sample floor, passive report): the sample is the attempt's elapsed time, at least
        // the floor; `None` gives no sample.
        let elapsed = self.start.elapsed();
        if let Some(m) = &self.up.nodes[self.node].metrics {
            match end {
                End::Failed { fail, .. } => {
                    m.attempts[fail as usize].fetch_add(1, Ordering::Relaxed);
                    m.errors.fetch_add(1, Ordering::Relaxed);
                }
                End::Discarded(status) | End::Relayed(status) => {
                    m.attempts[0].fetch_add(1, Ordering::Relaxed);
                    m.latency.observe(elapsed);
                    if status >= 500 {
                        m.errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                End::Stale | End::Abandoned => {}
            }
        }
        let outcome = match end {
            End::Failed { .. } => Some(weir_resilience::Outcome::LocalFailure),
            End::Discarded(s) | End::Relayed(s) => Some(weir_resilience::Outcome::Status(s)),
            End::Stale | End::Abandoned => None,
        };
        if let Some(outcome) = outcome {
            crate::resilience::report_outcome(&self.up, self.node, outcome);
        }
        let (sample, report) = match end {
            End::Failed { fail, retried } => {
                let timed_out = fail.timed_out();
                (
                    Some(if timed_out {
                        Duration::ZERO
                    } else {
                        Duration::from_secs(1)
                    }),
                    retried.then_some(if timed_out {
                        Report::Timeout
                    } else {
                        Report::TcpFailure
                    }),
                )
            }
            End::Discarded(_) => (Some(Duration::from_secs(1)), None),
            End::Relayed(_) => (Some(Duration::ZERO), None),
            End::Stale | End::Abandoned => (None, None),
        };
        if let (Some(floor), true) = (sample, self.up.latency_samples) {
            self.in_flight.node().observe(elapsed.max(floor));
        }
        let target = self
            .up
            .health
            .as_ref()
            .zip(self.up.nodes[self.node].health.as_ref());
        if let Some((health, target)) = target {
            if let Some(r) = report {
                target.report(r, &health.passive, Source::Passive);
            }
            if let End::Discarded(status) = end {
                health.report_status(target, status);
            }
        }
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        // Nothing but the release (by the fields' own drops) when an outcome was recorded.
        self.record(End::Abandoned);
    }
}

/// The final report of a request: the status the client received, against the last node
/// attempted, when the upstream has `checks.passive` (docs/health-checks.md).
pub(crate) fn report_final(up: &UpstreamRuntime, node: usize, status: u16) {
    let (Some(health), Some(target)) = (
        &up.health,
        up.nodes.get(node).and_then(|n| n.health.as_ref()),
    ) else {
        return;
    };
    if health.final_report {
        health.report_status(target, status);
    }
}
