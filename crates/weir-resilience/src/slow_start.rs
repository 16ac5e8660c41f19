//! Slow start: a node that becomes eligible while the process runs ramps its weight up.
//!
//! A node that becomes eligible after the process started (added by a reload or by
//! discovery, or back from down or from an ejection) weighs
//! `weight × max(min_weight_percent / 100, (t / window) ^ (1 / aggression))` at `t` ms after it
//! became eligible, until `t >= window`; then it weighs `weight`. Nodes present when the
//! process starts are not ramped: the proxy calls [`SlowStart::begin`] only for the others.
//!
//! Invariants: [`factor`] is in `(0, 1]`, non-decreasing in `t`, and 1 from `t = window` on;
//! [`SlowStart::effective_weight`] is in `[1, weight]` for `weight >= 1` (0 stays 0).
//! `aggression` 1 is linear; larger values ramp up faster at first, smaller ones slower. An
//! `aggression` that is not a positive finite number acts as 1; a `min_weight_percent` above
//! 100 acts as 100; a `window_ms` of 0 disables the ramp. When the floor is 0 the factor is
//! still above 0 (the smallest positive `f64`), so a ramping node keeps a weight of 1.
//!
//! State: one `AtomicU64` per node, the ramp's start (ms of the process clock), 0 when not
//! ramping. Reads are one atomic load; the first read after the window clears it with one
//! compare-and-swap (which loses to a concurrent [`SlowStart::begin`], so a new ramp is never
//! lost). No lock, no allocation.

use std::sync::atomic::{AtomicU64, Ordering};

/// The slow-start settings of one upstream, as plain data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowStartParams {
    /// Length of the ramp; 0 = no ramp.
    pub window_ms: u64,
    /// Shape of the ramp: the exponent is `1 / aggression`; 1 is linear.
    pub aggression: f64,
    /// The floor of the ramp, in percent of the weight.
    pub min_weight_percent: u32,
}

/// The share of its weight a node has `t_ms` after it became eligible: in `(0, 1]`,
/// non-decreasing in `t_ms`, 1 from `t_ms >= window_ms` on (module doc).
pub fn factor(t_ms: u64, params: &SlowStartParams) -> f64 {
    let window = params.window_ms;
    if t_ms >= window {
        return 1.0;
    }
    let floor = f64::from(params.min_weight_percent.min(100)) / 100.0;
    let ratio = t_ms as f64 / window as f64;
    let a = params.aggression;
    let ramp = if !(a.is_finite() && a > 0.0) || a == 1.0 {
        ratio
    } else {
        ratio.powf(1.0 / a)
    };
    // `max` ignores a NaN operand; clamp to (0, 1] in any case.
    ramp.max(floor).clamp(f64::MIN_POSITIVE, 1.0)
}

/// One node's ramp, shared by every thread (module doc).
#[derive(Debug, Default)]
pub struct SlowStart {
    /// Ramp start (ms), 0 = not ramping.
    start: AtomicU64,
}

impl SlowStart {
    /// A node that is not ramping (present when the process starts).
    pub fn new() -> Self {
        SlowStart::default()
    }

    /// A node that starts ramping at `now` (one added while the process runs).
    pub fn starting_at(now: u64) -> Self {
        let s = SlowStart::new();
        s.begin(now);
        s
    }

    /// The node just became eligible: (re)start its ramp at `now` (a `now` of 0 is taken as
    /// 1 ms, since 0 means "not ramping").
    pub fn begin(&self, now: u64) {
        self.start.store(now.max(1), Ordering::Release);
    }

    /// Stop ramping: the node weighs its full weight from now on.
    pub fn end(&self) {
        self.start.store(0, Ordering::Release);
    }

    /// When the current ramp started, or `None` when the node is not ramping (as of its last
    /// read: a finished ramp is cleared by the first [`SlowStart::factor`] after it).
    pub fn ramp_started_ms(&self) -> Option<u64> {
        let s = self.start.load(Ordering::Acquire);
        (s != 0).then_some(s)
    }

    /// The node's share of its weight at `now`: 1.0 when not ramping or when the ramp is
    /// over (then it clears itself), else [`factor`] of the time since it began.
    pub fn factor(&self, now: u64, params: &SlowStartParams) -> f64 {
        let start = self.start.load(Ordering::Acquire);
        if start == 0 {
            return 1.0;
        }
        let t = now.saturating_sub(start);
        if t >= params.window_ms {
            // Loses to a concurrent `begin`, which must stand.
            let _ = self
                .start
                .compare_exchange(start, 0, Ordering::AcqRel, Ordering::Relaxed);
            return 1.0;
        }
        factor(t, params)
    }

