//! The upstream's resilience settings, Weir extensions that APISIX does not have, all off
//! unless configured: `outlier_detection` (eject nodes that keep failing), `slow_start` (ramp
//! a node's weight up after it joins or comes back), `limits` (caps on requests and retries
//! in flight) and `healthy_panic_threshold` (ignore health when too few nodes are usable).
//!
//! Every block takes the defaults of its missing members, so `outlier_detection: {}` is a
//! complete configuration. This module reads and validates them; the proxy applies them.

use super::LbType;
use crate::common::ser_secs;
use crate::error::show;
use crate::path::Path;
use crate::reader::{self, Bound, Cx, Obj};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

/// Largest `consecutive_*` threshold.
pub const MAX_CONSECUTIVE: u32 = 10_000;
/// Largest `failure_percentage.minimum_hosts`.
pub const MAX_MINIMUM_HOSTS: u32 = 100_000;
/// Largest `failure_percentage.request_volume`, `limits` count and
/// `retry_budget.min_concurrency`.
pub const MAX_COUNT: u32 = 1_000_000;
/// Longest `outlier_detection.interval`, in seconds.
pub const MAX_INTERVAL_SECS: f64 = 3600.0;
/// Longest `base_ejection_time` and `max_ejection_time`, in seconds.
pub const MAX_EJECTION_SECS: f64 = 86_400.0;
/// Longest `slow_start.window`, in seconds.
pub const MAX_SLOW_START_WINDOW_SECS: f64 = 3600.0;
/// Largest `slow_start.aggression`.
pub const MAX_AGGRESSION: f64 = 10.0;

/// `outlier_detection`: a node is ejected (not picked) for a while after consecutive failures
/// of a kind, or when its failure rate stands out in a periodic sweep. A threshold of 0
/// disables that rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutlierDetection {
    /// Consecutive responses 500..599 from the node.
    pub consecutive_5xx: u32,
    /// Consecutive 502, 503 or 504 from the node, or no response at all.
    pub consecutive_gateway_failure: u32,
    /// Consecutive connect failures, TLS failures, resets or timeouts before a response.
    pub consecutive_local_origin_failure: u32,
    pub failure_percentage: FailurePercentage,
    /// Time between failure-percentage sweeps.
    #[serde(serialize_with = "ser_secs")]
    pub interval: Duration,
    /// Ejection time of a node's first ejection.
    #[serde(serialize_with = "ser_secs")]
    pub base_ejection_time: Duration,
    /// The longest a node stays ejected; never shorter than `base_ejection_time`.
    #[serde(serialize_with = "ser_secs")]
    pub max_ejection_time: Duration,
    /// The largest share (percent) of the upstream's nodes ejected at once.
    pub max_ejection_percent: u32,
}

/// `outlier_detection.failure_percentage`: in each sweep, eject the nodes whose failure rate
/// is at least `threshold` percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FailurePercentage {
    /// Percent 0..100; 0 disables the rule.
    pub threshold: u32,
    /// The rule runs only when at least this many nodes have `request_volume` requests.
    pub minimum_hosts: u32,
    /// Requests a node needs in the sweep's interval to be judged.
    pub request_volume: u32,
}

impl Default for FailurePercentage {
    fn default() -> Self {
        FailurePercentage {
            threshold: 0,
            minimum_hosts: 5,
            request_volume: 50,
        }
    }
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 0,
            consecutive_local_origin_failure: 5,
            failure_percentage: FailurePercentage::default(),
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
        }
    }
}

/// `slow_start`: a node that joins or comes back starts at a fraction of its weight and
/// reaches the full weight over `window`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SlowStart {
    #[serde(serialize_with = "ser_secs")]
    pub window: Duration,
    /// Shape of the ramp: 1.0 linear; larger values ramp up faster at first.
    pub aggression: f64,
    /// The weight a node starts from, as a percent (1..100) of its configured weight.
    pub min_weight_percent: u32,
}

