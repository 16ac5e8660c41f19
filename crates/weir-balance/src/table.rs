//! A table of shared state keyed by (upstream key, node or level identity) that lets a new
//! configuration snapshot pick up the state of the previous one.
//!
//! Entries are held weakly: state lives exactly as long as some snapshot or request uses it,
//! so removed upstreams and nodes free their state without a separate clean-up pass. The lock
//! is taken only while compiling a snapshot, never on the request path.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

#[derive(Debug)]
pub struct StateTable<K, V> {
    entries: Mutex<HashMap<K, Weak<V>>>,
}

impl<K, V> Default for StateTable<K, V> {
    fn default() -> Self {
        StateTable {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V> StateTable<K, V> {
    /// The live state for `key`, or a new one from `make`. `keep` decides whether live state
    /// may be reused (e.g. a round-robin cycle only if the weights are unchanged).
    pub fn get_or_insert(
        &self,
        key: K,
        keep: impl FnOnce(&V) -> bool,
        make: impl FnOnce() -> V,
    ) -> Arc<V> {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(v) = map.get(&key).and_then(Weak::upgrade) {
            if keep(&v) {
                return v;
            }
        }
        let v = Arc::new(make());
        map.insert(key, Arc::downgrade(&v));
        v
    }

    /// The live state for `key`, if some snapshot or request still holds it.
    pub fn get<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).and_then(Weak::upgrade)
    }

    /// Drop entries whose state is no longer referenced.
    pub fn prune(&self) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_live_state_and_forgets_dead() {
        let t: StateTable<&str, u32> = StateTable::default();
        let a = t.get_or_insert("a", |_| true, || 1);
        let again = t.get_or_insert("a", |_| true, || 2);
        assert!(Arc::ptr_eq(&a, &again));
        assert!(t.get("a").is_some_and(|v| Arc::ptr_eq(&v, &a)));
        assert!(t.get("b").is_none());
        let replaced = t.get_or_insert("a", |_| false, || 3);
        assert_eq!(*replaced, 3);
        drop((a, again, replaced));
        t.prune();
        assert!(t.is_empty());
    }
}
