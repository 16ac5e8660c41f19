//! The resilience layer in the data path (docs/resilience.md): outlier detection, slow start,
//! limits and the panic threshold of an upstream, compiled from its configuration, with the
//! per-node state that outlives reloads. The rules themselves are `weir_resilience`'s; this
//! module decides where they are applied:
//!
//! - **Eligibility** (`UpstreamRuntime::pick`): a node is usable when it is up (health) and
//!   not ejected; unusable nodes are skipped while some node is usable (fail-open) and the
//!   upstream is not in panic; a node at `max_requests_per_node` is skipped.
//! - **Outcomes** (`Attempt`): every attempt with an outcome reports it to outlier detection;
//!   the failure-percentage sweep runs on the request path once per `interval` (the first
//!   report after it is due runs it), so no timer task exists per upstream.
//! - **Slow start**: a node becomes eligible (added after traffic began, back from down or
//!   ejected) when a pick first finds it usable; while any node of a level ramps, that
//!   level's picks use effective weights (see `ramp_pick`).
//! - **Limits**: a request permit is taken when the upstream is known, a retry permit when
//!   a retry is decided; refusals answer 503 with `X-Weir-Overflow` and attempt nothing.

use crate::upstream::{Level, NodeRuntime};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use weir_balance::StateTable;
use weir_config::{LbType, Upstream};
use weir_resilience::{
    LimitParams, NodeOutlier, OutlierParams, RetryBudget, SlowStart, SlowStartParams,
    UpstreamLimits, UpstreamOutlier,
};

/// `upstream_overflow_total`'s `limit` values, by index.
pub const OVERFLOW_LIMITS: [&str; 5] = [
    "max_requests",
    "max_requests_per_node",
    "max_retries",
    "retry_budget",
    "max_ejection_percent",
];

/// Index of an overflow in [`OVERFLOW_LIMITS`].
pub(crate) fn overflow_index(o: weir_resilience::Overflow) -> usize {
    match o {
        weir_resilience::Overflow::MaxRequests => 0,
        weir_resilience::Overflow::MaxRequestsPerNode => 1,
        weir_resilience::Overflow::MaxRetries => 2,
        weir_resilience::Overflow::RetryBudget => 3,
    }
}

/// An upstream's outlier detection state: the shared ejection accounting and when the last
/// failure-percentage sweep ran (ms on the resilience clock).
#[derive(Debug, Default)]
pub struct OutlierState {
    pub upstream: UpstreamOutlier,
    last_sweep: AtomicU64,
}

