//! Weir's resilience layer: the pure decisions and lock-free per-node state behind outlier
//! detection, slow start, limits and the panic threshold. The proxy owns the wiring (which
//! node an outcome belongs to, when sweeps run, what a refusal answers); this crate owns the
//! rules, each testable with a controlled clock: every function takes the time as `now`, a
//! `u64` of milliseconds since a process epoch ([`clock`]).
//!
//! - [`outlier`]: every attempt reports an [`Outcome`]; consecutive 5xx, gateway failures
//!   (502/503/504 or no response) and local-origin failures (no response) eject a node at a
//!   threshold, and a periodic [`sweep`] ejects nodes whose failure share stands out. The
//!   `n`-th ejection lasts `min(base × n, max)`, `n` decaying by one per `base` without an
//!   ejection; an ejected node is eligible again the moment its time is up. Invariants: no
//!   threshold, no ejection; an ejection lasts within `[base, max(base, max)]`; a response
//!   below 500 resets every counter; two threads crossing a threshold at once eject the node
//!   once; the ejected share of an upstream never exceeds `max_ejection_percent` (but one
//!   node of two or more may always go), also under concurrent ejections.
//! - [`slow_start`]: a node that becomes eligible while the process runs weighs
//!   `weight × max(min%, (t / window) ^ (1 / aggression))` until the window is over.
//!   Invariants: the factor is in `(0, 1]` and non-decreasing in `t`; an effective weight is
//!   in `[1, weight]`.
//! - [`limits`]: requests and retries in flight per upstream, admitted by permits (RAII
//!   guards) under `max_requests`, `max_retries` or a retry budget, and the per-node cap.
//!   Invariant: the permits alive never exceed a limit, even under concurrency.
//! - [`panic`](mod@panic): an upstream whose usable share of nodes is below the threshold
//!   ignores health. Invariant: exact integer comparison, off at 0.
//!
//! Everything on the request path (report an outcome, test an ejection, an effective weight,
//! take or drop a permit) is atomics only: no lock, no allocation, no panic on any input.
//! Only [`sweep`] allocates (its result), off the request path. Limits of 0 mean "off" or
//! "unlimited" throughout.

pub mod clock;
pub mod limits;
pub mod outlier;
pub mod panic;
pub mod slow_start;

pub use clock::{now_ms, Clock};
pub use limits::{
    node_full, retry_limit, LimitParams, Overflow, RequestPermit, RetryBudget, RetryPermit,
    UpstreamLimits,
};
pub use outlier::{
    sweep, Counters, EjectReason, Ejection, IntervalCounts, NodeOutlier, Outcome, OutlierParams,
    UpstreamOutlier, Verdict,
};
pub use panic::in_panic;
pub use slow_start::{SlowStart, SlowStartParams};
