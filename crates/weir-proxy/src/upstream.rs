//! An upstream compiled for the data path: nodes grouped into priority levels, each node with
//! its shared state and a ready-made Pingora peer, and the selection walk of docs/data-path.md
//! and §4.5 (tried set, level descent, single-node rule).

use crate::health::UpstreamHealth;
use crate::pool::PoolState;
use pingora::upstreams::peer::HttpPeer;
use smallvec::SmallVec;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use weir_balance::{Eligible, LevelSelector, NodeState};
use weir_config::{LbType, PassHost, Scheme, Upstream};
use weir_health::tls::IpVerifier;
use weir_health::Target;

/// One node of a compiled upstream.
#[derive(Debug)]
pub struct NodeRuntime {
    /// Host as configured (`10.0.0.1`, `api.internal`, `[::1]`).
    pub host: String,
    /// What identifies the node across snapshots: `host`, or `host@address` for a host-name
    /// node (one node per address the name resolves to).
    pub identity: String,
    /// `host` is an IP literal (not a name that was resolved).
    pub host_is_ip: bool,
    pub port: u16,
    pub addr: SocketAddr,
    pub weight: u32,
    /// `Host` for `pass_host: node`: host, plus `:port` unless it is the scheme default.
    pub node_host_header: String,
    /// SNI for `pass_host: node`: the host name, or empty for an IP literal.
    pub node_sni: String,
    pub state: Arc<NodeState>,
    /// The node's health target (upstreams with `checks`).
    pub health: Option<Arc<Target>>,
    /// Certificate check by IP SAN, for attempts sent without SNI under `tls_verify`.
    pub ip_verifier: Option<IpVerifier>,
    /// HTTP/2 connection generation (grpc/grpcs): part of the pool key, bumped when one of
    /// the node's connections has carried `keepalive_pool.requests` streams, so new streams
    /// open a new connection and the old one drains and idles out.
    pub h2_epoch: Arc<AtomicU64>,
    /// Peer with everything but the per-request parts (SNI under `pass`, timeouts).
    pub peer: HttpPeer,
    /// The node's counts (`None` with metrics off).
    pub metrics: Option<Arc<crate::metrics::NodeMetrics>>,
    /// Outlier detection state (upstreams with `outlier_detection`).
    pub outlier: Option<Arc<weir_resilience::NodeOutlier>>,
    /// Slow-start state (upstreams with `slow_start`, except `chash`).
    pub ramp: Option<Arc<crate::resilience::NodeRamp>>,
}

/// What a level's balancer is built from; the balancer (round-robin cycle, ring, rotation) is
/// kept across reloads while this stays the same.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelSpec {
    /// `(host, port, weight)` of each node, in order.
    pub nodes: Vec<(String, u16, u32)>,
    pub lb: LbType,
    /// The registration that built the selector ([`weir_balance::Registered::id`]; 0: none).
    pub algorithm: u64,
    /// The algorithm's parameters ([`Upstream::algorithm_params`]).
    pub params: serde_json::Value,
}

/// The balancer of one priority level.
pub struct LevelState {
    pub spec: LevelSpec,
    pub selector: Box<dyn LevelSelector>,
    /// Picks made while a node of the level ramps (slow start).
    pub ramp_seq: AtomicU64,
}

impl std::fmt::Debug for LevelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LevelState")
            .field("spec", &self.spec)
            .finish()
    }
}

#[derive(Debug)]
pub struct Level {
    pub priority: i64,
    /// Nodes `start..end` of the upstream's node list.
    pub start: usize,
    pub end: usize,
    pub state: Arc<LevelState>,
}

/// A compiled upstream.
#[derive(Debug)]
pub struct UpstreamRuntime {
    /// `upstreams/<id>`, `routes/<id>` or `services/<id>`.
    pub key: String,
    pub conf: Upstream,
    /// All nodes, highest priority level first, configured order within a level.
    pub nodes: Vec<NodeRuntime>,
    pub levels: Vec<Level>,
    pub pool: Arc<PoolState>,
    /// Checker and passive thresholds (`checks` only).
    pub health: Option<UpstreamHealth>,
    /// Whether attempts feed the nodes' latency estimates: the algorithm asks for them
    /// ([`weir_balance::Algorithm::latency_samples`]; the built-in `ewma`).
    pub latency_samples: bool,
    /// The upstream's counts (`None` with metrics off).
    pub metrics: Option<Arc<crate::metrics::UpstreamMetrics>>,
    /// Outlier detection, slow start, limits and the panic threshold.
    pub resilience: crate::resilience::UpstreamResilience,
}

