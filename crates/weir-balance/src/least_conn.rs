//! `least_conn` (docs/algorithms.md): the lowest `(in_flight + 1) / weight` wins, compared
//! exactly in integers; ties go to the first tied node after the level's previous pick.

use crate::node::NodeState;
use crate::selection::{BackendNode, Eligible, FromBackends, LevelSelector, SelectionConfig};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug)]
pub struct LeastConn {
    weights: Box<[u64]>,
    nodes: Box<[Arc<NodeState>]>,
    /// The previous pick, for the rotating tie-break.
    last: AtomicUsize,
}

impl LeastConn {
    /// Nodes in order with their weights and shared state.
    pub fn new(nodes: &[(u64, Arc<NodeState>)]) -> Self {
        LeastConn {
            weights: nodes.iter().map(|(w, _)| *w).collect(),
            nodes: nodes.iter().map(|(_, n)| Arc::clone(n)).collect(),
            last: AtomicUsize::new(nodes.len().saturating_sub(1)),
        }
    }

    /// Walk all nodes starting after the previous pick; keep the first strictly best. Generic
    /// over the predicate so the all-eligible walk compiles to a tight loop.
    fn best<F: Fn(usize) -> bool>(&self, eligible: F, zero_weight: bool) -> Option<usize> {
        let n = self.weights.len();
        if n == 0 {
            return None;
        }
        let start = (self.last.load(Ordering::Relaxed) + 1) % n;
        // (index, in_flight + 1, weight); scores compared as (a + 1) * w_b < (b + 1) * w_a.
        // Weights are < 2^32 (validated) and counts are capped at 2^32, so the products fit
        // in 64 bits: exact for any realistic number of requests in flight.
        let mut best: Option<(usize, u64, u64)> = None;
        for range in [start..n, 0..start] {
            let ws = &self.weights[range.clone()];
            let ns = &self.nodes[range.clone()];
            for (off, (&w, node)) in ws.iter().zip(ns.iter()).enumerate() {
                let i = range.start + off;
                if (w == 0) != zero_weight || !eligible(i) {
                    continue;
                }
                let load = node.in_flight().min(u32::MAX as u64 - 1) + 1;
                // Weight-0 nodes: every score is infinite, so the lowest count wins.
                let w = if zero_weight {
                    1
                } else {
                    w.min(u32::MAX as u64)
                };
                match best {
                    Some((_, bl, bw)) if load * bw >= bl * w => {}
                    _ => best = Some((i, load, w)),
                }
            }
        }
        best.map(|(i, _, _)| i)
    }

    fn pick<F: Fn(usize) -> bool + Copy>(&self, eligible: F) -> Option<usize> {
        self.best(eligible, false)
            .or_else(|| self.best(eligible, true))
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
}