impl Default for SlowStart {
    fn default() -> Self {
        SlowStart {
            window: Duration::from_secs(30),
            aggression: 1.0,
            min_weight_percent: 10,
        }
    }
}

/// `limits`: caps on what is in flight to the upstream. 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Limits {
    /// Requests in flight to all the upstream's nodes together.
    pub max_requests: u32,
    /// Requests in flight to one node; a full node is not eligible.
    pub max_requests_per_node: u32,
    /// Retry attempts in flight at once for the upstream.
    pub max_retries: u32,
    /// `None` unless `retry_budget.percent` is > 0; replaces `max_retries` when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
}

/// `limits.retry_budget`: retries in flight may be at most `percent` of the requests in
/// flight, but `min_concurrency` are always allowed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RetryBudget {
    /// Percent, > 0 and <= 100.
    pub percent: f64,
    /// At least 1.
    pub min_concurrency: u32,
}

impl RetryBudget {
    /// `min_concurrency` when the block does not set it.
    pub const DEFAULT_MIN_CONCURRENCY: u32 = 3;
}

/// The warning on `slow_start` in a `chash` upstream.
const SLOW_START_ON_CHASH: &str = "ignored: chash ignores slow start, for ring stability \
     (ramping a node's weight would move keys between nodes)";

/// The four resilience members of one upstream object.
#[derive(Debug, Default)]
pub(super) struct Resilience {
    pub outlier_detection: Option<OutlierDetection>,
    pub slow_start: Option<SlowStart>,
    pub limits: Option<Limits>,
    pub healthy_panic_threshold: u32,
}

/// Read the resilience members of the upstream object `o`. `lb` is its algorithm (`None` when
/// `type` was invalid), for the warnings that depend on it.
pub(super) fn parse(o: &mut Obj<'_>, cx: &mut Cx, lb: Option<&LbType>) -> Resilience {
    let outlier_detection = o
        .take("outlier_detection")
        .and_then(|(v, p)| parse_outlier_detection(v, &p, cx));
    let slow_start = o.take("slow_start").and_then(|(v, p)| {
        let s = parse_slow_start(v, &p, cx)?;
        if lb == Some(&LbType::Chash) {
            cx.warn(&p, SLOW_START_ON_CHASH);
        }
        Some(s)
    });
    let limits = o.take("limits").and_then(|(v, p)| parse_limits(v, &p, cx));
    let healthy_panic_threshold = o
        .uint(cx, "healthy_panic_threshold", 0, 100)
        .map_or(0, |n| n as u32);
    Resilience {
        outlier_detection,
        slow_start,
        limits,
        healthy_panic_threshold,
    }
}

/// Read a count in `lo..=hi`.
fn count(o: &mut Obj<'_>, cx: &mut Cx, k: &str, lo: u32, hi: u32, into: &mut u32) {
    if let Some(n) = o.uint(cx, k, lo as u64, hi as u64) {
        // In range, so it fits.
        *into = u32::try_from(n).unwrap_or(hi);
    }
}

/// Read a number of seconds `> 0` and `<= max`, with the value read (for messages).
fn seconds<'v>(
    o: &mut Obj<'v>,
    cx: &mut Cx,
    k: &str,
    max: f64,
) -> Option<(Duration, &'v Value, Path)> {
    let (v, p) = o.take(k)?;
    let d = reader::secs(v, &p, cx, Bound::Positive)?;
    if d.as_secs_f64() > max {
        cx.err(&p, format!("must be <= {max}, got {}", show(v)));
        return None;
    }
    Some((d, v, p))
}

/// Read a number in `lo..=hi` (`> lo` when `open_low`).
fn float(v: &Value, p: &Path, cx: &mut Cx, lo: f64, hi: f64, open_low: bool) -> Option<f64> {
    let f = reader::number(v, p, cx)?;
    let ok = if open_low { f > lo } else { f >= lo } && f <= hi;
    if !ok {
        let want = if open_low {
            format!("> {lo} and <= {hi}")
        } else {
            format!("{lo}..{hi}")
        };
        cx.err(p, format!("must be {want}, got {}", show(v)));
        return None;
    }
    Some(f)
}

