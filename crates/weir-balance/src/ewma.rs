//! `ewma` (docs/algorithms.md): peak EWMA with power of two choices. Two distinct eligible
//! nodes are drawn at random; the lower `decayed estimate × (in_flight + 1) / weight` wins
//! (equal: the first drawn). O(1) per pick when most nodes are eligible.

use crate::node::NodeState;
use crate::selection::{BackendNode, Eligible, FromBackends, LevelSelector, SelectionConfig};
use std::sync::Arc;

#[derive(Debug)]
pub struct PeakEwma {
    weights: Box<[u64]>,
    nodes: Box<[Arc<NodeState>]>,
}

impl PeakEwma {
    pub fn new(nodes: &[(u64, Arc<NodeState>)]) -> Self {
        PeakEwma {
            weights: nodes.iter().map(|(w, _)| *w).collect(),
            nodes: nodes.iter().map(|(_, n)| Arc::clone(n)).collect(),
        }
    }

    /// A random node of the class (`zero_weight` or positive) that is eligible, other than
    /// `not`. Draws at random a few times, then falls back to a rank draw over a scan.
    fn draw(&self, eligible: Eligible<'_>, zero: bool, not: Option<usize>) -> Option<usize> {
        let n = self.weights.len();
        let ok = |i: usize| (self.weights[i] == 0) == zero && Some(i) != not && eligible.test(i);
        for _ in 0..4 {
            let i = fastrand::usize(..n);
            if ok(i) {
                return Some(i);
            }
        }
        let count = (0..n).filter(|&i| ok(i)).count();
        if count == 0 {
            return None;
        }
        let rank = fastrand::usize(..count);
        (0..n).filter(|&i| ok(i)).nth(rank)
    }

    fn pick(&self, eligible: Eligible<'_>, zero: bool) -> Option<usize> {
        let a = self.draw(eligible, zero, None)?;
        let Some(b) = self.draw(eligible, zero, Some(a)) else {
            return Some(a);
        };
        if zero {
            return Some(a); // infinite costs are equal: the first drawn wins
        }
        let (wa, wb) = (self.weights[a], self.weights[b]);
        Some(if self.nodes[b].ewma_cheaper_than(wb, &self.nodes[a], wa) {
            b
        } else {
            a
        })
    }
}

/// For `LoadBalancer<Selection<PeakEwma>>`: weights and the backends' shared state, whose
/// in-flight counts and latency samples the caller feeds with [`Attempt`](crate::Attempt).
impl FromBackends for PeakEwma {
    fn from_backends(nodes: &[BackendNode<'_>], _config: &SelectionConfig) -> Self {
        let nodes: Vec<(u64, Arc<NodeState>)> = nodes
            .iter()
            .map(|n| (n.weight(), Arc::clone(n.state)))
            .collect();
        PeakEwma::new(&nodes)
    }
}

impl LevelSelector for PeakEwma {
    fn select(&self, _key: &[u8], eligible: Eligible<'_>) -> Option<usize> {
        if self.weights.is_empty() {
            return None;
        }
        self.pick(eligible, false)
            .or_else(|| self.pick(eligible, true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn prefers_the_fast_node() {
        let now = Instant::now();
        let fast = Arc::new(NodeState::new_at(now));
        let slow = Arc::new(NodeState::new_at(now));
        fast.observe_at(Duration::from_millis(5), now);
        slow.observe_at(Duration::from_millis(500), now);
        let e = PeakEwma::new(&[(1, Arc::clone(&fast)), (1, Arc::clone(&slow))]);
        // With two nodes both are always drawn: the fast one always wins.
        for _ in 0..100 {
            assert_eq!(e.select(b"", Eligible::All), Some(0));
        }
        // Unless it is not eligible.
        assert_eq!(e.select(b"", Eligible::Only(&|i| i == 1)), Some(1));
    }

    #[test]
    fn in_flight_and_weight_scale_the_cost() {
        let now = Instant::now();
        let a = Arc::new(NodeState::new_at(now));
        let b = Arc::new(NodeState::new_at(now));
        let e = PeakEwma::new(&[(1, Arc::clone(&a)), (1, Arc::clone(&b))]);
        let _busy = a.begin();
        assert_eq!(e.select(b"", Eligible::All), Some(1));
        let e = PeakEwma::new(&[(4, Arc::clone(&a)), (1, Arc::clone(&b))]);
        assert_eq!(
            e.select(b"", Eligible::All),
            Some(0),
            "2 × 30 ms / 4 < 30 ms / 1"
        );
    }

    #[test]
    fn weight_zero_only_as_last_resort() {
        let ns: Vec<(u64, Arc<NodeState>)> = [0, 3, 0]
            .iter()
            .map(|w| (*w, Arc::new(NodeState::default())))
            .collect();
        let e = PeakEwma::new(&ns);
        for _ in 0..50 {
            assert_eq!(e.select(b"", Eligible::All), Some(1));
        }
        let z = e.select(b"", Eligible::Only(&|i| i != 1));
        assert!(matches!(z, Some(0) | Some(2)));
        assert_eq!(e.select(b"", Eligible::Only(&|_| false)), None);
    }
}
