//! Selection algorithms by name: the [`Algorithm`] factory, which builds the
//! [`LevelSelector`] of one priority level from its nodes and the algorithm's own typed
//! parameters, and the [`AlgorithmRegistry`] that maps an upstream's `type` to one. The four
//! built-ins are registered in every registry under their APISIX names, the same way an
//! embedder registers its own (docs/algorithms.md, "Custom algorithms").

use crate::chash::ConsistentHash;
use crate::ewma::PeakEwma;
use crate::least_conn::LeastConn as LeastConnSelector;
use crate::node::NodeState;
use crate::selection::{Eligible, LevelSelector};
use crate::swrr::SmoothWeighted;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// One node of a priority level, as an [`Algorithm`] sees it. The index of a node in the
/// slice given to [`Algorithm::build`] is the index its selector returns.
#[derive(Debug, Clone, Copy)]
pub struct LevelNode<'a> {
    /// The configured weight (may be 0).
    pub weight: u64,
    /// The node's shared state: requests in flight (always counted) and the latency estimate
    /// (fed only to algorithms whose [`Algorithm::latency_samples`] is true). It outlives
    /// configuration reloads while the node stays.
    pub state: &'a Arc<NodeState>,
    /// The address requests are sent to.
    pub addr: SocketAddr,
    /// The node's identity as `chash` hashes it ([`ring_id`](crate::ring_id): the host as
    /// written for an IP node, the resolved address for a host-name node, then the port).
    pub id: &'a [u8],
}