fn parse_outlier_detection(v: &Value, p: &Path, cx: &mut Cx) -> Option<OutlierDetection> {
    let mut o = Obj::of(v, p, cx)?;
    let before = cx.errors.len();
    let mut d = OutlierDetection::default();
    count(
        &mut o,
        cx,
        "consecutive_5xx",
        0,
        MAX_CONSECUTIVE,
        &mut d.consecutive_5xx,
    );
    count(
        &mut o,
        cx,
        "consecutive_gateway_failure",
        0,
        MAX_CONSECUTIVE,
        &mut d.consecutive_gateway_failure,
    );
    count(
        &mut o,
        cx,
        "consecutive_local_origin_failure",
        0,
        MAX_CONSECUTIVE,
        &mut d.consecutive_local_origin_failure,
    );
    if let Some(mut f) = o.obj(cx, "failure_percentage") {
        let fp = &mut d.failure_percentage;
        count(&mut f, cx, "threshold", 0, 100, &mut fp.threshold);
        count(
            &mut f,
            cx,
            "minimum_hosts",
            0,
            MAX_MINIMUM_HOSTS,
            &mut fp.minimum_hosts,
        );
        count(
            &mut f,
            cx,
            "request_volume",
            0,
            MAX_COUNT,
            &mut fp.request_volume,
        );
        f.finish(cx);
    }
    if let Some((t, _, _)) = seconds(&mut o, cx, "interval", MAX_INTERVAL_SECS) {
        d.interval = t;
    }
    // A base that failed is reported on its own; max_ejection_time is then not compared.
    let base_given = o.has("base_ejection_time");
    let base = seconds(&mut o, cx, "base_ejection_time", MAX_EJECTION_SECS);
    let base_known = !base_given || base.is_some();
    if let Some((t, _, _)) = base {
        d.base_ejection_time = t;
    }
    match seconds(&mut o, cx, "max_ejection_time", MAX_EJECTION_SECS) {
        Some((t, v, mp)) if t < d.base_ejection_time => {
            if base_known {
                cx.err(
                    &mp,
                    format!(
                        "must be >= base_ejection_time ({}), got {}",
                        d.base_ejection_time.as_secs_f64(),
                        show(v)
                    ),
                );
            }
        }
        Some((t, _, _)) => d.max_ejection_time = t,
        // Absent (or invalid, which rejects the block): 300 s, or the base when longer.
        None => d.max_ejection_time = d.max_ejection_time.max(d.base_ejection_time),
    }
    count(
        &mut o,
        cx,
        "max_ejection_percent",
        0,
        100,
        &mut d.max_ejection_percent,
    );
    o.finish(cx);
    (cx.errors.len() == before).then_some(d)
}

fn parse_slow_start(v: &Value, p: &Path, cx: &mut Cx) -> Option<SlowStart> {
    let mut o = Obj::of(v, p, cx)?;
    let before = cx.errors.len();
    let mut s = SlowStart::default();
    if let Some((w, _, _)) = seconds(&mut o, cx, "window", MAX_SLOW_START_WINDOW_SECS) {
        s.window = w;
    }
    if let Some((v, ap)) = o.take("aggression") {
        if let Some(a) = float(v, &ap, cx, 0.0, MAX_AGGRESSION, true) {
            s.aggression = a;
        }
    }
    count(
        &mut o,
        cx,
        "min_weight_percent",
        1,
        100,
        &mut s.min_weight_percent,
    );
    o.finish(cx);
    (cx.errors.len() == before).then_some(s)
}

