//! Per-node state shared by every thread and route using an upstream: the in-flight count with
//! the guard that holds it, and the peak-EWMA latency estimate (docs/algorithms.md).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Decay time constant of the latency estimate.
pub const EWMA_TAU: Duration = Duration::from_secs(10);
/// Estimate of a node never measured: 30 ms, not 0 (a new node is not assumed infinitely fast).
pub const EWMA_DEFAULT: Duration = Duration::from_millis(30);

#[derive(Debug, Clone, Copy)]
struct Ewma {
    /// Estimate in seconds.
    est: f64,
    stamp: Instant,
}

/// Process-wide origin of EWMA time stamps.
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

fn nanos_since_epoch(t: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(|| t);
    t.saturating_duration_since(epoch).as_nanos() as u64
}

/// State of one node of one upstream. It lives as long as a configuration snapshot (or an
/// in-flight request) references it, so it survives reloads that keep the node.
#[derive(Debug)]
pub struct NodeState {
    in_flight: AtomicU64,
    /// A per-node lock: every sample is applied (never a try-lock), contention is per node.
    ewma: Mutex<Ewma>,
    /// Copies of the estimate (f64 bits) and its stamp (ns since `EPOCH`), written under the
    /// lock, read without it by pickers (a read racing a write may pair an old stamp with a
    /// new estimate for one pick, which only nudges one comparison).
    est_bits: AtomicU64,
    stamp_ns: AtomicU64,
}

impl Default for NodeState {
    fn default() -> Self {
        Self::new_at(Instant::now())
    }
}

fn decay(elapsed: Duration) -> f64 {
    (-elapsed.as_secs_f64() / EWMA_TAU.as_secs_f64()).exp()
}

impl NodeState {
    /// A node first seen at `now`.
    pub fn new_at(now: Instant) -> Self {
        NodeState {
            in_flight: AtomicU64::new(0),
            ewma: Mutex::new(Ewma {
                est: EWMA_DEFAULT.as_secs_f64(),
                stamp: now,
            }),
            est_bits: AtomicU64::new(EWMA_DEFAULT.as_secs_f64().to_bits()),
            stamp_ns: AtomicU64::new(nanos_since_epoch(now)),
        }
    }

    /// Attempts dispatched to this node and not yet finished.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Count one attempt in flight until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Record a latency sample (peak EWMA: a sample above the estimate replaces it at once).
    pub fn observe(&self, sample: Duration) {
        self.observe_at(sample, Instant::now());
    }

    pub fn observe_at(&self, sample: Duration, now: Instant) {
        let s = sample.as_secs_f64();
        let mut e = self.ewma.lock().unwrap_or_else(|p| p.into_inner());
        let w = decay(now.saturating_duration_since(e.stamp));
        e.stamp = now.max(e.stamp);
        e.est = if s > e.est {
            s
        } else {
            e.est * w + s * (1.0 - w)
        };
        self.est_bits.store(e.est.to_bits(), Ordering::Relaxed);
        self.stamp_ns
            .store(nanos_since_epoch(e.stamp), Ordering::Relaxed);
    }

    /// Whether `self` costs less than `other` right now: `decayed × (in_flight + 1) / weight`
    /// compared without reading the clock, since both decay by the same factor from a common
    /// time: `est_a·e^{(s_a − s_b)/τ}·(n_a + 1)·w_b < est_b·(n_b + 1)·w_a`.
    pub fn ewma_cheaper_than(&self, w_self: u64, other: &NodeState, w_other: u64) -> bool {
        let (ea, sa) = (
            f64::from_bits(self.est_bits.load(Ordering::Relaxed)),
            self.stamp_ns.load(Ordering::Relaxed),
        );
        let (eb, sb) = (
            f64::from_bits(other.est_bits.load(Ordering::Relaxed)),
            other.stamp_ns.load(Ordering::Relaxed),
        );
        let dt = (sa as f64 - sb as f64) / 1e9 / EWMA_TAU.as_secs_f64();
        let lhs = ea * dt.exp() * (self.in_flight() + 1) as f64 * w_other.max(1) as f64;
        let rhs = eb * (other.in_flight() + 1) as f64 * w_self.max(1) as f64;
        lhs < rhs
    }

    /// The estimate decayed to `now`, in seconds.
    pub fn ewma_at(&self, now: Instant) -> f64 {
        let e = *self.ewma.lock().unwrap_or_else(|p| p.into_inner());
        e.est * decay(now.saturating_duration_since(e.stamp))
    }

    /// Peak-EWMA cost: decayed estimate × (in_flight + 1) / weight.
    pub fn ewma_cost_at(&self, now: Instant, weight: u64) -> f64 {
        self.ewma_at(now) * (self.in_flight() + 1) as f64 / weight.max(1) as f64
    }
}

/// One attempt in flight on a node; dropping it releases the count. Holding the counter itself
/// (not an index) keeps counts right across reloads.
#[derive(Debug)]
pub struct InFlight(Arc<NodeState>);

impl InFlight {
    pub fn node(&self) -> &Arc<NodeState> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_counts() {
        let n = Arc::new(NodeState::default());
        let a = n.begin();
        let b = n.begin();
        assert_eq!(n.in_flight(), 2);
        drop(a);
        assert_eq!(n.in_flight(), 1);
        drop(b);
        assert_eq!(n.in_flight(), 0);
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn peak_ewma_exact_estimates() {
        let t0 = Instant::now();
        let n = NodeState::new_at(t0);
        assert!(close(n.ewma_at(t0), 0.030));
        // Idle estimates decay toward 0 with tau = 10 s.
        assert!(close(
            n.ewma_at(t0 + Duration::from_secs(10)),
            0.030 * (-1f64).exp()
        ));
        // A sample above the estimate replaces it at once (peak).
        n.observe_at(Duration::from_millis(500), t0 + Duration::from_secs(1));
        assert!(close(n.ewma_at(t0 + Duration::from_secs(1)), 0.5));
        // A lower sample blends with weight exp(-dt / tau).
        let t2 = t0 + Duration::from_secs(6);
        n.observe_at(Duration::from_millis(100), t2);
        let w = (-0.5f64).exp();
        assert!(close(n.ewma_at(t2), 0.5 * w + 0.1 * (1.0 - w)));
        // Cost multiplies by in-flight + 1 and divides by weight.
        let n = Arc::new(n);
        let _g = n.begin();
        let est = n.ewma_at(t2);
        assert!(close(n.ewma_cost_at(t2, 4), est * 2.0 / 4.0));
    }

    #[test]
    fn clock_free_comparison_agrees_with_costs() {
        let t0 = Instant::now();
        let a = Arc::new(NodeState::new_at(t0));
        let b = Arc::new(NodeState::new_at(t0));
        a.observe_at(Duration::from_millis(80), t0);
        b.observe_at(Duration::from_millis(50), t0 + Duration::from_secs(3));
        let later = t0 + Duration::from_secs(20);
        for (wa, wb) in [(1, 1), (1, 2), (5, 1)] {
            let by_cost = a.ewma_cost_at(later, wa) < b.ewma_cost_at(later, wb);
            assert_eq!(a.ewma_cheaper_than(wa, &b, wb), by_cost, "{wa} {wb}");
        }
    }
}