    /// The node's weight at `now`: `weight × factor`, rounded to the nearest integer, within
    /// `[1, weight]` (0 for weight 0).
    pub fn effective_weight(&self, weight: u32, now: u64, params: &SlowStartParams) -> u32 {
        let f = self.factor(now, params);
        if weight == 0 || f >= 1.0 {
            return weight;
        }
        // In [0, weight] because f is in (0, 1); the cast saturates in any case.
        let w = (f64::from(weight) * f).round() as u32;
        w.clamp(1, weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(window_ms: u64, aggression: f64, min_weight_percent: u32) -> SlowStartParams {
        SlowStartParams {
            window_ms,
            aggression,
            min_weight_percent,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn linear_ramp() {
        let q = p(1000, 1.0, 0);
        assert_eq!(
            factor(0, &q),
            f64::MIN_POSITIVE,
            "above 0 even with no floor"
        );
        assert!(close(factor(500, &q), 0.5));
        assert!(close(factor(250, &q), 0.25));
        assert_eq!(factor(1000, &q), 1.0);
        assert_eq!(factor(5000, &q), 1.0);
    }

    #[test]
    fn aggression_2_is_a_square_root() {
        let q = p(1000, 2.0, 0);
        assert!(close(factor(500, &q), 0.5f64.sqrt()));
        assert!(close(factor(250, &q), 0.5));
        assert_eq!(factor(1000, &q), 1.0);
        let slow = p(1000, 0.5, 0);
        assert!(close(factor(500, &slow), 0.25));
    }

    #[test]
    fn the_floor_holds_until_the_ramp_passes_it() {
        let q = p(1000, 1.0, 10);
        assert!(close(factor(0, &q), 0.1));
        assert!(close(factor(50, &q), 0.1));
        assert!(close(factor(100, &q), 0.1));
        assert!(close(factor(200, &q), 0.2));
        assert_eq!(factor(0, &p(1000, 1.0, 100)), 1.0);
        assert_eq!(factor(0, &p(1000, 1.0, 500)), 1.0, "above 100 acts as 100");
    }

    #[test]
    fn odd_parameters_are_tamed() {
        for a in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(close(factor(500, &p(1000, a, 0)), 0.5), "{a}");
        }
        assert_eq!(factor(0, &p(0, 1.0, 0)), 1.0, "window 0: no ramp");
        let tiny = factor(1, &p(1000, 1e-6, 0));
        assert!(tiny > 0.0 && tiny <= 1.0);
    }

    #[test]
    fn a_node_not_ramping_weighs_its_weight() {
        let s = SlowStart::new();
        let q = p(1000, 1.0, 10);
        assert_eq!(s.factor(0, &q), 1.0);
        assert_eq!(s.effective_weight(7, 0, &q), 7);
        assert_eq!(s.ramp_started_ms(), None);
    }

    #[test]
    fn a_ramp_runs_its_window_then_clears_itself() {
        let q = p(1000, 1.0, 10);
        let s = SlowStart::starting_at(5000);
        assert_eq!(s.ramp_started_ms(), Some(5000));
        assert_eq!(s.effective_weight(100, 5000, &q), 10);
        assert_eq!(s.effective_weight(100, 5500, &q), 50);
        assert_eq!(s.effective_weight(100, 5999, &q), 100);
        assert_eq!(s.effective_weight(1, 5000, &q), 1, "never below 1");
        assert_eq!(s.effective_weight(0, 5000, &q), 0);
        assert_eq!(s.ramp_started_ms(), Some(5000));
        assert_eq!(s.factor(6000, &q), 1.0);
        assert_eq!(s.ramp_started_ms(), None, "cleared");
        // Back from an ejection: ramps again.
        s.begin(9000);
        assert!(close(s.factor(9250, &q), 0.25));
        s.end();
        assert_eq!(s.factor(9250, &q), 1.0);
        // A clock before the start (or at 0) is t = 0.
        s.begin(0);
        assert_eq!(s.ramp_started_ms(), Some(1));
        assert!(close(s.factor(0, &q), 0.1));
    }

    proptest! {
        #[test]
        fn factor_is_bounded_and_non_decreasing(
            a in 0u64..20_000, b in 0u64..20_000,
            window in 0u64..10_000,
            aggression in prop_oneof![0.01f64..20.0, Just(1.0), Just(0.0), Just(f64::NAN)],
            min in 0u32..150,
        ) {
            let q = p(window, aggression, min);
            let (lo, hi) = (a.min(b), a.max(b));
            let (flo, fhi) = (factor(lo, &q), factor(hi, &q));
            prop_assert!(flo > 0.0 && flo <= 1.0);
            prop_assert!(fhi > 0.0 && fhi <= 1.0);
            prop_assert!(flo <= fhi, "{} at {} > {} at {}", flo, lo, fhi, hi);
            if hi >= window {
                prop_assert_eq!(fhi, 1.0);
            }
        }

        #[test]
        fn effective_weight_is_bounded_and_non_decreasing(
            weight in 0u32..100_000, a in 0u64..3000, b in 0u64..3000,
            aggression in 0.1f64..10.0, min in 0u32..=100,
        ) {
            let q = p(2000, aggression, min);
            let s = SlowStart::starting_at(1);
            let (lo, hi) = (a.min(b), a.max(b));
            let wlo = s.effective_weight(weight, 1 + lo, &q);
            let s = SlowStart::starting_at(1);
            let whi = s.effective_weight(weight, 1 + hi, &q);
            prop_assert!(wlo <= whi);
            prop_assert!(whi <= weight);
            if weight >= 1 {
                prop_assert!(wlo >= 1);
            }
        }
    }
}
