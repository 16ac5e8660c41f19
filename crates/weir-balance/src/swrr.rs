//! Smooth weighted round robin (NGINX's algorithm), SEMANTICS.md §4.1.
//!
//! With a constant eligible set every window of `Σw / gcd` consecutive picks holds node `n`
//! exactly `w[n] / gcd` times, interleaved (4:2:1 gives `A B A C A B A`). Ineligible nodes keep
//! their current weight frozen. Weight-0 nodes are picked only when no positive-weight node is
//! eligible, in plain round robin among themselves.
//!
//! The state is one small mutex per priority level of one upstream, shared by every worker
//! thread (exact proportions need one sequence); the critical section is a loop over the
//! level's nodes with no allocation and no await.

use crate::selection::LevelSelector;
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
    state: Mutex<State>,
}

impl SmoothWeighted {
    /// A selector over nodes with these weights, in node order.
    pub fn new(weights: &[u64]) -> Self {
        let n = weights.len();
        SmoothWeighted {
            weights: weights.into(),
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

impl LevelSelector for SmoothWeighted {
    fn select(&self, _key: &[u8], eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let n = self.weights.len();
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for i in 0..n {
            let w = self.weights[i] as i64;
            if w == 0 || !eligible(i) {
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
            if self.weights[i] == 0 && eligible(i) {
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

    fn seq(weights: &[u64], picks: usize) -> String {
        let s = SmoothWeighted::new(weights);
        (0..picks)
            .map(|_| {
                let i = s.select(b"", &|_| true).unwrap();
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
                .map(|_| s.select(b"", &|_| true).unwrap())
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
        assert_eq!(s.select(b"", &|i| i != 0), Some(1));
        assert_eq!(s.select(b"", &|i| i != 0), Some(2));
        assert_eq!(s.select(b"", &|_| false), None);
    }

    #[test]
    fn weight_zero_is_a_last_resort_in_round_robin() {
        let s = SmoothWeighted::new(&[2, 0, 0]);
        assert_eq!(s.select(b"", &|_| true), Some(0));
        assert_eq!(s.select(b"", &|i| i != 0), Some(1));
        assert_eq!(s.select(b"", &|i| i != 0), Some(2));
        assert_eq!(s.select(b"", &|i| i != 0), Some(1));
        let only_zero = SmoothWeighted::new(&[0]);
        assert_eq!(only_zero.select(b"", &|_| true), Some(0));
    }
}
