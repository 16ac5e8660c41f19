//! The selection seam: [`LevelSelector`] (pick with an eligibility predicate), and
//! [`Selection`], which adapts a selector to Pingora's `BackendSelection` so Weir's algorithms
//! also serve inside a plain Pingora `LoadBalancer`.

use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Which nodes of a level may be picked.
#[derive(Clone, Copy)]
pub enum Eligible<'a> {
    /// Every node (the common case: a first attempt with every node up). Selectors take a
    /// fast path with no per-node call.
    All,
    /// Only nodes for which the predicate holds (tried or down nodes excluded).
    Only(&'a dyn Fn(usize) -> bool),
}

impl Eligible<'_> {
    #[inline]
    pub fn test(&self, i: usize) -> bool {
        match self {
            Eligible::All => true,
            Eligible::Only(f) => f(i),
        }
    }

    pub fn is_all(&self) -> bool {
        matches!(self, Eligible::All)
    }
}

/// Picks one node of one priority level.
pub trait LevelSelector: Send + Sync {
    /// Index of the chosen node among the eligible ones; `None` when no eligible node can be
    /// picked. `key` is the request's hash key (used by hashing algorithms only).
    fn select(&self, key: &[u8], eligible: Eligible<'_>) -> Option<usize>;
}

/// A Weir selector over a set of Pingora backends: `BackendSelection` for use with
/// `LoadBalancer<Selection<S>>`.
pub struct Selection<S> {
    backends: Vec<Backend>,
    selector: S,
}

/// Builds a selector from the backends' weights (in the set's order).
pub trait FromWeights {
    fn from_weights(weights: &[u64]) -> Self;
}

impl FromWeights for crate::SmoothWeighted {
    fn from_weights(weights: &[u64]) -> Self {
        crate::SmoothWeighted::new(weights)
    }
}

impl<S: LevelSelector + FromWeights> BackendSelection for Selection<S> {
    type Iter = SelectionIter<S>;
    type Config = ();

    fn build(backends: &BTreeSet<Backend>) -> Self {
        let backends: Vec<Backend> = backends.iter().cloned().collect();
        let weights: Vec<u64> = backends.iter().map(|b| b.weight as u64).collect();
        Selection {
            selector: S::from_weights(&weights),
            backends,
        }
    }

    fn iter(self: &Arc<Self>, key: &[u8]) -> Self::Iter {
        let first = self.selector.select(key, Eligible::All);
        SelectionIter {
            sel: Arc::clone(self),
            first,
            next_fallback: 0,
        }
    }
}

/// Yields the algorithm's pick, then every other backend in order (Pingora's `select_with`
/// filters them by health).
pub struct SelectionIter<S> {
    sel: Arc<Selection<S>>,
    first: Option<usize>,
    next_fallback: usize,
}

impl<S> BackendIter for SelectionIter<S> {
    fn next(&mut self) -> Option<&Backend> {
        if let Some(i) = self.first.take() {
            return self.sel.backends.get(i);
        }
        let i = self.next_fallback;
        self.next_fallback += 1;
        self.sel.backends.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SmoothWeighted;
    use pingora_load_balancing::{discovery, Backends, LoadBalancer};

    #[test]
    fn plugs_into_a_pingora_load_balancer() {
        let set: BTreeSet<Backend> = [("127.0.0.1:1", 2), ("127.0.0.1:2", 1)]
            .iter()
            .map(|(a, w)| Backend::new_with_weight(a, *w).unwrap())
            .collect();
        let backends = Backends::new(discovery::Static::new(set));
        let lb: LoadBalancer<Selection<SmoothWeighted>> = LoadBalancer::from_backends(backends);
        futures_lite_block_on(lb.update()).unwrap();
        let picks: Vec<String> = (0..3)
            .map(|_| lb.select(b"", 8).unwrap().addr.to_string())
            .collect();
        assert_eq!(picks, ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:1"]);
    }

    /// `Backends::update` on static discovery completes without awaiting anything.
    fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }
}