impl NodeRuntime {
    /// Up by its health state (always, without `checks`).
    #[inline]
    pub fn is_up(&self) -> bool {
        self.health.as_ref().is_none_or(|t| t.is_up())
    }

    /// Up and not ejected by outlier detection at `now` (resilience clock, ms).
    #[inline]
    pub fn is_usable(&self, now: u64) -> bool {
        self.is_up() && self.outlier.as_ref().is_none_or(|o| !o.is_ejected(now))
    }
}

/// How one pick filters nodes, decided once per pick.
#[derive(Debug, Clone, Copy)]
struct Filter {
    /// Skip unusable nodes (some are, not all, and no panic).
    usable: bool,
    /// Skip nodes at `max_requests_per_node` (0: no limit).
    per_node: u64,
    /// The resilience clock, when ejections are looked at.
    now: u64,
}

/// Per-request selection state: the current level and the nodes tried at it.
#[derive(Debug, Default)]
pub struct Walk {
    pub level: usize,
    pub tried: SmallVec<[u32; 4]>,
}

impl UpstreamRuntime {
    /// Attempts allowed for one request: `1 + retries`, `retries` defaulting to the node
    /// count − 1.
    pub fn max_attempts(&self) -> u32 {
        let retries = self
            .conf
            .retries
            .unwrap_or_else(|| self.nodes.len().saturating_sub(1) as u32);
        retries.saturating_add(1)
    }

