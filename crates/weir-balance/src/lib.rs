//! Weir's load-balancing algorithms.
//!
//! Each algorithm picks one node of one priority level given an *eligibility* predicate (the
//! node is up and not yet tried by this request). Weir's proxy calls [`LevelSelector::select`]
//! directly; [`Selection`] adapts any selector that can be built from a backend set
//! ([`FromBackends`]: all four algorithms) to Pingora's [`BackendSelection`], so the same
//! algorithms plug into a plain Pingora `LoadBalancer<Selection<S>>`. There the caller reports
//! requests in flight and their latency with an [`Attempt`] per request, and shares node state
//! across rebuilds through a [`SelectionConfig`] (docs/algorithms.md, "From a plain Pingora
//! `LoadBalancer`").
//!
//! Why Weir's proxy does not go through `LoadBalancer::select_with`: Pingora keeps backends in
//! a `BTreeSet` (address order), while APISIX semantics need the configured node order (ties,
//! smooth WRR sequences), and `select_with` filters *after* the algorithm has advanced its
//! state, so a skipped node's state would move. Selecting with the predicate inside the
//! algorithm keeps smooth WRR exact: an ineligible node keeps its place in the cycle.
//! ([`Selection`] gets the same result for a refused smooth-WRR pick by undoing it,
//! [`FromBackends::refused`].)
//!
//! Weir's proxy builds each priority level's selector through an [`Algorithm`] found by the
//! upstream's `type` in an [`AlgorithmRegistry`]: the four built-ins ([`builtin`]) are
//! registered in every registry, and an embedder registers its own next to them.
//!
//! Per-node state that must outlive configuration reloads (in-flight counts, later health and
//! latency estimates) lives in a [`StateTable`] keyed by upstream and node identity.
//!
//! [`BackendSelection`]: pingora_load_balancing::selection::BackendSelection

mod algorithm;
mod chash;
mod ewma;
mod least_conn;
mod node;
mod pad;
mod selection;
mod swrr;
mod table;

pub use algorithm::{
    builtin, Algorithm, AlgorithmRegistry, LevelNode, NoParams, Registered, Unregistered,
    BUILTIN_ALGORITHMS,
};
pub use chash::{backend_ring_id, ring_id, ConsistentHash};
pub use ewma::PeakEwma;
pub use least_conn::LeastConn;
pub use node::{InFlight, NodeState, EWMA_DEFAULT, EWMA_TAU};
pub use selection::{
    node_state, Attempt, BackendNode, Eligible, FromBackends, LevelSelector, Selection,
    SelectionConfig, SelectionIter,
};
pub use swrr::SmoothWeighted;
pub use table::StateTable;
