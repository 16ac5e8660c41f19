//! Per-node state shared by every thread and route using an upstream: the in-flight count with
//! the guard that holds it, and the peak-EWMA latency estimate (docs/algorithms.md).
//!
//! # Mirrors
//!
//! The count in [`NodeState`] is the source of truth (`in_flight()`, metrics, limits, every
//! algorithm). A selector that scans a whole level per pick (`least_conn`) would chase one
//! `NodeState` per node; instead it registers a `Mirror`: one contiguous array for the level,
//! one slot per node, holding a value derived from the node's count (for `least_conn`, a sort
//! key). Every change of the count (an [`InFlight`] guard created or dropped) rewrites the
//! node's slot in every mirror registered on it, so a pick reads one cache-friendly array.
//!
//! A slot is written from the count read just before the write, then the count is read again
//! and the slot rewritten if it changed meanwhile. With sequentially consistent operations the
//! last write to a slot therefore reflects the last change of the count: once changes stop,
//! every slot matches its count exactly (while they race, a pick may see a count one change
//! behind, as any reader of a changing count does). A new mirror is added to the node's list
//! before the node's `mirrored` count is raised and its slot first written the same way; a
//! count change reads `mirrored` before the list, so a change that misses a new mirror came
//! before that first write read the count. Mirrors come and go with selectors (built when a
//! snapshot compiles, dropped with it): a reload that keeps a node keeps its count, and every
//! mirror of the node, the old level's and the new one's, follows it.

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A value derived from an in-flight count, stored in a [`Mirror`] slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// The count itself.
    Count,
    /// `least_conn`'s sort key for a node of (reduced) weight `w` > 0:
    /// `((min(count, 2^32 - 2) + 1) << 32) / w` (see `least_conn`).
    CostKey(u64),
    /// Never picked by key (weight 0): `u64::MAX`, whatever the count.
    Max,
}

impl Encoding {
    #[inline]
    pub(crate) fn encode(self, count: u64) -> u64 {
        match self {
            Encoding::Count => count,
            Encoding::CostKey(w) => ((count.min(LOAD_CAP - 1) + 1) << 32) / w.max(1),
            Encoding::Max => u64::MAX,
        }
    }
}

/// Counts are compared as `min(count, LOAD_CAP - 1) + 1`, so that products of a load and a
/// weight (both below 2^32) fit in 64 bits.
pub(crate) const LOAD_CAP: u64 = u32::MAX as u64;

/// A contiguous array of values derived from the in-flight counts of a level's nodes, kept up
/// to date by the nodes' guards (see the module documentation).
#[derive(Debug)]
pub(crate) struct Mirror {
    slots: Box<[AtomicU64]>,
    encodings: Box<[Encoding]>,
}

impl Mirror {
    /// A mirror with one slot per encoding, every slot at the value of a count of 0 until
    /// [`NodeState::attach`] writes it.
    pub(crate) fn new(encodings: Vec<Encoding>) -> Self {
        Mirror {
            slots: encodings
                .iter()
                .map(|e| AtomicU64::new(e.encode(0)))
                .collect(),
            encodings: encodings.into(),
        }
    }

    /// The slots, in node order: what a pick scans (relaxed loads).
    #[inline]
    pub(crate) fn slots(&self) -> &[AtomicU64] {
        &self.slots
    }

    /// Make slot `index` follow `count` (see the module documentation).
    fn sync(&self, index: usize, count: &AtomicU64) {
        let (Some(slot), Some(enc)) = (self.slots.get(index), self.encodings.get(index)) else {
            return;
        };
        loop {
            let v = count.load(Ordering::SeqCst);
            slot.store(enc.encode(v), Ordering::SeqCst);
            if count.load(Ordering::SeqCst) == v {
                return;
            }
        }
    }
}

