//! Smooth weighted round robin (NGINX's algorithm), docs/algorithms.md.
//!
//! With every node eligible, every window of `Σw / gcd` consecutive picks holds node `n`
//! exactly `w[n] / gcd` times, interleaved (4:2:1 gives `A B A C A B A`), process-wide: all
//! threads share one sequence. Weight-0 nodes are picked only when no positive-weight node is
//! eligible, in plain round robin among themselves.
//!
//! The sequence is NGINX's cycle for the level's weights, computed once when the selector is
//! built (`Σw / gcd` positions, each naming a node), and picks walk it with one shared atomic
//! cursor: no lock, no allocation.
//!
//! - **Every node eligible**: one `fetch_add` on the cursor; the pick is the node at that
//!   position. Picks take consecutive positions in the order they claim them, so the windows
//!   above are exact whatever the number of threads.
//! - **With a predicate** (tried or down nodes excluded): the pick takes the first position
//!   from the cursor whose node is eligible and moves the cursor past it in one
//!   compare-and-swap (retried when another pick moved the cursor meanwhile). The positions it
//!   skips belong to nodes this pick could not take; they are consumed, not handed to the next
//!   node. So with a constant eligible set every pass over the cycle gives each eligible node
//!   exactly its `w / gcd` positions, in the cycle's interleaved order, and an ineligible node
//!   keeps its place in the cycle: it loses only the positions that pass while it is skipped.
//!   A pick looks at most about one position per node ahead; past that it finds each
//!   eligible node's next position in the cycle by binary search.
//! - **Long cycles**: a cycle is at most 2^18 positions and costs at most 2^26 steps to build
//!   (`Σw / gcd` × distinct weights). Weights beyond that (e.g. 1,000,000 and 999,999) are
//!   scaled down to fit, each positive weight kept at least 1: proportions are then those of
//!   the scaled weights, within about 2^-18 of the exact shares for all but tiny weights.

use crate::pad::Padded;
use crate::selection::{BackendNode, Eligible, FromBackends, LevelSelector, SelectionConfig};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most positions in a cycle.
const MAX_CYCLE: u64 = 1 << 18;
/// Most steps to build a cycle (positions × distinct weights).
const BUILD_BUDGET: u64 = 1 << 26;

/// A shared cursor, alone on its cache lines (every pick writes it).
#[derive(Debug, Default)]
struct Cursor {
    /// Positions consumed so far; position `p` is `p % len` of the sequence.
    next: AtomicU64,
    /// `(start, end)` of the positions the last pick with a predicate consumed (each mod
    /// 2^32), so that `refused` can give them back.
    last_only: AtomicU64,
}

/// A cycle of node indices walked by a shared cursor.
#[derive(Debug)]
struct Ring {
    seq: Box<[u32]>,
    cursor: Padded<Cursor>,
}

fn pack(start: u64, end: u64) -> u64 {
    ((start & 0xffff_ffff) << 32) | (end & 0xffff_ffff)
}

impl Ring {
    fn new(seq: Vec<u32>) -> Self {
        Ring {
            seq: seq.into(),
            cursor: Padded(Cursor::default()),
        }
    }

    /// The node at absolute position `p` (the sequence is not empty).
    #[inline]
    fn at(&self, p: u64) -> usize {
        self.seq
            .get((p % self.seq.len() as u64) as usize)
            .map_or(usize::MAX, |&i| i as usize)
    }

    /// The next position, every node eligible.
    #[inline]
    fn next_all(&self) -> Option<usize> {
        if self.seq.is_empty() {
            return None;
        }
        let p = self.cursor.next.fetch_add(1, Ordering::Relaxed);
        Some(self.at(p))
    }

    /// The first position at or after the cursor that `find` returns (an eligible one), with
    /// the cursor moved past it.
    fn next_with(&self, find: impl Fn(u64) -> Option<u64>) -> Option<usize> {
        if self.seq.is_empty() {
            return None;
        }
        let cursor = &self.cursor.next;
        let mut c = cursor.load(Ordering::Relaxed);
        loop {
            let j = find(c)?;
            match cursor.compare_exchange_weak(c, j + 1, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    self.cursor
                        .last_only
                        .store(pack(c, j + 1), Ordering::Relaxed);
                    return Some(self.at(j));
                }
                Err(now) => c = now,
            }
        }
    }

    /// The first position in `from .. from + limit` whose node is eligible.
    fn scan(&self, from: u64, limit: u64, ok: &dyn Fn(usize) -> bool) -> Option<u64> {
        let len = self.seq.len();
        if len == 0 {
            return None;
        }
        let mut p = (from % len as u64) as usize;
        for k in 0..limit.min(len as u64) {
            if self.seq.get(p).is_some_and(|&i| ok(i as usize)) {
                return Some(from + k);
            }
            p += 1;
            if p == len {
                p = 0;
            }
        }
        None
    }
}