/// Builds the selector of one priority level: a selection algorithm an upstream names with
/// `type: <name>` once the algorithm is registered under that name.
///
/// `build` runs when a snapshot compiles and the level's nodes, weights, parameters or the
/// registration changed; otherwise the level keeps its selector (and its state: a
/// round-robin cycle, a ring) across reloads. Picks call the selector only, so a selector
/// should pick without allocating or blocking.
pub trait Algorithm: Send + Sync + 'static {
    /// The algorithm's parameters: the upstream's `<name>` block (`{}` when the upstream has
    /// none), deserialised when the configuration loads (an error there refuses the
    /// configuration with its path) and again for each build. Use
    /// `#[serde(deny_unknown_fields)]` to refuse unknown members, [`NoParams`] for none.
    type Params: DeserializeOwned + Send + Sync + 'static;

    /// The selector over `nodes` (one level, configured order; never empty).
    fn build(&self, nodes: &[LevelNode<'_>], params: &Self::Params) -> Box<dyn LevelSelector>;

    /// Whether attempts on this algorithm's upstreams feed each node's latency estimate
    /// ([`NodeState::observe`], read with [`NodeState::ewma_at`]): the built-in `ewma` only,
    /// by default. In-flight counts ([`NodeState::in_flight`]) are kept for every algorithm.
    fn latency_samples(&self) -> bool {
        false
    }
}

/// The parameters of an algorithm that has none: only `{}` (or no block) is accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// The built-in algorithms as [`Algorithm`]s.
pub mod builtin {
    use super::*;

    /// `roundrobin`: smooth weighted round robin ([`SmoothWeighted`]).
    #[derive(Debug, Clone, Copy, Default)]
    pub struct RoundRobin;

    /// `chash`: APISIX's consistent-hash ring ([`ConsistentHash`]).
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Chash;

    /// `least_conn`: fewest requests in flight per weight ([`LeastConn`](crate::LeastConn)).
    #[derive(Debug, Clone, Copy, Default)]
    pub struct LeastConn;

    /// `ewma`: peak-EWMA latency × (in flight + 1) ([`PeakEwma`]).
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Ewma;

    /// `chash`'s parameters. APISIX has no `chash` block: Weir's proxy passes the upstream's
    /// own `hash_balance_factor`.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ChashParams {
        /// Bounded loads (docs/algorithms.md).
        #[serde(default)]
        pub hash_balance_factor: Option<f64>,
    }

    fn weighted(nodes: &[LevelNode<'_>]) -> Vec<(u64, Arc<NodeState>)> {
        nodes
            .iter()
            .map(|n| (n.weight, Arc::clone(n.state)))
            .collect()
    }

    impl Algorithm for RoundRobin {
        type Params = NoParams;
        fn build(&self, nodes: &[LevelNode<'_>], _: &NoParams) -> Box<dyn LevelSelector> {
            let w: Vec<u64> = nodes.iter().map(|n| n.weight).collect();
            Box::new(SmoothWeighted::new(&w))
        }
    }

    impl Algorithm for Chash {
        type Params = ChashParams;
        fn build(&self, nodes: &[LevelNode<'_>], p: &ChashParams) -> Box<dyn LevelSelector> {
            let ring: Vec<(Vec<u8>, u64, Arc<NodeState>)> = nodes
                .iter()
                .map(|n| (n.id.to_vec(), n.weight, Arc::clone(n.state)))
                .collect();
            Box::new(ConsistentHash::new(&ring, p.hash_balance_factor))
        }
    }

    impl Algorithm for LeastConn {
        type Params = NoParams;
        fn build(&self, nodes: &[LevelNode<'_>], _: &NoParams) -> Box<dyn LevelSelector> {
            Box::new(LeastConnSelector::new(&weighted(nodes)))
        }
    }

    impl Algorithm for Ewma {
        type Params = NoParams;
        fn build(&self, nodes: &[LevelNode<'_>], _: &NoParams) -> Box<dyn LevelSelector> {
            Box::new(PeakEwma::new(&weighted(nodes)))
        }

        fn latency_samples(&self) -> bool {
            true
        }
    }
}

/// The built-in names, in APISIX's documented order.
pub const BUILTIN_ALGORITHMS: &[&str] = &["roundrobin", "chash", "least_conn", "ewma"];

/// An [`Algorithm`] with its parameters' type erased.
trait Erased: Send + Sync {
    fn build(
        &self,
        nodes: &[LevelNode<'_>],
        params: &Value,
    ) -> Result<Box<dyn LevelSelector>, String>;
    fn latency_samples(&self) -> bool;
}

impl<A: Algorithm> Erased for A {
    fn build(
        &self,
        nodes: &[LevelNode<'_>],
        params: &Value,
    ) -> Result<Box<dyn LevelSelector>, String> {
        let p = A::Params::deserialize(params).map_err(|e| e.to_string())?;
        Ok(Algorithm::build(self, nodes, &p))
    }

    fn latency_samples(&self) -> bool {
        Algorithm::latency_samples(self)
    }
}

/// One registration of an algorithm, as looked up in an [`AlgorithmRegistry`].
#[derive(Clone)]
pub struct Registered {
    id: u64,
    alg: Arc<dyn Erased>,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Registered").field(&self.id).finish()
    }
}

impl Registered {
    /// Unique per registration (process-wide): a level built by an earlier registration of
    /// the same name is rebuilt.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The selector of one level; an error when `params` do not deserialise into the
    /// algorithm's parameters.
    pub fn build(
        &self,
        nodes: &[LevelNode<'_>],
        params: &Value,
    ) -> Result<Box<dyn LevelSelector>, String> {
        self.alg.build(nodes, params)
    }

    /// See [`Algorithm::latency_samples`].
    pub fn latency_samples(&self) -> bool {
        self.alg.latency_samples()
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Algorithms by name: the four built-ins (always), and the ones an embedder registered.
/// Looked up when a snapshot compiles, never per pick.
pub struct AlgorithmRegistry(RwLock<BTreeMap<String, Registered>>);

impl Default for AlgorithmRegistry {
    fn default() -> Self {
        let r = AlgorithmRegistry(RwLock::new(BTreeMap::new()));
        r.insert("roundrobin", builtin::RoundRobin);
        r.insert("chash", builtin::Chash);
        r.insert("least_conn", builtin::LeastConn);
        r.insert("ewma", builtin::Ewma);
        r
    }
}

impl std::fmt::Debug for AlgorithmRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AlgorithmRegistry")
            .field(&self.names())
            .finish()
    }
}

impl AlgorithmRegistry {
    /// A registry with the built-ins.
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `algorithm` as `name`, replacing an earlier registration of that name.
    ///
    /// # Panics
    ///
    /// If `name` is a built-in's ([`BUILTIN_ALGORITHMS`]): their configuration rules
    /// (`hash_on`, `key`, `hash_balance_factor`) belong to them.
    pub fn register<A: Algorithm>(&self, name: &str, algorithm: A) {
        assert!(
            !BUILTIN_ALGORITHMS.contains(&name),
            "{name} is a built-in algorithm and cannot be replaced"
        );
        self.insert(name, algorithm);
    }

    fn insert<A: Algorithm>(&self, name: &str, algorithm: A) {
        let entry = Registered {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            alg: Arc::new(algorithm),
        };
        let mut m = self.0.write().unwrap_or_else(|p| p.into_inner());
        m.insert(name.to_owned(), entry);
    }

    /// The algorithm registered as `name`.
    pub fn get(&self, name: &str) -> Option<Registered> {
        let m = self.0.read().unwrap_or_else(|p| p.into_inner());
        m.get(name).cloned()
    }

    /// Every registered name (built-ins included), sorted.
    pub fn names(&self) -> Vec<String> {
        let m = self.0.read().unwrap_or_else(|p| p.into_inner());
        m.keys().cloned().collect()
    }
}

/// The selector of a level whose algorithm is not registered (validation accepted a name the
/// registry does not have): it picks nothing.
#[derive(Debug, Default)]
pub struct Unregistered;

impl LevelSelector for Unregistered {
    fn select(&self, _key: &[u8], _eligible: Eligible<'_>) -> Option<usize> {
        None
    }

    fn can_pick(&self, _index: usize) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Always the node at `index`, when eligible.
    struct Fixed;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FixedParams {
        index: usize,
    }

    struct FixedSelector(usize);

    impl LevelSelector for FixedSelector {
        fn select(&self, _key: &[u8], eligible: Eligible<'_>) -> Option<usize> {
            eligible.test(self.0).then_some(self.0)
        }
    }

    impl Algorithm for Fixed {
        type Params = FixedParams;
        fn build(&self, nodes: &[LevelNode<'_>], p: &FixedParams) -> Box<dyn LevelSelector> {
            Box::new(FixedSelector(p.index.min(nodes.len() - 1)))
        }
    }

    fn level(weights: &[u64]) -> (Vec<Arc<NodeState>>, Vec<Vec<u8>>) {
        let states = weights.iter().map(|_| Arc::default()).collect();
        let ids = (0..weights.len())
            .map(|i| crate::ring_id(&format!("10.0.0.{i}"), 80))
            .collect();
        (states, ids)
    }

    fn nodes<'a>(
        weights: &[u64],
        states: &'a [Arc<NodeState>],
        ids: &'a [Vec<u8>],
    ) -> Vec<LevelNode<'a>> {
        weights
            .iter()
            .zip(states.iter().zip(ids))
            .enumerate()
            .map(|(i, (w, (state, id)))| LevelNode {
                weight: *w,
                state,
                addr: ([10, 0, 0, i as u8], 80).into(),
                id,
            })
            .collect()
    }

    #[test]
    fn builtins_are_registered_by_name() {
        let r = AlgorithmRegistry::new();
        assert_eq!(r.names(), ["chash", "ewma", "least_conn", "roundrobin"]);
        let w = [2, 1];
        let (states, ids) = level(&w);
        let level_nodes = nodes(&w, &states, &ids);
        let rr = r.get("roundrobin").unwrap();
        let sel = rr.build(&level_nodes, &json!({})).unwrap();
        let picks: Vec<_> = (0..3).map(|_| sel.select(b"", Eligible::All)).collect();
        assert_eq!(picks, [Some(0), Some(1), Some(0)]);
        assert!(rr.build(&level_nodes, &json!({"x": 1})).is_err());
        assert!(r.get("ewma").unwrap().latency_samples());
        assert!(!r.get("least_conn").unwrap().latency_samples());
        // chash: the same ring as ConsistentHash::new, weight-0 nodes never pickable.
        let w0 = [1, 0];
        let (states, ids) = level(&w0);
        let zero = nodes(&w0, &states, &ids);
        let ch = r.get("chash").unwrap();
        let sel = ch
            .build(&zero, &json!({"hash_balance_factor": 2.0}))
            .unwrap();
        assert_eq!(sel.select(b"k", Eligible::All), Some(0));
        assert!(sel.can_pick(0) && !sel.can_pick(1));
        assert!(r.get("rr").is_none());
    }

    #[test]
    fn registered_algorithms_get_their_params_and_a_new_id() {
        let r = AlgorithmRegistry::new();
        r.register("fixed", Fixed);
        let first = r.get("fixed").unwrap();
        let w = [1, 1, 1];
        let (states, ids) = level(&w);
        let nodes = nodes(&w, &states, &ids);
        let sel = first.build(&nodes, &json!({"index": 2})).unwrap();
        assert_eq!(sel.select(b"", Eligible::All), Some(2));
        assert_eq!(sel.select(b"", Eligible::Only(&|i| i != 2)), None);
        let Err(err) = first.build(&nodes, &json!({})) else {
            panic!("built without its parameter");
        };
        assert!(err.contains("missing field `index`"), "{err}");
        assert!(!first.latency_samples());
        r.register("fixed", Fixed);
        assert_ne!(r.get("fixed").unwrap().id(), first.id());
        assert_eq!(
            r.names(),
            ["chash", "ewma", "fixed", "least_conn", "roundrobin"]
        );
    }

    #[test]
    #[should_panic(expected = "built-in")]
    fn builtins_cannot_be_replaced() {
        AlgorithmRegistry::new().register("chash", Fixed);
    }
}
