//! `least_conn` (docs/algorithms.md): the lowest `(in_flight + 1) / weight` wins, compared
//! exactly; ties go to the first tied node after the level's previous pick.
//!
//! A pick scans the whole level, so it reads the counts from a mirror (node.rs): one contiguous
//! array per level that the nodes' in-flight guards keep up to date, rather than one
//! `NodeState` per node. The counts themselves stay in each node's `NodeState` (shared through
//! the state table, so they survive reloads); the mirror only follows them.
//!
//! When every positive weight, divided by their greatest common divisor, is below 2^16 (the
//! usual case), each slot holds the node's **cost key** `((load) << 32) / w` with
//! `load = min(in_flight, 2^32 - 2) + 1`: the keys order exactly as the costs `load / w` (two
//! distinct costs with weights below 2^16 differ by more than 2^-32, so their scaled floors
//! differ; equal costs give equal keys), and a pick is a minimum over one array of integers.
//! Otherwise the slots hold the counts and costs are compared as `load_a · w_b < load_b · w_a`.
//! Weight-0 nodes count only when no positive-weight node is eligible (infinite cost): then the
//! lowest count wins, read from the nodes themselves.

use crate::node::{Encoding, Mirror, NodeState, LOAD_CAP};
use crate::pad::Padded;
use crate::selection::{BackendNode, Eligible, FromBackends, LevelSelector, SelectionConfig};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Reduced weights below this compare by cost key (see the module documentation).
const KEY_WEIGHT_LIMIT: u64 = 1 << 16;

#[derive(Debug)]
pub struct LeastConn {
    weights: Box<[u64]>,
    nodes: Box<[Arc<NodeState>]>,
    /// Cost keys (`keyed`) or counts, one slot per node, fed by the nodes' guards.
    mirror: Arc<Mirror>,
    keyed: bool,
    /// The previous pick, for the rotating tie-break: written by every pick, alone on its line.
    last: Padded<AtomicUsize>,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The least of 8 keys, as a tree (three dependent steps, not seven).
#[inline(always)]
fn min8(v: &[u64; 8]) -> u64 {
    let (a, b) = (v[0].min(v[1]), v[2].min(v[3]));
    let (c, d) = (v[4].min(v[5]), v[6].min(v[7]));
    a.min(b).min(c.min(d))
}

impl LeastConn {
    /// Nodes in order with their weights and shared state.
    pub fn new(nodes: &[(u64, Arc<NodeState>)]) -> Self {
        let weights: Box<[u64]> = nodes.iter().map(|(w, _)| *w).collect();
        let g = weights.iter().copied().fold(0, gcd).max(1);
        let keyed = weights.iter().all(|w| w / g < KEY_WEIGHT_LIMIT);
        let encodings = weights
            .iter()
            .map(|&w| match (keyed, w) {
                (false, _) => Encoding::Count,
                (true, 0) => Encoding::Max,
                (true, w) => Encoding::CostKey(w / g),
            })
            .collect();
        let mirror = Arc::new(Mirror::new(encodings));
        for (i, (_, node)) in nodes.iter().enumerate() {
            node.attach(&mirror, i);
        }
        LeastConn {
            weights,
            nodes: nodes.iter().map(|(_, n)| Arc::clone(n)).collect(),
            mirror,
            keyed,
            last: Padded(AtomicUsize::new(nodes.len().saturating_sub(1))),
        }
    }

    /// The first eligible node with the lowest cost key, walking from `start` round the level.
    /// Keys are read in blocks of 8: a block whose minimum is not below the best so far (the
    /// common case) costs 8 loads, a tree of minimums and one branch; the predicate is asked
    /// only of a node that would become the best.
    fn by_key<F: Fn(usize) -> bool>(&self, start: usize, eligible: F) -> Option<usize> {
        let keys = self.mirror.slots();
        let (mut best_key, mut best) = (u64::MAX, usize::MAX);
        let (tail, head) = (
            keys.get(start..).unwrap_or(&[]),
            &keys[..start.min(keys.len())],
        );
        for (base, part) in [(start, tail), (0, head)] {
            let mut blocks = part.chunks_exact(8);
            let mut at = base;
            for block in &mut blocks {
                let v: [u64; 8] = std::array::from_fn(|j| block[j].load(Ordering::Relaxed));
                if min8(&v) < best_key {
                    for (j, &k) in v.iter().enumerate() {
                        if k < best_key && eligible(at + j) {
                            (best_key, best) = (k, at + j);
                        }
                    }
                }
                at += 8;
            }
            for (j, slot) in blocks.remainder().iter().enumerate() {
                let k = slot.load(Ordering::Relaxed);
                if k < best_key && eligible(at + j) {
                    (best_key, best) = (k, at + j);
                }
            }
        }
        // Weight-0 nodes hold u64::MAX and positive ones never do: MAX means none eligible.
        (best_key != u64::MAX).then_some(best)
    }

