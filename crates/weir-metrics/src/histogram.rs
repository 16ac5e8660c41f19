//! [`Histogram`]: a fixed-bucket latency histogram of atomics.
//!
//! Invariant: `count` equals the sum of the per-bucket counts once every concurrent
//! [`observe`](Histogram::observe) has returned (each increments exactly one bucket and the
//! count). A scrape that races observations may see a bucket incremented before the count; it
//! derives the exposed `_count` from the buckets, so the exposition is always consistent
//! (`+Inf` bucket == `_count`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The bucket upper bounds, in milliseconds (APISIX's Prometheus plugin's).
pub const LATENCY_BUCKETS_MS: [f64; 15] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0,
    60000.0,
];

/// The same bounds in microseconds, for the integer comparison in `observe`.
const BOUNDS_US: [u64; 15] = [
    1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000,
    5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

const SLOTS: usize = LATENCY_BUCKETS_MS.len() + 1;

/// A latency histogram with [`LATENCY_BUCKETS_MS`] (and `+Inf`). Two relaxed atomic adds per
/// observation.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per-bucket (not cumulative) counts; the last is `+Inf`.
    buckets: [AtomicU64; SLOTS],
    /// Sum of observations in microseconds.
    sum_us: AtomicU64,
}

/// A point-in-time copy of a [`Histogram`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HistogramSnapshot {
    /// Per-bucket counts; the last is `+Inf`.
    pub buckets: [u64; SLOTS],
    pub sum_us: u64,
}

impl Histogram {
    /// Count one observation of `d`.
    #[inline]
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        // 15 integer comparisons at most: cheaper than a binary search's branches.
        let i = BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut s = HistogramSnapshot {
            sum_us: self.sum_us.load(Ordering::Relaxed),
            ..HistogramSnapshot::default()
        };
        for (o, b) in s.buckets.iter_mut().zip(&self.buckets) {
            *o = b.load(Ordering::Relaxed);
        }
        s
    }
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Add `other`'s counts (aggregating several histograms).
    pub fn add(&mut self, other: &HistogramSnapshot) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }

    /// The `q` quantile in milliseconds, interpolated linearly inside its bucket as
    /// Prometheus' `histogram_quantile` does; `None` without observations. A quantile in the
    /// `+Inf` bucket is the largest finite bound.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut seen = 0u64;
        for (i, &n) in self.buckets.iter().enumerate() {
            if n > 0 && (seen + n) as f64 >= rank {
                let Some(&hi) = LATENCY_BUCKETS_MS.get(i) else {
                    return Some(LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1]);
                };
                let lo = if i == 0 {
                    0.0
                } else {
                    LATENCY_BUCKETS_MS[i - 1]
                };
                let within = (rank - seen as f64) / n as f64;
                return Some(lo + (hi - lo) * within);
            }
            seen += n;
        }
        Some(LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_inclusive_upper_bounds() {
        let h = Histogram::default();
        for ms in [0, 1, 2, 3, 60_000, 60_001] {
            h.observe(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert_eq!(s.buckets[0], 2, "0 and 1 ms are <= 1");
        assert_eq!(s.buckets[1], 1, "2 ms");
        assert_eq!(s.buckets[2], 1, "3 ms is <= 5");
        assert_eq!(s.buckets[14], 1, "60 s");
        assert_eq!(s.buckets[15], 1, "+Inf");
        assert_eq!(s.count(), 6);
        assert_eq!(s.sum_us, (1 + 2 + 3 + 60_000 + 60_001) * 1000);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let h = Histogram::default();
        assert_eq!(h.snapshot().quantile_ms(0.99), None);
        for _ in 0..100 {
            h.observe(Duration::from_micros(1500)); // (1, 2] ms
        }
        let q = h.snapshot().quantile_ms(0.5).unwrap_or_default();
        assert!((q - 1.5).abs() < 1e-9, "{q}");
        h.observe(Duration::from_secs(100));
        assert_eq!(h.snapshot().quantile_ms(1.0), Some(60000.0));
    }

    proptest::proptest! {
        #[test]
        fn count_is_the_number_of_observations(us in proptest::collection::vec(0u64..100_000_000, 0..200)) {
            let h = Histogram::default();
            for &u in &us {
                h.observe(Duration::from_micros(u));
            }
            let s = h.snapshot();
            proptest::prop_assert_eq!(s.count(), us.len() as u64);
            proptest::prop_assert_eq!(s.sum_us, us.iter().sum::<u64>());
            for (i, &n) in s.buckets.iter().enumerate() {
                let lo = if i == 0 { 0 } else { BOUNDS_US[i - 1] + 1 };
                let hi = BOUNDS_US.get(i).copied().unwrap_or(u64::MAX);
                let want = us.iter().filter(|&&u| u >= lo && u <= hi).count() as u64;
                proptest::prop_assert_eq!(n, want);
            }
        }
    }
}