#[derive(Debug)]
pub struct SmoothWeighted {
    weights: Box<[u64]>,
    /// The smooth WRR cycle of the positive-weight nodes.
    positive: Ring,
    /// Each positive-weight node's positions in the cycle, ascending:
    /// `occ[occ_start[i]..occ_start[i + 1]]` for node `i` (empty for weight 0).
    occ_start: Box<[u32]>,
    occ: Box<[u32]>,
    /// The weight-0 nodes in order: the last resort, in plain round robin.
    zeros: Ring,
    /// Positions a predicate pick looks at before searching each eligible node's next one.
    scan_limit: u64,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn distinct(weights: &[u64]) -> u64 {
    let mut w = weights.to_vec();
    w.sort_unstable();
    w.dedup();
    w.len() as u64
}

/// Weights scaled down so that the cycle and its build fit the bounds (each at least 1).
fn fit(reduced: &[u64]) -> Vec<u64> {
    let total: u128 = reduced.iter().map(|&w| w as u128).sum();
    let mut target = MAX_CYCLE as u128;
    loop {
        let scaled: Vec<u64> = reduced
            .iter()
            .map(|&w| ((w as u128 * target + total / 2) / total.max(1)).max(1) as u64)
            .collect();
        let g = scaled.iter().copied().fold(0, gcd).max(1);
        let scaled: Vec<u64> = scaled.iter().map(|w| w / g).collect();
        let sum: u64 = scaled.iter().sum();
        if (sum <= MAX_CYCLE && sum.saturating_mul(distinct(&scaled)) <= BUILD_BUDGET)
            || target <= 1
        {
            return scaled;
        }
        target /= 2;
    }
}

/// NGINX's smooth WRR cycle over the positive weights: node indices, one per position.
///
/// At step `t` (from 1), after adding the weights, node `i`'s current weight is
/// `t·w_i − W·n_i` (`n_i`: its picks so far), and the first node with the largest one is
/// picked. Nodes of equal weight are then picked in turn (fewest picks, then lowest index), so
/// each step compares one candidate per distinct weight, not every node.
fn cycle(weights: &[u64]) -> Vec<u32> {
    let nodes: Vec<u32> = (0..weights.len() as u32)
        .filter(|&i| weights[i as usize] > 0)
        .collect();
    let g = nodes
        .iter()
        .map(|&i| weights[i as usize])
        .fold(0, gcd)
        .max(1);
    let mut reduced: Vec<u64> = nodes.iter().map(|&i| weights[i as usize] / g).collect();
    let total: u128 = reduced.iter().map(|&w| w as u128).sum();
    if total > MAX_CYCLE as u128 || total * distinct(&reduced) as u128 > BUILD_BUDGET as u128 {
        reduced = fit(&reduced);
    }
    // Groups of equal weight, members in node order, with the group's picks so far.
    let mut by_weight: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for (&i, &w) in nodes.iter().zip(&reduced) {
        by_weight.entry(w).or_default().push(i);
    }
    let mut groups: Vec<(i64, Vec<u32>, u64)> = by_weight
        .into_iter()
        .map(|(w, members)| (w as i64, members, 0))
        .collect();
    let total: i64 = reduced.iter().map(|&w| w as i64).sum();
    let mut seq = Vec::with_capacity(total as usize);
    for t in 1..=total {
        let mut best: Option<(i64, u32, usize)> = None;
        for (gi, (w, members, picks)) in groups.iter().enumerate() {
            let m = members.len() as u64;
            let Some(&cand) = members.get((*picks % m) as usize) else {
                continue;
            };
            let current = t * w - total * (*picks / m) as i64;
            if best.is_none_or(|(bc, bi, _)| current > bc || (current == bc && cand < bi)) {
                best = Some((current, cand, gi));
            }
        }
        let Some((_, node, gi)) = best else { break };
        seq.push(node);
        if let Some(g) = groups.get_mut(gi) {
            g.2 += 1;
        }
    }
    seq
}

impl SmoothWeighted {
    /// A selector over nodes with these weights, in node order.
    pub fn new(weights: &[u64]) -> Self {
        let n = weights.len();
        let seq = cycle(weights);
        // Positions of each node, grouped by node (a counting sort of the cycle).
        let mut occ_start = vec![0u32; n + 1];
        for &i in &seq {
            occ_start[i as usize + 1] += 1;
        }
        for i in 0..n {
            occ_start[i + 1] += occ_start[i];
        }
        let mut fill: Vec<u32> = occ_start[..n].to_vec();
        let mut occ = vec![0u32; seq.len()];
        for (p, &i) in seq.iter().enumerate() {
            occ[fill[i as usize] as usize] = p as u32;
            fill[i as usize] += 1;
        }
        let positive_nodes = weights.iter().filter(|&&w| w > 0).count() as u64;
        let zeros = (0..n as u32)
            .filter(|&i| weights[i as usize] == 0)
            .collect();
        SmoothWeighted {
            weights: weights.into(),
            scan_limit: (positive_nodes + 8).min(seq.len() as u64),
            positive: Ring::new(seq),
            occ_start: occ_start.into(),
            occ: occ.into(),
            zeros: Ring::new(zeros),
        }
    }