    /// The first strictly cheapest eligible positive-weight node from `start` round the level,
    /// costs compared by cross-multiplication (`load_a · w_b < load_b · w_a`) over the mirror's
    /// counts. Four lanes each keep the first best of every fourth node, so that consecutive
    /// nodes' comparisons do not wait on each other; the lanes are then merged by cost, ties
    /// to the earliest position. A weight-0 node never wins (its cost compares as infinite).
    fn by_ratio<F: Fn(usize) -> bool>(&self, start: usize, eligible: F) -> Option<usize> {
        let n = self.weights.len();
        let counts: &[AtomicU64] = self.mirror.slots();
        // Per lane: the best (load, weight, position from `start`); (1, 0) is an infinite
        // cost. Loads and weights are below 2^32, so products fit in 64 bits.
        let mut lanes = [(1u64, 0u64, usize::MAX); 4];
        let mut pos = 0;
        for range in [start..n, 0..start] {
            let (Some(ws), Some(cs)) = (self.weights.get(range.clone()), counts.get(range.clone()))
            else {
                continue;
            };
            let (mut wb, mut cb) = (ws.chunks_exact(4), cs.chunks_exact(4));
            let mut at = range.start;
            for (w4, c4) in (&mut wb).zip(&mut cb) {
                for (j, lane) in lanes.iter_mut().enumerate() {
                    let w = w4[j].min(LOAD_CAP);
                    let load = c4[j].load(Ordering::Relaxed).min(LOAD_CAP - 1) + 1;
                    if load * lane.1 < lane.0 * w && eligible(at + j) {
                        *lane = (load, w, pos + j);
                    }
                }
                at += 4;
                pos += 4;
            }
            // The rest in lane 0, after every position it holds: strict `<` keeps the first.
            for (w, c) in wb.remainder().iter().zip(cb.remainder()) {
                let w = (*w).min(LOAD_CAP);
                let load = c.load(Ordering::Relaxed).min(LOAD_CAP - 1) + 1;
                if load * lanes[0].1 < lanes[0].0 * w && eligible(at) {
                    lanes[0] = (load, w, pos);
                }
                at += 1;
                pos += 1;
            }
        }
        let mut best = lanes[0];
        for lane in &lanes[1..] {
            let (a, b) = (lane.0 * best.1, best.0 * lane.1);
            if a < b || (a == b && lane.2 < best.2) {
                best = *lane;
            }
        }
        if best.1 == 0 {
            return None; // no eligible positive-weight node
        }
        let tail = n - start;
        Some(if best.2 < tail {
            start + best.2
        } else {
            best.2 - tail
        })
    }

    /// Among weight-0 nodes (every cost infinite): the first eligible one with the lowest
    /// count from `start` round the level, counts read from the nodes (the rare last resort).
    fn zero_weight<F: Fn(usize) -> bool>(&self, start: usize, eligible: F) -> Option<usize> {
        let n = self.weights.len();
        let mut best: Option<(usize, u64)> = None;
        for i in (start..n).chain(0..start) {
            if self.weights.get(i).is_none_or(|&w| w != 0) {
                continue;
            }
            let count = self.nodes.get(i).map_or(u64::MAX, |s| s.in_flight());
            if best.is_none_or(|(_, b)| count < b) && eligible(i) {
                best = Some((i, count));
            }
        }
        best.map(|(i, _)| i)
    }