    /// How picks filter right now. With health checks only: down nodes are skipped while
    /// some node is up (one atomic read). With outlier detection or a panic threshold the
    /// usable nodes (up, not ejected) are counted: unusable ones are skipped while some node
    /// is usable and the usable share is not below `healthy_panic_threshold` (panic: every
    /// node is eligible, counted in `upstream_panic_total` when `panicked` is given).
    #[inline]
    fn filter(&self, panicked: bool) -> Filter {
        let r = &self.resilience;
        let per_node = r.per_node_limit();
        if !r.counts_usable(self.health.is_some()) {
            return Filter {
                usable: self.health.as_ref().is_some_and(|h| h.filtering()),
                per_node,
                now: 0,
            };
        }
        let now = weir_resilience::now_ms();
        let usable = self.nodes.iter().filter(|n| n.is_usable(now)).count();
        let total = self.nodes.len();
        let panic = usable < total && weir_resilience::in_panic(usable, total, r.panic_threshold);
        if panic && panicked {
            if let Some(m) = &self.metrics {
                m.panics.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Filter {
            usable: usable > 0 && usable < total && !panic,
            per_node,
            now,
        }
    }

    #[inline]
    fn eligible(&self, walk: &Walk, idx: usize, f: Filter) -> bool {
        let n = &self.nodes[idx];
        !walk.tried.contains(&(idx as u32))
            && (!f.usable || n.is_usable(f.now))
            && (f.per_node == 0 || n.state.in_flight() < f.per_node)
    }

    /// Whether every node a pick would consider (the usable ones, or all under fail-open or
    /// panic) is at `max_requests_per_node`: an overflow, not a failure.
    pub(crate) fn all_full(&self) -> bool {
        let limit = self.resilience.per_node_limit();
        if limit == 0 {
            return false;
        }
        let f = self.filter(false);
        self.nodes
            .iter()
            .filter(|n| !f.usable || n.is_usable(f.now))
            .all(|n| n.state.in_flight() >= limit)
    }

    /// Pick the next node for this request, walking down the levels as they run out. Down
    /// and ejected nodes are skipped while some node is usable (docs/health-checks.md,
    /// docs/resilience.md); full nodes are skipped.
    pub fn pick(&self, key: &[u8], walk: &mut Walk) -> Option<usize> {
        if self.nodes.len() == 1 {
            // Single-node upstream: no tried set, no health, every retry goes to the node
            // (unless it is at `max_requests_per_node`).
            let limit = self.resilience.per_node_limit();
            return (limit == 0 || self.nodes[0].state.in_flight() < limit).then_some(0);
        }
        let f = self.filter(walk.level == 0 && walk.tried.is_empty());
        while let Some(level) = self.levels.get(walk.level) {
            let start = level.start;
            let ok = |i: usize| self.eligible(walk, start + i, f);
            if let Some(i) = self.ramping_pick(level, &ok) {
                let idx = start + i;
                walk.tried.push(idx as u32);
                return Some(idx);
            }
            let eligible = if walk.tried.is_empty() && !f.usable && f.per_node == 0 {
                Eligible::All
            } else {
                Eligible::Only(&ok)
            };
            // A selector (a user's algorithm among them) must answer within its level and
            // among the eligible nodes; anything else is no pick, never a wrong node.
            let chosen = level
                .state
                .selector
                .select(key, eligible)
                .filter(|&i| start + i < level.end && ok(i));
            if let Some(i) = chosen {
                let idx = start + i;
                walk.tried.push(idx as u32);
                return Some(idx);
            }
            walk.level += 1;
            walk.tried.clear();
        }
        None
    }

    /// With slow start: note which nodes of `level` became usable (their ramp starts) and,
    /// while one ramps, pick by effective weights; `None` otherwise (the level's selector
    /// picks).
    fn ramping_pick(&self, level: &Level, ok: &dyn Fn(usize) -> bool) -> Option<usize> {
        let params = self.resilience.slow_start.as_ref()?;
        let now = weir_resilience::now_ms();
        let mut ramping = false;
        for n in &self.nodes[level.start..level.end] {
            if let Some(r) = &n.ramp {
                r.observe(n.is_usable(now), crate::resilience::outages(n), now);
                ramping |= r.slow.factor(now, params) < 1.0;
            }
        }
        if !ramping {
            return None;
        }
        crate::resilience::ramp_pick(level, &self.nodes, &self.conf.lb, params, now, ok)
    }

    /// Whether [`pick`](Self::pick) would find another node, without moving any state.
    pub fn has_candidate(&self, walk: &Walk) -> bool {
        if self.nodes.len() == 1 {
            return true;
        }
        let f = self.filter(false);
        let Some(level) = self.levels.get(walk.level) else {
            return false;
        };
        let fresh = Walk::default();
        (level.start..level.end).any(|i| self.pickable(level, i) && self.eligible(walk, i, f))
            || self.levels[walk.level + 1..].iter().any(|l| {
                (l.start..l.end).any(|i| self.pickable(l, i) && self.eligible(&fresh, i, f))
            })
    }

    /// Whether the level's selector can ever return node `i` (a `chash` ring has no point for
    /// a weight-0 node).
    #[inline]
    fn pickable(&self, level: &Level, i: usize) -> bool {
        level.state.selector.can_pick(i - level.start)
    }

    /// `Host` to send for this node, or `None` to pass the client's.
    pub fn host_header<'a>(&'a self, node: &'a NodeRuntime) -> Option<&'a str> {
        match &self.conf.pass_host {
            PassHost::Pass => None,
            PassHost::Node => Some(&node.node_host_header),
            PassHost::Rewrite(h) => Some(h),
        }
    }
}

/// The pool group of an upstream: connections never cross upstream keys, schemes, or TLS trust
/// and identity (`tls_fingerprint` covers verification, CA and client certificate). Pingora's
/// own pool key adds address, SNI and client-certificate serials, but not the CA.
pub fn group_key(key: &str, scheme: Scheme, tls_fingerprint: u64) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    scheme.hash(&mut h);
    tls_fingerprint.hash(&mut h);
    h.finish()
}

/// `Host` value for `pass_host: node`.
pub fn node_host_header(host: &str, port: u16, scheme: Scheme) -> String {
    if port == scheme.default_port() {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    }
}

/// SNI for a host value (port already removed): none for IP literals.
pub fn sni_for(host: &str) -> &str {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        ""
    } else {
        host
    }
}
