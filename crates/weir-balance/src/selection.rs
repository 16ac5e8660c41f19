//! The selection seam: [`LevelSelector`] (pick with an eligibility predicate), and
//! [`Selection`], which adapts a selector to Pingora's `BackendSelection` so Weir's algorithms
//! also serve inside a plain Pingora `LoadBalancer`.
//!
//! Used that way, the selector is built by [`FromBackends`] from the backend set (in Pingora's
//! address order) with one [`NodeState`] per backend, taken from the [`SelectionConfig`]'s
//! table so that it survives the rebuilds Pingora makes when discovery changes the set. Each
//! backend the balancer hands out carries its state in `Backend::ext`; the caller reports what
//! the algorithms need through it ([`Attempt`]), since Pingora's `LoadBalancer` knows nothing
//! of requests in flight or their latency.
//!
//! `BackendSelection::iter` yields the algorithm's pick first, then, for each further
//! candidate Pingora asks for (the previous one was unhealthy or refused by `select_with`'s
//! `accept`), the algorithm's pick among the backends not yet yielded: smooth WRR keeps its
//! proportions among the rest, `chash` walks the ring clockwise from the key, `least_conn` and
//! `ewma` take the next cheapest. Every backend is yielded at most once (`chash` never yields a
//! weight-0 backend: it has no points).

use crate::node::{InFlight, NodeState};
use crate::table::StateTable;
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::Backend;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

    /// Whether [`select`](Self::select) can ever return node `index` (with every node
    /// eligible): the proxy asks it to tell whether a retry could find a node, never per
    /// pick. Default: every node; a `chash` ring has no point for a weight-0 node.
    fn can_pick(&self, index: usize) -> bool {
        let _ = index;
        true
    }
}

/// A Weir selector over a set of Pingora backends: the `BackendSelection` of
/// `LoadBalancer<Selection<S>>`, for any `S` implementing [`FromBackends`]
/// ([`SmoothWeighted`](crate::SmoothWeighted), [`ConsistentHash`](crate::ConsistentHash),
/// [`LeastConn`](crate::LeastConn), [`PeakEwma`](crate::PeakEwma)).
///
/// Its `Config` is [`SelectionConfig`]: build the balancer with
/// `LoadBalancer::from_backends_with_config(backends, Some(config))` to keep node state across
/// rebuilds and to set `chash`'s bounded loads. Without a config (`from_backends`,
/// `try_from_iter`) every build starts with fresh node state.
pub struct Selection<S> {
    /// Backends in the set's order, each with its [`NodeHandle`] in `ext`.
    backends: Box<[Backend]>,
    states: Box<[Arc<NodeState>]>,
    selector: S,
}

/// What `Backend::ext` holds for a backend handed out by a [`Selection`].
#[derive(Debug, Clone)]
struct NodeHandle(Arc<NodeState>);

/// The state of a backend returned by `LoadBalancer<Selection<S>>::select` (or yielded by
/// [`SelectionIter`]); `None` for a backend that did not come from a [`Selection`].
pub fn node_state(backend: &Backend) -> Option<&Arc<NodeState>> {
    backend.ext.get::<NodeHandle>().map(|h| &h.0)
}

/// One backend as [`FromBackends`] sees it: the Pingora backend (address and weight) and its
/// shared state.
#[derive(Debug, Clone, Copy)]
pub struct BackendNode<'a> {
    /// The backend as discovered, its state in `ext` ([`node_state`]).
    pub backend: &'a Backend,
    /// Its state: in-flight count and latency estimate, shared with every [`Attempt`].
    pub state: &'a Arc<NodeState>,
}

impl BackendNode<'_> {
    /// The backend's weight.
    pub fn weight(&self) -> u64 {
        self.backend.weight as u64
    }
}

