//! The panic threshold: when too few of an upstream's nodes are usable, ignore health.
//!
//! An upstream is in panic when the share of its nodes that are usable (up and not ejected)
//! is below `healthy_panic_threshold` percent; the proxy then balances over all its nodes as
//! if every one were usable, rather than piling the whole load on the few that are left.
//! [`in_panic`] is the pure test, in integers (no rounding): `usable × 100 < threshold ×
//! total`, never with a threshold of 0 (off) or no nodes.

/// Whether an upstream with `usable` of `total` nodes usable is in panic under
/// `threshold_percent`: `threshold_percent > 0`, `total > 0` and
/// `usable × 100 < threshold_percent × total`. A threshold above 100 puts every non-empty
/// upstream in panic.
pub fn in_panic(usable: usize, total: usize, threshold_percent: u32) -> bool {
    threshold_percent > 0
        && total > 0
        && (usable as u128) * 100 < u128::from(threshold_percent) * total as u128
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_boundary_is_exact() {
        assert!(!in_panic(1, 2, 50), "50% is not below 50%");
        assert!(in_panic(0, 2, 50));
        assert!(!in_panic(2, 2, 50));
        assert!(in_panic(1, 3, 34), "33.3% < 34%");
        assert!(!in_panic(1, 3, 33), "33.3% >= 33%");
        assert!(in_panic(99, 100, 100));
        assert!(!in_panic(100, 100, 100));
    }

    #[test]
    fn off_at_0_and_for_empty_upstreams() {
        assert!(!in_panic(0, 10, 0));
        assert!(!in_panic(0, 0, 50));
        assert!(in_panic(usize::MAX - 1, usize::MAX, 100), "no overflow");
        assert!(!in_panic(usize::MAX, usize::MAX, 100));
    }

    proptest! {
        #[test]
        fn more_usable_nodes_never_cause_panic(
            total in 1usize..10_000,
            a in 0usize..10_000,
            b in 0usize..10_000,
            t in 0u32..=100,
        ) {
            let (lo, hi) = (a.min(b).min(total), a.max(b).min(total));
            prop_assert!(!in_panic(hi, total, t) || in_panic(lo, total, t));
            prop_assert!(!in_panic(total, total, t) || t > 100);
        }
    }
}