    fn pick<F: Fn(usize) -> bool + Copy>(&self, eligible: F) -> Option<usize> {
        let n = self.weights.len();
        if n == 0 {
            return None;
        }
        let last = self.last.load(Ordering::Relaxed);
        let start = if last + 1 >= n { 0 } else { last + 1 };
        let positive = if self.keyed {
            self.by_key(start, eligible)
        } else {
            self.by_ratio(start, eligible)
        };
        positive.or_else(|| self.zero_weight(start, eligible))
    }
}

impl Drop for LeastConn {
    fn drop(&mut self) {
        for (i, node) in self.nodes.iter().enumerate() {
            node.detach(&self.mirror, i);
        }
    }
}

/// For `LoadBalancer<Selection<LeastConn>>`: weights and the backends' shared state, whose
/// in-flight counts the caller keeps with [`Attempt`](crate::Attempt) guards.
impl FromBackends for LeastConn {
    fn from_backends(nodes: &[BackendNode<'_>], _config: &SelectionConfig) -> Self {
        let nodes: Vec<(u64, Arc<NodeState>)> = nodes
            .iter()
            .map(|n| (n.weight(), Arc::clone(n.state)))
            .collect();
        LeastConn::new(&nodes)
    }
}

impl LevelSelector for LeastConn {
    fn select(&self, _key: &[u8], eligible: Eligible<'_>) -> Option<usize> {
        let pick = match eligible {
            Eligible::All => self.pick(|_| true),
            Eligible::Only(f) => self.pick(f),
        }?;
        self.last.store(pick, Ordering::Relaxed);
        Some(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(weights: &[u64]) -> Vec<(u64, Arc<NodeState>)> {
        weights
            .iter()
            .map(|w| (*w, Arc::new(NodeState::default())))
            .collect()
    }

    #[test]
    fn weights_3_and_1_with_concurrent_requests() {
        let ns = nodes(&[3, 1]);
        let lc = LeastConn::new(&ns);
        let mut guards = Vec::new();
        let mut picks = String::new();
        for _ in 0..4 {
            let i = lc.select(b"", Eligible::All).unwrap();
            guards.push(ns[i].1.begin());
            picks.push((b'A' + i as u8) as char);
        }
        assert_eq!(picks, "AABA");
    }

    #[test]
    fn ties_rotate_and_released_counts_count() {
        let ns = nodes(&[1, 1, 1]);
        let lc = LeastConn::new(&ns);
        let seq: Vec<usize> = (0..6)
            .map(|_| lc.select(b"", Eligible::All).unwrap())
            .collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
        let busy = ns[0].1.begin();
        let seq: Vec<usize> = (0..4)
            .map(|_| lc.select(b"", Eligible::All).unwrap())
            .collect();
        assert!(!seq.contains(&0), "{seq:?}");
        drop(busy);
        assert_eq!(ns[0].1.in_flight(), 0);
    }

    #[test]
    fn weight_zero_is_the_last_resort() {
        let ns = nodes(&[0, 2, 0]);
        let lc = LeastConn::new(&ns);
        let _g = ns[1].1.begin();
        let _g2 = ns[1].1.begin();
        assert_eq!(lc.select(b"", Eligible::All), Some(1));
        let _z = ns[0].1.begin();
        assert_eq!(
            lc.select(b"", Eligible::Only(&|i| i != 1)),
            Some(2),
            "lowest count among weight 0"
        );
        assert_eq!(lc.select(b"", Eligible::Only(&|_| false)), None);
    }

    /// The previous algorithm, over the nodes' own counts: the reference the scans must match.
    fn reference(
        weights: &[u64],
        ns: &[(u64, Arc<NodeState>)],
        start: usize,
        eligible: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = weights.len();
        for zero in [false, true] {
            let mut best: Option<(usize, u128)> = None;
            let mut best_w = 1u128;
            for i in (start..n).chain(0..start) {
                let w = weights[i];
                if (w == 0) != zero || !eligible(i) {
                    continue;
                }
                let load = (ns[i].1.in_flight().min(LOAD_CAP - 1) + 1) as u128;
                let w = if zero { 1 } else { w as u128 };
                match best {
                    Some((_, bl)) if load * best_w >= bl * w => {}
                    _ => (best, best_w) = (Some((i, load)), w),
                }
            }
            if let Some((i, _)) = best {
                return Some(i);
            }
        }
        None
    }

    #[test]
    fn keyed_and_ratio_scans_agree_with_exact_costs() {
        let mut rng = fastrand::Rng::with_seed(7);
        let weight_sets: [&[u64]; 4] = [
            &[1, 2, 3],
            &[0, 5, 7, 65_535, 1],
            &[100_000, 65_537, 3, 0],
            &[4_000_000_000, 3_999_999_999, 1],
        ];
        for weights in weight_sets {
            for n in [1usize, 7, 8, 9, 30] {
                let w: Vec<u64> = (0..n).map(|i| weights[i % weights.len()]).collect();
                let ns = nodes(&w);
                let lc = LeastConn::new(&ns);
                let mut guards = Vec::new();
                for _ in 0..200 {
                    let i = rng.usize(..n);
                    if rng.bool() || guards.is_empty() {
                        guards.push(ns[i].1.begin());
                    } else {
                        guards.swap_remove(rng.usize(..guards.len()));
                    }
                    let skip = rng.usize(..n + 1);
                    let only = |i: usize| i != skip;
                    for eligible in [Eligible::All, Eligible::Only(&only)] {
                        let last = lc.last.load(Ordering::Relaxed);
                        let start = (last + 1) % n;
                        let want = reference(&w, &ns, start, &|i| eligible.test(i));
                        assert_eq!(lc.select(b"", eligible), want, "{w:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn mirrors_follow_counts_across_rebuilds() {
        let ns = nodes(&[1, 1]);
        let _busy = ns[0].1.begin();
        let old = LeastConn::new(&ns);
        assert_eq!(old.select(b"", Eligible::All), Some(1));
        // A rebuild (a reload keeping both nodes) sees the count held since before it, and
        // both selectors see the counts that change while both exist.
        let new = LeastConn::new(&[(1, Arc::clone(&ns[0].1)), (1, Arc::clone(&ns[1].1))]);
        let b = ns[1].1.begin();
        let b2 = ns[1].1.begin();
        assert_eq!(new.select(b"", Eligible::All), Some(0));
        assert_eq!(old.select(b"", Eligible::All), Some(0));
        drop(old);
        drop((b, b2));
        assert_eq!(new.select(b"", Eligible::All), Some(1));
        drop(new);
        assert_eq!(ns[0].1.in_flight(), 1);
    }
}