/// Builds a selector over a Pingora backend set: what [`Selection<S>`] needs of `S`.
///
/// `nodes` are in the set's order (Pingora's `BTreeSet<Backend>` order: by address, then
/// weight); the index a selector returns is an index into `nodes`. Implemented by the four
/// algorithms; implement it for a custom [`LevelSelector`] to use that in a Pingora
/// `LoadBalancer` as well.
pub trait FromBackends: LevelSelector + Sized {
    /// The selector over `nodes`; `config` is the balancer's (or a default one).
    fn from_backends(nodes: &[BackendNode<'_>], config: &SelectionConfig) -> Self;

    /// The backend at `index`, picked by `select(key, eligible)`, was refused (Pingora asked
    /// for another candidate: unhealthy, or `select_with`'s `accept` said no): undo what that
    /// pick did to the selector's state, where the algorithm can. Default: nothing (the
    /// stateless picks of `chash` and `ewma`; `least_conn`'s tie rotation stays moved).
    fn refused(&self, index: usize, eligible: Eligible<'_>) {
        let _ = (index, eligible);
    }
}

/// `BackendSelection::Config` of [`Selection`]: the table of per-node state shared by every
/// selector built with it (and every clone of it), and the algorithms' parameters.
///
/// Node state is keyed by backend address (not weight), held weakly: it lives while a
/// selector or an [`Attempt`] uses it, so a rebuild keeps the in-flight counts and latency
/// estimates of the backends that stay.
#[derive(Debug, Clone, Default)]
pub struct SelectionConfig {
    states: Arc<StateTable<String, NodeState>>,
    hash_balance_factor: Option<f64>,
}

impl SelectionConfig {
    /// A config with an empty state table and no bounded loads.
    pub fn new() -> Self {
        Self::default()
    }

    /// `chash` with bounded loads (`hash_balance_factor`, docs/algorithms.md): a backend is
    /// skipped while its in-flight count is `>= ceil(c × M × w / Σw)`. Counts come from
    /// [`Attempt`]s.
    pub fn with_hash_balance_factor(mut self, factor: f64) -> Self {
        self.hash_balance_factor = Some(factor);
        self
    }

    /// The bounded-loads factor given to `chash`, if any.
    pub fn hash_balance_factor(&self) -> Option<f64> {
        self.hash_balance_factor
    }

    /// The live state of the backend at this address (whatever its weight), if a selector
    /// built with this config, or an attempt, still holds it.
    pub fn node_state(&self, backend: &Backend) -> Option<Arc<NodeState>> {
        self.states.get(state_key(backend).as_str())
    }

    fn state_for(&self, backend: &Backend) -> Arc<NodeState> {
        self.states
            .get_or_insert(state_key(backend), |_| true, NodeState::default)
    }
}

fn state_key(backend: &Backend) -> String {
    backend.addr.to_string()
}

impl<S: FromBackends> Selection<S> {
    /// A selection over `backends` (in iteration order) with state from `config`.
    pub fn new<'b>(
        backends: impl IntoIterator<Item = &'b Backend>,
        config: &SelectionConfig,
    ) -> Self {
        let (backends, states): (Vec<Backend>, Vec<Arc<NodeState>>) = backends
            .into_iter()
            .map(|b| {
                let state = config.state_for(b);
                let mut b = b.clone();
                b.ext.insert(NodeHandle(Arc::clone(&state)));
                (b, state)
            })
            .unzip();
        let nodes: Vec<BackendNode<'_>> = backends
            .iter()
            .zip(&states)
            .map(|(backend, state)| BackendNode { backend, state })
            .collect();
        let selector = S::from_backends(&nodes, config);
        Selection {
            backends: backends.into(),
            states: states.into(),
            selector,
        }
    }
}

impl<S> Selection<S> {
    /// The backends in selector order, each carrying its state ([`node_state`]).
    pub fn backends(&self) -> &[Backend] {
        &self.backends
    }

    /// The state of each backend, in the same order.
    pub fn states(&self) -> &[Arc<NodeState>] {
        &self.states
    }

    /// The algorithm, with its indices into [`backends`](Self::backends).
    pub fn selector(&self) -> &S {
        &self.selector
    }
}

impl<S: FromBackends> BackendSelection for Selection<S> {
    type Iter = SelectionIter<S>;
    type Config = SelectionConfig;

    fn build_with_config(backends: &BTreeSet<Backend>, config: &SelectionConfig) -> Self {
        Selection::new(backends, config)
    }

    /// Without a config: fresh node state for this build only.
    fn build(backends: &BTreeSet<Backend>) -> Self {
        Selection::new(backends, &SelectionConfig::default())
    }