impl OutlierState {
    /// Whether a sweep is due at `now`; true for exactly one caller per interval.
    pub(crate) fn sweep_due(&self, now: u64, interval_ms: u64) -> bool {
        let last = self.last_sweep.load(Ordering::Relaxed);
        if last == 0 {
            // The first report starts the first interval.
            let _ = self.last_sweep.compare_exchange(
                0,
                now.max(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return false;
        }
        now.saturating_sub(last) >= interval_ms
            && self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// A node's slow-start state: its ramp, and the count of its outages (health going down,
/// outlier ejections) it has ramped after.
#[derive(Debug)]
pub struct NodeRamp {
    pub slow: SlowStart,
    /// Outages seen; `u64::MAX` for a node added after traffic began (it ramps when first
    /// found usable).
    seen: AtomicU64,
}

impl NodeRamp {
    /// A node first seen before traffic began is not ramped; one added later ramps from the
    /// first pick that finds it usable.
    fn new(traffic_started: bool) -> Self {
        NodeRamp {
            slow: SlowStart::new(),
            seen: AtomicU64::new(if traffic_started { u64::MAX } else { 0 }),
        }
    }

    /// Look at the node at `now`: usable, with `outages` so far (health downs plus
    /// ejections). A node usable after an outage it has not ramped after yet (or new) starts
    /// its ramp. Counting outages rather than watching the node go down means an outage with
    /// no request during it still ramps the node afterwards.
    #[inline]
    pub(crate) fn observe(&self, usable: bool, outages: u64, now: u64) {
        let seen = self.seen.load(Ordering::Relaxed);
        if usable
            && seen != outages
            && self
                .seen
                .compare_exchange(seen, outages, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.slow.begin(now);
        }
    }
}

/// A node's outages so far: health transitions to down and outlier ejections.
#[inline]
pub(crate) fn outages(n: &NodeRuntime) -> u64 {
    n.health.as_ref().map_or(0, |t| t.downs())
        + n.outlier.as_ref().map_or(0, |o| o.ejection_count_total())
}

type NodeKey = (String, String, u16);

/// Resilience state shared across snapshots (part of [`Tables`](crate::Tables)).
#[derive(Debug, Default)]
pub struct ResilienceTables {
    pub(crate) node_outliers: StateTable<NodeKey, NodeOutlier>,
    pub(crate) outliers: StateTable<String, OutlierState>,
    pub(crate) ramps: StateTable<NodeKey, NodeRamp>,
    pub(crate) limits: StateTable<String, UpstreamLimits>,
    /// Set by the first request: nodes that appear after it are ramped by slow start.
    traffic_started: AtomicBool,
}

impl ResilienceTables {
    /// Traffic has begun (one relaxed load per request once set).
    #[inline]
    pub(crate) fn mark_traffic(&self) {
        if !self.traffic_started.load(Ordering::Relaxed) {
            self.traffic_started.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn prune(&self) {
        self.node_outliers.prune();
        self.outliers.prune();
        self.ramps.prune();
        self.limits.prune();
    }

    /// The per-node state of node `(identity, port)` of upstream `key`, for the features
    /// `conf` turns on.
    pub(crate) fn node(
        &self,
        key: &str,
        identity: &str,
        port: u16,
        conf: &Upstream,
    ) -> (Option<Arc<NodeOutlier>>, Option<Arc<NodeRamp>>) {
        let k = || (key.to_owned(), identity.to_owned(), port);
        let outlier = conf.outlier_detection.as_ref().map(|_| {
            self.node_outliers
                .get_or_insert(k(), |_| true, NodeOutlier::new)
        });
        let started = self.traffic_started.load(Ordering::Relaxed);
        let ramp = (conf.slow_start.is_some() && !matches!(conf.lb, LbType::Chash)).then(|| {
            self.ramps
                .get_or_insert(k(), |_| true, || NodeRamp::new(started))
        });
        (outlier, ramp)
    }

    /// The upstream-level part.
    pub(crate) fn upstream(&self, key: &str, conf: &Upstream) -> UpstreamResilience {
        let outlier = conf.outlier_detection.as_ref().map(|o| {
            let params = OutlierParams {
                consecutive_5xx: o.consecutive_5xx,
                consecutive_gateway_failure: o.consecutive_gateway_failure,
                consecutive_local_origin_failure: o.consecutive_local_origin_failure,
                failure_threshold: o.failure_percentage.threshold,
                minimum_hosts: o.failure_percentage.minimum_hosts,
                request_volume: o.failure_percentage.request_volume,
                interval_ms: ms(o.interval),
                base_ejection_ms: ms(o.base_ejection_time),
                max_ejection_ms: ms(o.max_ejection_time),
                max_ejection_percent: o.max_ejection_percent,
            };
            let state =
                self.outliers
                    .get_or_insert(key.to_owned(), |_| true, OutlierState::default);
            (params, state)
        });
        let slow_start = conf
            .slow_start
            .as_ref()
            .filter(|_| !matches!(conf.lb, LbType::Chash))
            .map(|s| SlowStartParams {
                window_ms: ms(s.window),
                aggression: s.aggression,
                min_weight_percent: s.min_weight_percent,
            });
        let limits = conf
            .limits
            .as_ref()
            .filter(|l| {
                l.max_requests > 0
                    || l.max_requests_per_node > 0
                    || l.max_retries > 0
                    || l.retry_budget.is_some()
            })
            .map(|l| {
                let params = LimitParams {
                    max_requests: l.max_requests,
                    max_requests_per_node: l.max_requests_per_node,
                    max_retries: l.max_retries,
                    retry_budget: l.retry_budget.as_ref().map(|b| RetryBudget {
                        percent: b.percent,
                        min_concurrency: b.min_concurrency,
                    }),
                };
                let state =
                    self.limits
                        .get_or_insert(key.to_owned(), |_| true, UpstreamLimits::new);
                (params, state)
            });
        UpstreamResilience {
            outlier,
            slow_start,
            limits,
            panic_threshold: conf.healthy_panic_threshold,
        }
    }
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An upstream's resilience settings and shared state (all `None`/0 when off).
#[derive(Debug, Default)]
pub struct UpstreamResilience {
    pub outlier: Option<(OutlierParams, Arc<OutlierState>)>,
    pub slow_start: Option<SlowStartParams>,
    pub limits: Option<(LimitParams, Arc<UpstreamLimits>)>,
    pub panic_threshold: u32,
}

impl UpstreamResilience {
    /// Whether selection must count usable nodes: ejections, or a panic threshold over
    /// health checks (without either, every node is usable and nothing is counted).
    #[inline]
    pub(crate) fn counts_usable(&self, checked: bool) -> bool {
        self.outlier.is_some() || (self.panic_threshold > 0 && checked)
    }

    /// `max_requests_per_node`, 0 when unlimited.
    #[inline]
    pub(crate) fn per_node_limit(&self) -> u64 {
        self.limits
            .as_ref()
            .map_or(0, |(p, _)| u64::from(p.max_requests_per_node))
    }
}

/// Report an attempt's outcome on node `node` of `up` to outlier detection, eject as it
/// decides, and run the failure-percentage sweep when one is due.
pub(crate) fn report_outcome(
    up: &crate::upstream::UpstreamRuntime,
    node: usize,
    outcome: weir_resilience::Outcome,
) {
    let (Some((params, state)), Some(o)) = (
        &up.resilience.outlier,
        up.nodes.get(node).and_then(|n| n.outlier.as_ref()),
    ) else {
        return;
    };
    let now = weir_resilience::now_ms();
    let nodes = up.nodes.iter().filter_map(|n| n.outlier.as_deref());
    if let Some(v) = o.report(outcome, now, params, &state.upstream, nodes.clone()) {
        verdict(up, node, v, now);
    }
    if params.failure_threshold > 0 && state.sweep_due(now, params.interval_ms) {
        for (i, v) in weir_resilience::sweep(&state.upstream, nodes, now, params) {
            verdict(up, i, v, now);
        }
    }
}

fn reason_index(r: weir_resilience::EjectReason) -> usize {
    match r {
        weir_resilience::EjectReason::Consecutive5xx => 0,
        weir_resilience::EjectReason::ConsecutiveGatewayFailure => 1,
        weir_resilience::EjectReason::ConsecutiveLocalOriginFailure => 2,
        weir_resilience::EjectReason::FailurePercentage => 3,
    }
}

/// `upstream_ejections_total`'s `reason` values, by index.
pub const EJECT_REASONS: [&str; 4] = [
    "consecutive_5xx",
    "consecutive_gateway_failure",
    "consecutive_local_origin_failure",
    "failure_percentage",
];

/// Log and count an ejection, or a refused one (`max_ejection_percent`).
fn verdict(
    up: &crate::upstream::UpstreamRuntime,
    node: usize,
    v: weir_resilience::Verdict,
    now: u64,
) {
    let Some(n) = up.nodes.get(node) else {
        return;
    };
    match v {
        weir_resilience::Verdict::Ejected(e) => {
            if let Some(m) = &n.metrics {
                m.ejections[reason_index(e.reason)].fetch_add(1, Ordering::Relaxed);
            }
            log::warn!(
                "{}: node {} ejected ({}) for {:.1} s",
                up.key,
                n.addr,
                e.reason.as_str(),
                e.until_ms.saturating_sub(now) as f64 / 1000.0
            );
        }
        weir_resilience::Verdict::Overflow(reason) => {
            if let Some(m) = &up.metrics {
                m.overflows[4].fetch_add(1, Ordering::Relaxed);
            }
            log::info!(
                "{}: node {} not ejected ({}): max_ejection_percent reached",
                up.key,
                n.addr,
                reason.as_str()
            );
        }
    }
}

// Refusals: what a limit answers, and how it is counted.

/// The answer to a request a limit refused before any attempt.
pub(crate) const OVERLOADED: &str = r#"{"error_msg":"upstream overloaded"}"#;

/// Answer a request a limit refused: 503, `X-Weir-Overflow: <limit>`, nothing attempted.
pub(crate) async fn respond_overloaded(
    session: &mut pingora::proxy::Session,
    o: weir_resilience::Overflow,
) -> pingora::Result<()> {
    crate::respond::respond_json_with(session, 503, OVERLOADED, &[("X-Weir-Overflow", o.as_str())])
        .await
}

/// Count a refusal in `upstream_overflow_total`.
pub(crate) fn count_overflow(up: &crate::upstream::UpstreamRuntime, o: weir_resilience::Overflow) {
    if let Some(m) = &up.metrics {
        m.overflows[crate::resilience::overflow_index(o)].fetch_add(1, Ordering::Relaxed);
    }
}

/// A permit for the retry just decided, or `None` when `max_retries` or the retry budget
/// refuses it (recorded for `X-Weir-Overflow` and counted). Always a permit without limits.
pub(crate) fn retry_permit(
    up: &crate::upstream::UpstreamRuntime,
    tries: &mut crate::ctx::Tries,
) -> Option<Option<weir_resilience::RetryPermit>> {
    let Some((params, limits)) = &up.resilience.limits else {
        return Some(None);
    };
    // The retry that just ended gives its place back before the next one asks.
    tries.retry_permit = None;
    match limits.try_retry(params) {
        Ok(p) => Some(Some(p)),
        Err(o) => {
            count_overflow(up, o);
            tries.overflow = Some(o);
            None
        }
    }
}

/// The status an attempt's failure answers with.
pub(crate) fn fail_status(fail: crate::metrics::Fail) -> u16 {
    if fail.timed_out() {
        504
    } else {
        502
    }
}

/// The golden-ratio sequence: point `k` of a low-discrepancy sequence in `[0, 1)`, so that
/// weighted picks driven by a shared counter follow their weights closely over any stretch of
/// picks (within a few picks of the exact share), deterministically, with no per-node state.
#[inline]
fn golden(k: u64) -> f64 {
    const PHI_FRAC: u64 = 0x9E37_79B9_7F4A_7C15; // 2^64 / φ
    (k.wrapping_mul(PHI_FRAC) >> 11) as f64 / (1u64 << 53) as f64
}

/// A pick in `level` while some of its nodes ramp: by effective weight
/// (`weight × slow-start factor`), among the nodes `ok` accepts (level-relative indices).
///
/// - `roundrobin` (and registered algorithms): weighted by effective weight along the golden
///   sequence of the level's counter: each node's share of picks is its share of the
///   effective weights.
/// - `least_conn` and `ewma`: weighted by effective weight divided by the node's load
///   (`in_flight + 1`, or its peak-EWMA cost), along the same sequence: lighter nodes get
///   more, and a ramping node its share from the first pick.
pub(crate) fn ramp_pick(
    level: &Level,
    nodes: &[NodeRuntime],
    lb: &LbType,
    params: &SlowStartParams,
    now: u64,
    ok: &dyn Fn(usize) -> bool,
) -> Option<usize> {
    let members = &nodes[level.start..level.end];
    // Fractional: a weight-1 node at 10% weighs 0.1, not a rounded 1.
    let eff = |i: usize| -> f64 {
        let n = &members[i];
        let f = n.ramp.as_ref().map_or(1.0, |r| r.slow.factor(now, params));
        f64::from(n.weight) * f
    };
    let k = level.state.ramp_seq.fetch_add(1, Ordering::Relaxed);
    match lb {
        LbType::LeastConn | LbType::Ewma => {
            // Weighted by effective weight over load, along the same sequence: a ramping node
            // gets its share from the first pick instead of waiting until its weight term
            // wins outright (at low concurrency every node has the same load).
            let instant = std::time::Instant::now();
            let share = |i: usize| -> f64 {
                let load = match lb {
                    // The peak-EWMA cost at weight 1.
                    LbType::Ewma => members[i].state.ewma_cost_at(instant, 1),
                    _ => (members[i].state.in_flight() + 1) as f64,
                };
                eff(i) / load.max(f64::MIN_POSITIVE)
            };
            weighted_pick(golden(k), members.len(), ok, share)
        }
        _ => weighted_pick(golden(k), members.len(), ok, eff),
    }
}

/// The node at point `x` (in `[0, 1)`) of the eligible nodes' weights laid end to end.
fn weighted_pick(
    x: f64,
    n: usize,
    ok: &dyn Fn(usize) -> bool,
    weight: impl Fn(usize) -> f64,
) -> Option<usize> {
    let total: f64 = (0..n).filter(|&i| ok(i)).map(&weight).sum();
    if total <= 0.0 {
        return None;
    }
    let mut at = x * total;
    let mut last = None;
    for i in (0..n).filter(|&i| ok(i)) {
        let w = weight(i);
        if w <= 0.0 {
            continue;
        }
        if at < w {
            return Some(i);
        }
        at -= w;
        last = Some(i);
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With a controlled clock: three weight-1 nodes, the third ramping over 10 s; in each
    /// second, its share of 1000 picks is its share of the effective weights.
    #[test]
    fn ramping_shares_follow_the_formula() {
        let params = SlowStartParams {
            window_ms: 10_000,
            aggression: 1.0,
            min_weight_percent: 10,
        };
        let ramp = SlowStart::new();
        ramp.begin(1_000);
        let mut k = 0u64;
        for second in 0..12u64 {
            let now = 1_000 + second * 1000 + 500;
            let f = ramp.factor(now, &params);
            let want = f / (2.0 + f);
            let mut picked = 0;
            for _ in 0..1000 {
                let w = |i: usize| if i == 2 { f } else { 1.0 };
                if weighted_pick(golden(k), 3, &|_| true, w) == Some(2) {
                    picked += 1;
                }
                k += 1;
            }
            let got = f64::from(picked) / 1000.0;
            assert!(
                (got - want).abs() < 0.01,
                "second {second}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn weighted_picks_skip_ineligible_and_weightless_nodes() {
        let w = |i: usize| [1.0, 0.0, 2.0][i];
        for k in 0..100 {
            let got = weighted_pick(golden(k), 3, &|i| i != 0, w);
            assert_eq!(got, Some(2));
        }
        assert_eq!(weighted_pick(0.5, 3, &|_| false, w), None);
    }

    #[test]
    fn the_golden_sequence_is_even() {
        // Over any 1000 consecutive points, each tenth of [0, 1) gets 100 ± 3.
        for start in [0u64, 12345, u64::MAX - 2000] {
            let mut bins = [0u32; 10];
            for k in 0..1000 {
                let x = golden(start.wrapping_add(k));
                assert!((0.0..1.0).contains(&x));
                bins[(x * 10.0) as usize] += 1;
            }
            for b in bins {
                assert!((97..=103).contains(&b), "{bins:?}");
            }
        }
    }
}