fn parse_limits(v: &Value, p: &Path, cx: &mut Cx) -> Option<Limits> {
    let mut o = Obj::of(v, p, cx)?;
    let before = cx.errors.len();
    let mut l = Limits::default();
    count(
        &mut o,
        cx,
        "max_requests",
        0,
        MAX_COUNT,
        &mut l.max_requests,
    );
    count(
        &mut o,
        cx,
        "max_requests_per_node",
        0,
        MAX_COUNT,
        &mut l.max_requests_per_node,
    );
    count(&mut o, cx, "max_retries", 0, MAX_COUNT, &mut l.max_retries);
    if let Some(mut b) = o.obj(cx, "retry_budget") {
        let percent = b
            .take("percent")
            .and_then(|(v, pp)| float(v, &pp, cx, 0.0, 100.0, false));
        let mut min_concurrency = RetryBudget::DEFAULT_MIN_CONCURRENCY;
        count(
            &mut b,
            cx,
            "min_concurrency",
            1,
            MAX_COUNT,
            &mut min_concurrency,
        );
        l.retry_budget = percent.filter(|p| *p > 0.0).map(|percent| RetryBudget {
            percent,
            min_concurrency,
        });
        b.finish(cx);
    }
    if l.retry_budget.is_some() && l.max_retries > 0 {
        cx.warn(
            &p.field("max_retries"),
            "ignored: retry_budget (percent > 0) replaces max_retries",
        );
    }
    o.finish(cx);
    (cx.errors.len() == before).then_some(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Read `v` as the resilience members of an upstream of type `lb`: the result, the errors
    /// and the warnings.
    fn read(v: Value, lb: LbType) -> (Resilience, Vec<String>, Vec<String>) {
        let mut cx = Cx::default();
        let p = Path::root();
        let mut o = Obj::of(&v, &p, &mut cx).expect("an object");
        let r = parse(&mut o, &mut cx, Some(&lb));
        o.finish(&mut cx);
        let msgs = |v: &[crate::ConfigError]| v.iter().map(|e| e.to_string()).collect();
        let (errors, warnings) = (msgs(&cx.errors), msgs(&cx.warnings));
        (r, errors, warnings)
    }

    fn ok(v: Value) -> Resilience {
        let (r, errors, warnings) = read(v, LbType::RoundRobin);
        assert!(errors.is_empty(), "{errors:?}");
        assert!(warnings.is_empty(), "{warnings:?}");
        r
    }

    fn errors(v: Value) -> Vec<String> {
        read(v, LbType::RoundRobin).1
    }

    #[test]
    fn absent_means_off() {
        let r = ok(json!({}));
        assert_eq!(r.outlier_detection, None);
        assert_eq!(r.slow_start, None);
        assert_eq!(r.limits, None);
        assert_eq!(r.healthy_panic_threshold, 0);
        // Null members count as absent.
        let r = ok(json!({"outlier_detection": null, "limits": null}));
        assert_eq!((r.outlier_detection, r.limits), (None, None));
    }

    #[test]
    fn empty_blocks_take_every_default() {
        let r = ok(json!({"outlier_detection": {}, "slow_start": {}, "limits": {}}));
        let d = r.outlier_detection.expect("outlier_detection");
        assert_eq!(d, OutlierDetection::default());
        assert_eq!(
            (
                d.consecutive_5xx,
                d.consecutive_gateway_failure,
                d.consecutive_local_origin_failure
            ),
            (5, 0, 5)
        );
        assert_eq!(
            d.failure_percentage,
            FailurePercentage {
                threshold: 0,
                minimum_hosts: 5,
                request_volume: 50
            }
        );
        assert_eq!(d.interval, Duration::from_secs(10));
        assert_eq!(d.base_ejection_time, Duration::from_secs(30));
        assert_eq!(d.max_ejection_time, Duration::from_secs(300));
        assert_eq!(d.max_ejection_percent, 10);
        assert_eq!(
            r.slow_start,
            Some(SlowStart {
                window: Duration::from_secs(30),
                aggression: 1.0,
                min_weight_percent: 10
            })
        );
        assert_eq!(
            r.limits,
            Some(Limits {
                max_requests: 0,
                max_requests_per_node: 0,
                max_retries: 0,
                retry_budget: None
            })
        );
    }

    #[test]
    fn full_blocks() {
        let r = ok(json!({
            "outlier_detection": {
                "consecutive_5xx": 3, "consecutive_gateway_failure": 2,
                "consecutive_local_origin_failure": 0,
                "failure_percentage": {"threshold": 80, "minimum_hosts": 2, "request_volume": 10},
                "interval": 0.5, "base_ejection_time": 5, "max_ejection_time": 5,
                "max_ejection_percent": 100
            },
            "slow_start": {"window": 60, "aggression": 2.5, "min_weight_percent": 1},
            "limits": {"max_requests": 1000, "max_requests_per_node": 100,
                       "retry_budget": {"percent": 20.5, "min_concurrency": 1}},
            "healthy_panic_threshold": 50
        }));
        let d = r.outlier_detection.expect("outlier_detection");
        assert_eq!(
            (
                d.consecutive_5xx,
                d.consecutive_gateway_failure,
                d.consecutive_local_origin_failure
            ),
            (3, 2, 0)
        );
        assert_eq!(d.failure_percentage.threshold, 80);
        assert_eq!(d.interval, Duration::from_millis(500));
        assert_eq!(d.base_ejection_time, d.max_ejection_time);
        assert_eq!(d.max_ejection_percent, 100);
        let s = r.slow_start.expect("slow_start");
        assert_eq!(
            (s.window, s.aggression, s.min_weight_percent),
            (Duration::from_secs(60), 2.5, 1)
        );
        let l = r.limits.expect("limits");
        assert_eq!((l.max_requests, l.max_requests_per_node), (1000, 100));
        assert_eq!(
            l.retry_budget,
            Some(RetryBudget {
                percent: 20.5,
                min_concurrency: 1
            })
        );
        assert_eq!(r.healthy_panic_threshold, 50);
    }

    #[test]
    fn max_ejection_time_defaults_to_at_least_the_base() {
        let d = ok(json!({"outlier_detection": {"base_ejection_time": 600}}))
            .outlier_detection
            .expect("outlier_detection");
        assert_eq!(d.max_ejection_time, Duration::from_secs(600));
        let d = ok(json!({"outlier_detection": {"base_ejection_time": 10}}))
            .outlier_detection
            .expect("outlier_detection");
        assert_eq!(d.max_ejection_time, Duration::from_secs(300));
    }

    #[test]
    fn a_budget_of_zero_percent_is_off() {
        let l = ok(json!({"limits": {"max_retries": 4, "retry_budget": {"percent": 0}}}))
            .limits
            .expect("limits");
        assert_eq!((l.max_retries, l.retry_budget), (4, None));
        let l = ok(json!({"limits": {"retry_budget": {}}}))
            .limits
            .expect("limits");
        assert_eq!(l.retry_budget, None);
        let l = ok(json!({"limits": {"retry_budget": {"percent": 100}}}))
            .limits
            .expect("limits");
        assert_eq!(
            l.retry_budget,
            Some(RetryBudget {
                percent: 100.0,
                min_concurrency: RetryBudget::DEFAULT_MIN_CONCURRENCY
            })
        );
    }

    #[test]
    fn outlier_detection_ranges() {
        assert_eq!(
            errors(json!({"outlier_detection": {
                "consecutive_5xx": -1, "consecutive_gateway_failure": 1.5,
                "consecutive_local_origin_failure": 10001,
                "failure_percentage": {"threshold": 101, "minimum_hosts": 100001,
                                       "request_volume": 1000001, "typo": 1},
                "interval": 0, "base_ejection_time": -3, "max_ejection_time": 0,
                "max_ejection_percent": 101, "extra": true
            }})),
            [
                "outlier_detection.consecutive_5xx: must be 0..10000, got -1",
                "outlier_detection.consecutive_gateway_failure: must be an integer, got 1.5",
                "outlier_detection.consecutive_local_origin_failure: must be 0..10000, got 10001",
                "outlier_detection.failure_percentage.threshold: must be 0..100, got 101",
                "outlier_detection.failure_percentage.minimum_hosts: must be 0..100000, got 100001",
                "outlier_detection.failure_percentage.request_volume: must be 0..1000000, got 1000001",
                "outlier_detection.failure_percentage.typo: unknown field",
                "outlier_detection.interval: must be > 0, got 0",
                "outlier_detection.base_ejection_time: must be > 0, got -3",
                "outlier_detection.max_ejection_time: must be > 0, got 0",
                "outlier_detection.max_ejection_percent: must be 0..100, got 101",
                "outlier_detection.extra: unknown field",
            ]
        );
        assert_eq!(
            errors(
                json!({"outlier_detection": {"interval": 3601, "base_ejection_time": 86401,
                                                "max_ejection_time": 1e9}})
            ),
            [
                "outlier_detection.interval: must be <= 3600, got 3601",
                "outlier_detection.base_ejection_time: must be <= 86400, got 86401",
                "outlier_detection.max_ejection_time: must be <= 86400, got 1000000000.0",
            ]
        );
        assert_eq!(
            errors(json!({"outlier_detection": "on"})),
            ["outlier_detection: must be an object, got \"on\""]
        );
        assert_eq!(
            errors(json!({"outlier_detection": {"interval": "10s"}})),
            ["outlier_detection.interval: must be a number, got \"10s\""]
        );
    }

    #[test]
    fn max_ejection_time_below_the_base_names_both() {
        assert_eq!(
            errors(
                json!({"outlier_detection": {"base_ejection_time": 60, "max_ejection_time": 30}})
            ),
            ["outlier_detection.max_ejection_time: must be >= base_ejection_time (60), got 30"]
        );
        // Against the default base.
        assert_eq!(
            errors(json!({"outlier_detection": {"max_ejection_time": 2.5}})),
            ["outlier_detection.max_ejection_time: must be >= base_ejection_time (30), got 2.5"]
        );
        // A bad base is reported once, not compared.
        assert_eq!(
            errors(json!({"outlier_detection": {"base_ejection_time": 0, "max_ejection_time": 1}})),
            ["outlier_detection.base_ejection_time: must be > 0, got 0"]
        );
    }

    #[test]
    fn slow_start_ranges() {
        assert_eq!(
            errors(json!({"slow_start": {"window": 0, "aggression": 0, "min_weight_percent": 0}})),
            [
                "slow_start.window: must be > 0, got 0",
                "slow_start.aggression: must be > 0 and <= 10, got 0",
                "slow_start.min_weight_percent: must be 1..100, got 0",
            ]
        );
        assert_eq!(
            errors(json!({"slow_start": {"window": 3600.5, "aggression": 10.5,
                                         "min_weight_percent": 101, "ramp": 1}})),
            [
                "slow_start.window: must be <= 3600, got 3600.5",
                "slow_start.aggression: must be > 0 and <= 10, got 10.5",
                "slow_start.min_weight_percent: must be 1..100, got 101",
                "slow_start.ramp: unknown field",
            ]
        );
        assert_eq!(
            errors(json!({"slow_start": {"aggression": "fast"}})),
            ["slow_start.aggression: must be a number, got \"fast\""]
        );
        let s = ok(
            json!({"slow_start": {"window": 3600, "aggression": 10, "min_weight_percent": 100}}),
        )
        .slow_start
        .expect("slow_start");
        assert_eq!((s.aggression, s.min_weight_percent), (10.0, 100));
    }

    #[test]
    fn limits_ranges() {
        assert_eq!(
            errors(
                json!({"limits": {"max_requests": -1, "max_requests_per_node": 1000001,
                                     "max_retries": "3",
                                     "retry_budget": {"percent": 100.5, "min_concurrency": 0,
                                                      "ratio": 1},
                                     "burst": 1}})
            ),
            [
                "limits.max_requests: must be 0..1000000, got -1",
                "limits.max_requests_per_node: must be 0..1000000, got 1000001",
                "limits.max_retries: must be an integer, got \"3\"",
                "limits.retry_budget.percent: must be 0..100, got 100.5",
                "limits.retry_budget.min_concurrency: must be 1..1000000, got 0",
                "limits.retry_budget.ratio: unknown field",
                "limits.burst: unknown field",
            ]
        );
        assert_eq!(
            errors(json!({"limits": {"retry_budget": {"percent": -1, "min_concurrency": 2.5}}})),
            [
                "limits.retry_budget.percent: must be 0..100, got -1",
                "limits.retry_budget.min_concurrency: must be an integer, got 2.5",
            ]
        );
        let l = ok(json!({"limits": {"max_requests": 1000000, "max_retries": 1000000}}))
            .limits
            .expect("limits");
        assert_eq!((l.max_requests, l.max_retries), (1_000_000, 1_000_000));
    }

    #[test]
    fn panic_threshold_range() {
        assert_eq!(
            ok(json!({"healthy_panic_threshold": 100})).healthy_panic_threshold,
            100
        );
        assert_eq!(
            errors(json!({"healthy_panic_threshold": 101})),
            ["healthy_panic_threshold: must be 0..100, got 101"]
        );
        assert_eq!(
            errors(json!({"healthy_panic_threshold": 12.5})),
            ["healthy_panic_threshold: must be an integer, got 12.5"]
        );
    }

    #[test]
    fn slow_start_on_chash_is_accepted_with_a_warning() {
        let (r, errors, warnings) = read(json!({"slow_start": {}}), LbType::Chash);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(r.slow_start, Some(SlowStart::default()));
        assert_eq!(warnings, [format!("slow_start: {SLOW_START_ON_CHASH}")]);
        // The other algorithms use it without a word.
        for lb in [LbType::LeastConn, LbType::Ewma, LbType::Custom("x".into())] {
            let (_, errors, warnings) = read(json!({"slow_start": {}}), lb);
            assert!(
                errors.is_empty() && warnings.is_empty(),
                "{errors:?} {warnings:?}"
            );
        }
        // An invalid block is an error, not a warning.
        let (_, errors, warnings) = read(json!({"slow_start": {"window": 0}}), LbType::Chash);
        assert_eq!(errors.len(), 1);
        assert!(warnings.is_empty());
    }

    #[test]
    fn a_retry_budget_with_max_retries_warns() {
        let v = json!({"limits": {"max_retries": 5, "retry_budget": {"percent": 20}}});
        let (r, errors, warnings) = read(v, LbType::RoundRobin);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            warnings,
            ["limits.max_retries: ignored: retry_budget (percent > 0) replaces max_retries"]
        );
        let l = r.limits.expect("limits");
        assert_eq!(l.max_retries, 5, "kept as written");
        assert!(l.retry_budget.is_some());
        // Either one alone says nothing.
        ok(json!({"limits": {"max_retries": 5}}));
        ok(json!({"limits": {"retry_budget": {"percent": 20}}}));
        ok(json!({"limits": {"max_retries": 5, "retry_budget": {"percent": 0}}}));
    }

    #[test]
    fn serialization_skips_what_is_off() {
        let v = serde_json::to_value(Limits::default()).expect("json");
        assert_eq!(
            v,
            json!({"max_requests": 0, "max_requests_per_node": 0, "max_retries": 0})
        );
        let v = serde_json::to_value(OutlierDetection::default()).expect("json");
        assert_eq!(v["interval"], json!(10.0));
        assert_eq!(v["failure_percentage"]["request_volume"], json!(50));
        let v = serde_json::to_value(SlowStart::default()).expect("json");
        assert_eq!(
            v,
            json!({"window": 30.0, "aggression": 1.0, "min_weight_percent": 10})
        );
    }
}