    /// `key` is the key given to `LoadBalancer::select`, passed as is to the selector (`chash`
    /// hashes it with CRC-32 like APISIX; the others ignore it).
    fn iter(self: &Arc<Self>, key: &[u8]) -> Self::Iter {
        SelectionIter {
            sel: Arc::clone(self),
            key: key.into(),
            first: None,
            rest: Vec::new(),
            done: false,
        }
    }
}

/// Yields the algorithm's pick, then the algorithm's pick among the backends not yet yielded,
/// until none is left (Pingora's `select_with` asks for more while it refuses candidates).
/// Picks are made lazily, one per `next`; asking for the next one tells the selector the
/// previous one was refused ([`FromBackends::refused`]).
///
/// Pingora's `UniqueIterator` calls `next` once more when `max_iterations` runs out before
/// the backends do, and drops that pick: with `max_iterations` below the backend count and
/// every candidate refused, one round-robin turn is lost.
pub struct SelectionIter<S> {
    sel: Arc<Selection<S>>,
    key: Box<[u8]>,
    /// Backends yielded so far, in order (`first`, then `rest`).
    first: Option<usize>,
    rest: Vec<usize>,
    done: bool,
}

impl<S> SelectionIter<S> {
    /// Whether backend `i` was among the first `k` yielded.
    fn yielded_before(&self, k: usize, i: usize) -> bool {
        k > 0 && (self.first == Some(i) || self.rest[..k - 1].contains(&i))
    }

    fn yielded(&self) -> usize {
        self.first.map_or(0, |_| 1 + self.rest.len())
    }
}

impl<S: FromBackends> SelectionIter<S> {
    /// The eligibility of pick number `k`: every backend not yielded before it.
    fn select(&self, k: usize) -> Option<usize> {
        let selector = &self.sel.selector;
        if k == 0 {
            return selector.select(&self.key, Eligible::All);
        }
        let fresh = |i: usize| !self.yielded_before(k, i);
        selector.select(&self.key, Eligible::Only(&fresh))
    }

    /// Pick number `k` (backend `i`) was refused.
    fn refuse(&self, k: usize, i: usize) {
        let selector = &self.sel.selector;
        if k == 0 {
            selector.refused(i, Eligible::All);
        } else {
            let fresh = |j: usize| !self.yielded_before(k, j);
            selector.refused(i, Eligible::Only(&fresh));
        }
    }
}

impl<S: FromBackends> BackendIter for SelectionIter<S> {
    fn next(&mut self) -> Option<&Backend> {
        if self.done {
            return None;
        }
        let k = self.yielded();
        if let Some(prev) = self.rest.last().copied().or(self.first) {
            self.refuse(k - 1, prev);
        }
        let Some(i) = self.select(k) else {
            self.done = true;
            return None;
        };
        if self.first.is_none() {
            self.first = Some(i);
        } else {
            self.rest.push(i);
        }
        self.sel.backends.get(i)
    }
}

/// One request attempt on a backend picked through `LoadBalancer<Selection<S>>`: counts it in
/// flight (for `least_conn`, `ewma` and `chash` bounded loads) until finished or dropped, and
/// feeds `ewma` its latency sample.
///
/// ```
/// use pingora_load_balancing::LoadBalancer;
/// use weir_balance::{Attempt, LeastConn, Selection};
///
/// let lb: LoadBalancer<Selection<LeastConn>> =
///     LoadBalancer::try_from_iter(["127.0.0.1:8001", "127.0.0.1:8002"]).unwrap();
/// let backend = lb.select(b"", 8).unwrap();
/// let attempt = Attempt::begin(&backend).unwrap();
/// // ... send the request, wait for the response header ...
/// // While it is in flight, least_conn sends the next request elsewhere.
/// assert_ne!(lb.select(b"", 8).unwrap().addr, backend.addr);
/// attempt.finish(); // releases the count; the elapsed time is ewma's sample
/// ```
#[derive(Debug)]
#[must_use = "an attempt counts in flight until dropped"]
pub struct Attempt {
    guard: InFlight,
    started: Instant,
}

impl Attempt {
    /// Start an attempt on a backend handed out by a [`Selection`]; `None` for a backend
    /// that carries no state (not from a [`Selection`]).
    #[must_use = "an attempt counts in flight until dropped"]
    pub fn begin(backend: &Backend) -> Option<Attempt> {
        node_state(backend).map(|s| Attempt {
            guard: s.begin(),
            started: Instant::now(),
        })
    }

    /// The backend's state (in-flight count, latency estimate).
    pub fn state(&self) -> &Arc<NodeState> {
        self.guard.node()
    }

    /// Time since [`begin`](Self::begin).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// End the attempt with its elapsed time as the latency sample; returns the sample.
    pub fn finish(self) -> Duration {
        let sample = self.elapsed();
        self.finish_with(sample);
        sample
    }

    /// End the attempt with an explicit latency sample (Weir's proxy uses at least 1 s for a
    /// connect, send or read error, so fast-failing nodes are not favoured).
    pub fn finish_with(self, sample: Duration) {
        self.guard.node().observe(sample);
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
