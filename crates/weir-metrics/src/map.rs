//! [`AtomicMap`]: an insert-only, lock-free map from a non-zero `u64` to a value.
//!
//! Written here rather than taken from a crate because the data path needs exactly this and
//! nothing more: keys are small integers known to the caller (a status code, a consumer's
//! number), entries are never removed while the map lives (the map itself is dropped when its
//! route or node leaves the configuration), and a lookup must not take a lock, allocate, or
//! pin an epoch as general concurrent maps (`dashmap`'s shard locks, `papaya`'s and
//! `crossbeam`'s epochs) do.
//!
//! Layout: a chain of open-addressed blocks, each twice the size of the previous one. A key
//! lives in the first block where a probe of at most [`PROBE`] slots from its hash finds it or
//! a free slot; a slot's key is claimed once with a compare-and-swap and never changes again.
//!
//! Invariants (checked by the tests):
//! - a key has at most one slot in the whole chain: every thread probes the same slots in the
//!   same order, and a claimed slot never changes, so two inserts of one key meet;
//! - a lookup after an insert returns the inserted value (no insert is lost).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Slots probed per block before moving to the next block.
const PROBE: usize = 8;

/// See the module documentation.
#[derive(Debug)]
pub struct AtomicMap<T> {
    head: Block<T>,
}

#[derive(Debug)]
struct Block<T> {
    keys: Box<[AtomicU64]>,
    vals: Box<[OnceLock<T>]>,
    next: OnceLock<Box<Block<T>>>,
}

impl<T> Block<T> {
    fn new(cap: usize) -> Self {
        Block {
            keys: (0..cap).map(|_| AtomicU64::new(0)).collect(),
            vals: (0..cap).map(|_| OnceLock::new()).collect(),
            next: OnceLock::new(),
        }
    }
}

/// Fibonacci hashing: spreads consecutive keys (status codes) over the block.
#[inline]
fn start(key: u64, cap: usize) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & (cap - 1)
}

impl<T> Default for AtomicMap<T> {
    fn default() -> Self {
        Self::with_capacity(4)
    }
}

impl<T> AtomicMap<T> {
    /// A map whose first block has `cap` slots (rounded up to a power of two, at least 1).
    pub fn with_capacity(cap: usize) -> Self {
        AtomicMap {
            head: Block::new(cap.max(1).next_power_of_two()),
        }
    }

    /// The value of `key`, created with `init` if absent. `key` must not be 0 (the free
    /// mark): 0 is mapped to `u64::MAX`.
    #[inline]
    pub fn get_or_insert_with(&self, key: u64, init: impl Fn() -> T) -> &T {
        let key = if key == 0 { u64::MAX } else { key };
        let mut b = &self.head;
        loop {
            let cap = b.keys.len();
            let s = start(key, cap);
            for i in 0..PROBE.min(cap) {
                let j = (s + i) & (cap - 1);
                let k = b.keys[j].load(Ordering::Acquire);
                let mine = k == key
                    || (k == 0
                        && match b.keys[j].compare_exchange(
                            0,
                            key,
                            Ordering::AcqRel,
                            Ordering::Acquire,
                        ) {
                            Ok(_) => true,
                            Err(other) => other == key,
                        });
                if mine {
                    return b.vals[j].get_or_init(&init);
                }
            }
            b = b.next.get_or_init(|| Box::new(Block::new(cap * 2)));
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: u64) -> Option<&T> {
        let key = if key == 0 { u64::MAX } else { key };
        let mut b = &self.head;
        loop {
            let cap = b.keys.len();
            let s = start(key, cap);
            for i in 0..PROBE.min(cap) {
                let j = (s + i) & (cap - 1);
                match b.keys[j].load(Ordering::Acquire) {
                    k if k == key => return b.vals[j].get(),
                    0 => return None,
                    _ => {}
                }
            }
            b = b.next.get()?;
        }
    }

    /// Every entry whose value is initialised, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        let mut block = Some(&self.head);
        std::iter::from_fn(move || {
            let b = block?;
            block = b.next.get().map(|n| &**n);
            Some(b)
        })
        .flat_map(|b| {
            b.keys.iter().zip(b.vals.iter()).filter_map(|(k, v)| {
                let k = k.load(Ordering::Acquire);
                (k != 0).then_some(())?;
                v.get().map(|v| (k, v))
            })
        })
    }
}

impl<T: Default> AtomicMap<T> {
    /// The value of `key`, created with `T::default()` if absent.
    #[inline]
    pub fn get_or_default(&self, key: u64) -> &T {
        self.get_or_insert_with(key, T::default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    #[test]
    fn insert_lookup_iterate() {
        let m: AtomicMap<AtomicU64> = AtomicMap::with_capacity(2);
        for k in 1..=500u64 {
            m.get_or_default(k).fetch_add(k, Ordering::Relaxed);
        }
        for k in 1..=500u64 {
            assert_eq!(m.get(k).map(|v| v.load(Ordering::Relaxed)), Some(k));
        }
        assert!(m.get(501).is_none());
        let keys: HashSet<u64> = m.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, (1..=500).collect());
    }

    #[test]
    fn zero_is_a_key_like_any_other() {
        let m: AtomicMap<AtomicU64> = AtomicMap::default();
        m.get_or_default(0).fetch_add(1, Ordering::Relaxed);
        assert_eq!(m.get(0).map(|v| v.load(Ordering::Relaxed)), Some(1));
    }

    #[test]
    fn concurrent_inserts_of_one_key_meet() {
        let m: Arc<AtomicMap<AtomicU64>> = Arc::new(AtomicMap::with_capacity(1));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for round in 0..2000u64 {
                        m.get_or_default(round % 97 + 1)
                            .fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let total: u64 = m.iter().map(|(_, v)| v.load(Ordering::Relaxed)).sum();
        assert_eq!(total, 8 * 2000);
        assert_eq!(m.iter().count(), 97, "one slot per key");
    }

    proptest::proptest! {
        #[test]
        fn behaves_like_a_map(keys in proptest::collection::vec(0u64..64, 0..300)) {
            let m: AtomicMap<AtomicU64> = AtomicMap::with_capacity(1);
            let mut want = std::collections::HashMap::new();
            for &k in &keys {
                m.get_or_default(k).fetch_add(1, Ordering::Relaxed);
                *want.entry(if k == 0 { u64::MAX } else { k }).or_insert(0u64) += 1;
            }
            let got: std::collections::HashMap<u64, u64> =
                m.iter().map(|(k, v)| (k, v.load(Ordering::Relaxed))).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }
}
