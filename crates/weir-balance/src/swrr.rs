//! Smooth weighted round robin (NGINX's algorithm), docs/algorithms.md.
//!
//! With a constant eligible set every window of `Σw / gcd` consecutive picks holds node `n`
//! exactly `w[n] / gcd` times, interleaved (4:2:1 gives `A B A C A B A`). Ineligible nodes keep
//! their current weight frozen. Weight-0 nodes are picked only when no positive-weight node is
//! eligible, in plain round robin among themselves.
//!
//! The state is one small mutex per priority level of one upstream, shared by every worker
//! thread (exact proportions need one sequence); the critical section is a loop over the
//! level's nodes with no allocation and no await.

use crate::selection::{BackendNode, Eligible, FromBackends, LevelSelector, SelectionConfig};
use std::sync::Mutex;

#[derive(Debug)]
struct State {
    /// Current weight of each node.
    cw: Vec<i64>,
    /// Last weight-0 node picked (round-robin cursor for the fallback).
    zero_cursor: usize,
}

#[derive(Debug)]
pub struct SmoothWeighted {
    weights: Box<[u64]>,
    /// Weights as `i64`, for the vectorisable all-eligible path.
    iweights: Box<[i64]>,
    /// Σ positive weights.
    total: i64,
    state: Mutex<State>,
}

impl SmoothWeighted {
    /// A selector over nodes with these weights, in node order.
    pub fn new(weights: &[u64]) -> Self {
        let n = weights.len();
        SmoothWeighted {
            weights: weights.into(),
            iweights: weights
                .iter()
                .map(|w| (*w).min(i64::MAX as u64 / 2) as i64)
                .collect(),
            total: weights
                .iter()
                .map(|w| (*w).min(i64::MAX as u64 / 2) as i64)
                .sum(),
            state: Mutex::new(State {
                cw: vec![0; n],
                zero_cursor: n.saturating_sub(1),
            }),
        }
    }

    /// The weights this selector was built with; a level whose weights differ needs a new one.
    pub fn weights(&self) -> &[u64] {
        &self.weights
    }
}