    /// The weights this selector was built with; a level whose weights differ needs a new one.
    pub fn weights(&self) -> &[u64] {
        &self.weights
    }

    /// The first position at or after `from` whose node is eligible.
    fn find_positive(&self, from: u64, ok: &dyn Fn(usize) -> bool) -> Option<u64> {
        if let Some(p) = self.positive.scan(from, self.scan_limit, ok) {
            return Some(p);
        }
        let len = self.positive.seq.len() as u64;
        if self.scan_limit >= len {
            return None; // the scan covered the whole cycle
        }
        // Each eligible node's next position, by binary search in its positions.
        let p0 = (from % len) as u32;
        let mut best: Option<u64> = None;
        for (i, bounds) in self.occ_start.windows(2).enumerate() {
            let Some(occ) = self.occ.get(bounds[0] as usize..bounds[1] as usize) else {
                continue;
            };
            let Some(&first) = occ.first() else {
                continue; // weight 0
            };
            if best.is_some_and(|d| d == 0) || !ok(i) {
                continue;
            }
            let k = occ.partition_point(|&p| p < p0);
            let d = match occ.get(k) {
                Some(&p) => (p - p0) as u64,
                None => first as u64 + len - p0 as u64,
            };
            best = Some(best.map_or(d, |b| b.min(d)));
        }
        best.map(|d| from + d)
    }
}

/// For `LoadBalancer<Selection<SmoothWeighted>>`: the backends' weights in set order.
impl FromBackends for SmoothWeighted {
    fn from_backends(nodes: &[BackendNode<'_>], _config: &SelectionConfig) -> Self {
        let weights: Vec<u64> = nodes.iter().map(BackendNode::weight).collect();
        SmoothWeighted::new(&weights)
    }

    /// Give back the positions the pick consumed, when no other pick moved the cursor since
    /// (always, with one thread): the refused backend then keeps its place, as if it had been
    /// ineligible, and the others keep their exact proportions. When another pick came in
    /// between, nothing is undone: the refused backend loses that turn (the others still get
    /// their own positions). The weight-0 cursor is not rewound.
    fn refused(&self, index: usize, eligible: Eligible<'_>) {
        if self.weights.get(index).is_none_or(|&w| w == 0) {
            return;
        }
        let ring = &self.positive;
        let cursor = &ring.cursor.next;
        let c = cursor.load(Ordering::Relaxed);
        if c == 0 || ring.at(c - 1) != index {
            return;
        }
        let start = if eligible.is_all() {
            c - 1
        } else {
            let last = ring.cursor.last_only.load(Ordering::Relaxed);
            let (start, end) = (last >> 32, last & 0xffff_ffff);
            if end != c & 0xffff_ffff {
                return;
            }
            let len = end.wrapping_sub(start) & 0xffff_ffff;
            if len == 0 || len > c {
                return;
            }
            c - len
        };
        let _ = cursor.compare_exchange(c, start, Ordering::Relaxed, Ordering::Relaxed);
    }
}

impl LevelSelector for SmoothWeighted {
    fn select(&self, _key: &[u8], eligible: Eligible<'_>) -> Option<usize> {
        match eligible {
            Eligible::All => self.positive.next_all().or_else(|| self.zeros.next_all()),
            Eligible::Only(ok) => self
                .positive
                .next_with(|c| self.find_positive(c, ok))
                .or_else(|| {
                    let zeros = &self.zeros;
                    zeros.next_with(|c| zeros.scan(c, zeros.seq.len() as u64, ok))
                }),
        }
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

    /// NGINX's algorithm as written: add every weight, take the first maximum, subtract the
    /// total.
    fn nginx(weights: &[u64], picks: usize) -> Vec<usize> {
        let total: i64 = weights.iter().map(|&w| w as i64).sum();
        let mut cw = vec![0i64; weights.len()];
        (0..picks)
            .map(|_| {
                let mut best = 0;
                for i in 0..weights.len() {
                    cw[i] += weights[i] as i64;
                    if cw[i] > cw[best] {
                        best = i;
                    }
                }
                cw[best] -= total;
                best
            })
            .collect()
    }

    #[test]
    fn the_cycle_is_nginx_sequence() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..300 {
            let n = rng.usize(1..12);
            let max = [3, 10, 100, 5000][rng.usize(..4)];
            let weights: Vec<u64> = (0..n).map(|_| rng.u64(1..=max)).collect();
            let s = SmoothWeighted::new(&weights);
            let len = s.positive.seq.len();
            let got: Vec<usize> = (0..2 * len)
                .map(|_| s.select(b"", Eligible::All).unwrap())
                .collect();
            assert_eq!(got, nginx(&weights, 2 * len), "{weights:?}");
        }
    }