/// One slot of one mirror that a node's count feeds.
#[derive(Debug, Clone)]
struct MirrorSlot {
    mirror: Arc<Mirror>,
    index: usize,
}

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
///
/// Laid out so that what pickers and guards touch (count, estimate copies, mirror list) shares
/// one cache line, the node's own: nodes picked or counted by different threads never share a
/// line, and the lock written by latency samples lies beyond it.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct NodeState {
    in_flight: AtomicU64,
    /// Copies of the estimate (f64 bits) and its stamp (ns since `EPOCH`), written under the
    /// lock, read without it by pickers (a read racing a write may pair an old stamp with a
    /// new estimate for one pick, which only nudges one comparison).
    est_bits: AtomicU64,
    stamp_ns: AtomicU64,
    /// How many mirrors are registered: read by every count change before `mirrors` (the
    /// ordering point of registration, see the module documentation); 0 for a node no
    /// `least_conn` level holds, which then skips `mirrors`.
    mirrored: AtomicUsize,
    mirrors: ArcSwap<Vec<MirrorSlot>>,
    /// A per-node lock: every sample is applied (never a try-lock), contention is per node.
    ewma: Mutex<Ewma>,
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
            est_bits: AtomicU64::new(EWMA_DEFAULT.as_secs_f64().to_bits()),
            stamp_ns: AtomicU64::new(nanos_since_epoch(now)),
            mirrored: AtomicUsize::new(0),
            mirrors: ArcSwap::from_pointee(Vec::new()),
            ewma: Mutex::new(Ewma {
                est: EWMA_DEFAULT.as_secs_f64(),
                stamp: now,
            }),
        }
    }

    /// Attempts dispatched to this node and not yet finished.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Count one attempt in flight until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.count_changed();
        InFlight(Arc::clone(self))
    }

    /// Rewrite this node's slot in every registered mirror.
    #[inline]
    fn count_changed(&self) {
        if self.mirrored.load(Ordering::SeqCst) == 0 {
            return;
        }
        for m in self.mirrors.load().iter() {
            m.mirror.sync(m.index, &self.in_flight);
        }
    }

    /// Register slot `index` of `mirror` to follow this node's count, and write it.
    pub(crate) fn attach(&self, mirror: &Arc<Mirror>, index: usize) {
        self.mirrors.rcu(|list| {
            let mut list = Vec::clone(list);
            list.push(MirrorSlot {
                mirror: Arc::clone(mirror),
                index,
            });
            list
        });
        self.mirrored.fetch_add(1, Ordering::SeqCst);
        mirror.sync(index, &self.in_flight);
    }

    /// Stop feeding slot `index` of `mirror` (its selector is gone).
    pub(crate) fn detach(&self, mirror: &Arc<Mirror>, index: usize) {
        let mut removed = false;
        self.mirrors.rcu(|list| {
            let mut list = Vec::clone(list);
            let before = list.len();
            list.retain(|m| !(Arc::ptr_eq(&m.mirror, mirror) && m.index == index));
            removed = list.len() < before;
            list
        });
        if removed {
            self.mirrored.fetch_sub(1, Ordering::SeqCst);
        }
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
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.count_changed();
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

    #[test]
    fn mirrors_equal_counts_once_changes_stop() {
        // Guards come and go on four threads while mirrors are attached and detached: when
        // everything stops, every attached slot holds its node's count exactly.
        let nodes: Vec<Arc<NodeState>> = (0..3).map(|_| Arc::new(NodeState::default())).collect();
        let enc = || vec![Encoding::CostKey(1), Encoding::Count, Encoding::CostKey(3)];
        let keep = Arc::new(Mirror::new(enc()));
        for (i, n) in nodes.iter().enumerate() {
            n.attach(&keep, i);
        }
        let held: Vec<Vec<InFlight>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|t| {
                    let nodes = &nodes;
                    s.spawn(move || {
                        let mut rng = fastrand::Rng::with_seed(t);
                        let mut held = Vec::new();
                        for _ in 0..20_000 {
                            if rng.bool() || held.is_empty() {
                                held.push(nodes[rng.usize(..3)].begin());
                            } else {
                                held.swap_remove(rng.usize(..held.len()));
                            }
                        }
                        held
                    })
                })
                .collect();
            let nodes = &nodes;
            s.spawn(move || {
                for _ in 0..500 {
                    let m = Arc::new(Mirror::new(enc()));
                    for (i, n) in nodes.iter().enumerate() {
                        n.attach(&m, i);
                    }
                    for (i, n) in nodes.iter().enumerate() {
                        n.detach(&m, i);
                    }
                }
            });
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        for (i, n) in nodes.iter().enumerate() {
            assert_eq!(n.mirrors.load().len(), 1);
            let want = keep.encodings[i].encode(n.in_flight());
            assert_eq!(keep.slots()[i].load(Ordering::SeqCst), want, "node {i}");
        }
        assert!(nodes.iter().any(|n| n.in_flight() > 0));
        drop(held);
        for (i, n) in nodes.iter().enumerate() {
            assert_eq!(n.in_flight(), 0);
            let want = keep.encodings[i].encode(0);
            assert_eq!(keep.slots()[i].load(Ordering::SeqCst), want, "node {i}");
        }
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