/// For `LoadBalancer<Selection<SmoothWeighted>>`: the backends' weights in set order.
impl FromBackends for SmoothWeighted {
    fn from_backends(nodes: &[BackendNode<'_>], _config: &SelectionConfig) -> Self {
        let weights: Vec<u64> = nodes.iter().map(BackendNode::weight).collect();
        SmoothWeighted::new(&weights)
    }

    /// Undo the pick exactly (the updates are sums, so they commute with other threads'
    /// picks): a refused backend's current weight stays frozen, as if it had been ineligible,
    /// and the others keep their exact proportions. The weight-0 cursor is not rewound.
    fn refused(&self, index: usize, eligible: Eligible<'_>) {
        let n = self.weights.len();
        if index >= n || self.iweights[index] == 0 {
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let total = if eligible.is_all() {
            for (c, w) in st.cw.iter_mut().zip(&self.iweights[..n]) {
                *c -= *w;
            }
            self.total
        } else {
            let mut total = 0;
            for i in 0..n {
                let w = self.iweights[i];
                if w != 0 && eligible.test(i) {
                    st.cw[i] -= w;
                    total += w;
                }
            }
            total
        };
        st.cw[index] += total;
    }
}

impl LevelSelector for SmoothWeighted {
    fn select(&self, _key: &[u8], eligible: Eligible<'_>) -> Option<usize> {
        let n = self.weights.len();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if eligible.is_all() && self.total > 0 {
            // Every node eligible: add every weight (weight-0 nodes stay at 0, and the largest
            // positive current weight is always > 0, so they are never the maximum), then take
            // the first maximum. Two flat loops the compiler vectorises.
            let cw: &mut [i64] = &mut st.cw[..n];
            for (c, w) in cw.iter_mut().zip(&self.iweights[..n]) {
                *c += *w;
            }
            let (mut best, mut top) = (0, cw[0]);
            for (i, &v) in cw.iter().enumerate().skip(1) {
                if v > top {
                    (best, top) = (i, v);
                }
            }
            cw[best] -= self.total;
            return Some(best);
        }
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for i in 0..n {
            let w = self.iweights[i];
            if w == 0 || !eligible.test(i) {
                continue;
            }
            st.cw[i] += w;
            total += w;
            if best.is_none_or(|b| st.cw[i] > st.cw[b]) {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            st.cw[b] -= total;
            return Some(b);
        }
        // Only weight-0 nodes (or none) are eligible: plain round robin among them.
        let start = st.zero_cursor;
        for k in 1..=n {
            let i = (start + k) % n;
            if self.weights[i] == 0 && eligible.test(i) {
                st.zero_cursor = i;
                return Some(i);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selection::FromBackends;

    fn seq(weights: &[u64], picks: usize) -> String {
        let s = SmoothWeighted::new(weights);
        (0..picks)
            .map(|_| {
                let i = s.select(b"", Eligible::All).unwrap();
                (b'A' + i as u8) as char
            })
            .collect()
    }

    #[test]
    fn nginx_sequences() {
        assert_eq!(seq(&[4, 2, 1], 7), "ABACABA");
        assert_eq!(seq(&[1, 3], 4), "BABB");
        assert_eq!(seq(&[1, 1, 1], 6), "ABCABC");
    }

    #[test]
    fn exact_counts_over_every_window() {
        for (weights, period) in [
            (&[1u64, 2][..], 3usize),
            (&[3, 2, 1][..], 6),
            (&[3000, 6000][..], 3),
        ] {
            let s = SmoothWeighted::new(weights);
            let picks: Vec<usize> = (0..period * 50)
                .map(|_| s.select(b"", Eligible::All).unwrap())
                .collect();
            let g = weights.iter().copied().fold(0, gcd);
            for start in 0..picks.len() - period {
                for (n, w) in weights.iter().enumerate() {
                    let c = picks[start..start + period]
                        .iter()
                        .filter(|&&p| p == n)
                        .count();
                    assert_eq!(c as u64, w / g, "weights {weights:?} window {start}");
                }
            }
        }
    }

    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }

    #[test]
    fn ineligible_nodes_are_skipped_and_frozen() {
        let s = SmoothWeighted::new(&[1, 1, 1]);
        assert_eq!(s.select(b"", Eligible::Only(&|i| i != 0)), Some(1));
        assert_eq!(s.select(b"", Eligible::Only(&|i| i != 0)), Some(2));
        assert_eq!(s.select(b"", Eligible::Only(&|_| false)), None);
    }

    #[test]
    fn a_refused_pick_is_undone_exactly() {
        let s = SmoothWeighted::new(&[4, 2, 1]);
        let a = s.select(b"", Eligible::All).unwrap();
        s.refused(a, Eligible::All);
        let not_c = |i: usize| i != 2;
        let b = s.select(b"", Eligible::Only(&not_c)).unwrap();
        s.refused(b, Eligible::Only(&not_c));
        let again: String = (0..7)
            .map(|_| (b'A' + s.select(b"", Eligible::All).unwrap() as u8) as char)
            .collect();
        assert_eq!(again, "ABACABA", "as if neither pick had happened");
    }

    #[test]
    fn weight_zero_is_a_last_resort_in_round_robin() {
        let s = SmoothWeighted::new(&[2, 0, 0]);
        assert_eq!(s.select(b"", Eligible::All), Some(0));
        assert_eq!(s.select(b"", Eligible::Only(&|i| i != 0)), Some(1));
        assert_eq!(s.select(b"", Eligible::Only(&|i| i != 0)), Some(2));
        assert_eq!(s.select(b"", Eligible::Only(&|i| i != 0)), Some(1));
        let only_zero = SmoothWeighted::new(&[0]);
        assert_eq!(only_zero.select(b"", Eligible::All), Some(0));
    }
}