    #[test]
    fn a_constant_eligible_set_gets_exact_counts_per_cycle() {
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..200 {
            let n = rng.usize(2..9);
            let weights: Vec<u64> = (0..n).map(|_| rng.u64(1..=20)).collect();
            let down: Vec<bool> = (0..n).map(|_| rng.u8(..4) == 0).collect();
            let ok = |i: usize| !down[i];
            let s = SmoothWeighted::new(&weights);
            let g = weights.iter().copied().fold(0, gcd);
            // Picks per pass over the cycle: the eligible nodes' positions.
            let per_pass: u64 = (0..n).filter(|&i| ok(i)).map(|i| weights[i] / g).sum();
            if per_pass == 0 {
                assert_eq!(s.select(b"", Eligible::Only(&ok)), None);
                continue;
            }
            let mut counts = vec![0u64; n];
            for _ in 0..3 * per_pass {
                counts[s.select(b"", Eligible::Only(&ok)).unwrap()] += 1;
            }
            for i in 0..n {
                let want = if ok(i) { 3 * weights[i] / g } else { 0 };
                assert_eq!(counts[i], want, "{weights:?} {down:?}");
            }
        }
    }

    #[test]
    fn far_positions_are_found_past_the_scan() {
        // 200 heavy nodes down: B's next position may lie far beyond one per node ahead.
        let mut weights = vec![1000u64; 200];
        weights.push(1);
        let s = SmoothWeighted::new(&weights);
        let only_last = |i: usize| i == 200;
        for _ in 0..3 {
            assert_eq!(s.select(b"", Eligible::Only(&only_last)), Some(200));
        }
        // Each pass over the cycle (200,001 positions) gives it one pick.
        assert!(s.positive.cursor.next.load(Ordering::Relaxed) > 2 * 200_000);
    }

    #[test]
    fn long_cycles_are_bounded_and_proportional() {
        let s = SmoothWeighted::new(&[1_000_000, 999_999, 1]);
        let len = s.positive.seq.len() as u64;
        assert!(len <= MAX_CYCLE, "{len}");
        let mut counts = [0u64; 3];
        for _ in 0..len {
            counts[s.select(b"", Eligible::All).unwrap()] += 1;
        }
        assert!(counts[2] >= 1, "{counts:?}");
        let share = counts[0] as f64 / len as f64;
        assert!((share - 0.5).abs() < 1e-4, "{counts:?}");
    }

    #[test]
    fn threads_share_one_exact_sequence() {
        let s = SmoothWeighted::new(&[3, 2, 1]);
        let counts: Vec<[u64; 3]> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        let mut c = [0u64; 3];
                        for _ in 0..6000 {
                            c[s.select(b"", Eligible::All).unwrap()] += 1;
                        }
                        c
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let total = counts
            .iter()
            .fold([0; 3], |a, c| [a[0] + c[0], a[1] + c[1], a[2] + c[2]]);
        assert_eq!(total, [12_000, 8_000, 4_000]);
    }
}
