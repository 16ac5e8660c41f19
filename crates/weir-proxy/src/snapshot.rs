//! The immutable, compiled configuration the data path serves, and its compilation from a
//! validated [`Resources`]. State that must outlive a snapshot (per-node counters, round-robin
//! cycles, pool accounting) is looked up in [`Tables`], so unchanged nodes keep it.

use crate::discovery::Resolver;
use crate::health::{fingerprint, probe_spec, target_spec, UpstreamHealth};
use crate::key_auth::ConsumerIndex;
use crate::pool::PoolState;
use crate::router::Router;
use crate::tls::{CertStore, PeerTls};
use crate::upstream::{
    group_key, node_host_header, sni_for, Level, LevelSpec, LevelState, NodeRuntime,
    UpstreamRuntime,
};
use pingora::upstreams::peer::HttpPeer;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use weir_balance::{
    ring_id, AlgorithmRegistry, LevelNode, LevelSelector, NodeState, Registered, StateTable,
    Unregistered,
};
use weir_config::{Id, Plugins, Resources, Scheme, Timeout, Upstream};
use weir_discovery::DiscoveryRegistry;
use weir_health::tls::IpVerifier;
use weir_health::HealthTable;

/// State shared across snapshots, keyed by upstream key and node or level identity.
#[derive(Debug, Default)]
pub struct Tables {
    nodes: StateTable<(String, String, u16), NodeState>,
    levels: StateTable<(String, i64), LevelState>,
    pools: StateTable<String, PoolState>,
    /// HTTP/2 connection generation per node (see `NodeRuntime::h2_epoch`).
    h2_epochs: StateTable<(String, String, u16), AtomicU64>,
    /// Checkers by upstream key: held strongly (they probe with or without traffic) and
    /// dropped when a snapshot no longer has the key with `checks`.
    pub health: Arc<HealthTable>,
    /// How typed plugins' configurations are parsed into each route's runtime.
    pub plugins: crate::plugin::PluginParsers,
    /// The selection algorithms upstreams name with `type`: the built-ins, and what
    /// [`register_algorithm`](Self::register_algorithm) added.
    pub algorithms: AlgorithmRegistry,
    /// Metric state (see [`crate::metrics`]); counting is on once enabled.
    pub metrics: crate::metrics::MetricsTables,
    /// Outlier detection, slow start and limits state (see [`crate::resilience`]).
    pub resilience: crate::resilience::ResilienceTables,
}

impl Tables {
    /// Register `algorithm` as the upstream `type` `name` (replacing an earlier registration
    /// of the name; levels built by it are rebuilt at the next compilation). Validation must
    /// accept the name too (`weir_config::Extensions::algorithm`); then
    /// [`SnapshotHandle::refresh`](crate::SnapshotHandle::refresh) to compile with it.
    ///
    /// # Panics
    ///
    /// If `name` is a built-in's (`roundrobin`, `chash`, `least_conn`, `ewma`).
    pub fn register_algorithm<A: weir_balance::Algorithm>(&self, name: &str, algorithm: A) {
        self.algorithms.register(name, algorithm);
    }

    fn prune(&self) {
        self.nodes.prune();
        self.levels.prune();
        self.pools.prune();
        self.h2_epochs.prune();
        self.metrics.prune();
        self.resilience.prune();
    }
}

/// A route ready to serve.
#[derive(Debug)]
pub struct RouteRuntime {
    pub id: Id,
    /// The route's `service_id`.
    pub service_id: Option<Id>,
    /// `None`: neither the route nor its service names an upstream (503).
    pub upstream: Option<Arc<UpstreamRuntime>>,
    pub timeout: Option<Timeout>,
    /// The route's plugins merged over its service's.
    pub plugins: Plugins,
    /// Consumers by key-auth key (shared by every route of the snapshot).
    pub consumers: Arc<ConsumerIndex>,
    /// The parsed configurations of the route's typed plugins.
    pub typed: crate::plugin::PluginConfigs,
    /// The route's metric cells (`None` with metrics off).
    pub metrics: Option<crate::metrics::RouteMetrics>,
    /// The route's `uris`, `hosts` (as written) and `methods`, for the status page.
    pub uris: Vec<String>,
    pub hosts: Vec<String>,
    pub methods: Vec<weir_config::Method>,
}

/// One compiled configuration.
#[derive(Debug)]
pub struct Snapshot {
    pub(crate) router: Router<Arc<RouteRuntime>>,
    /// Every compiled upstream by key (`upstreams/u1`, `routes/r1`, `services/s1`).
    pub upstreams: HashMap<String, Arc<UpstreamRuntime>>,
    /// Keys of every route, service and upstream (`routes/r1`, ...), compiled or not.
    pub known: HashSet<String>,
    /// The configured consumers' metric numbers.
    pub consumer_ids: Arc<HashMap<Arc<str>, u32>>,
}

impl Snapshot {
    /// An empty snapshot: every request gets 404.
    pub fn empty() -> Self {
        Snapshot {
            router: Router::new(std::iter::empty()),
            upstreams: HashMap::new(),
            known: HashSet::new(),
            consumer_ids: Arc::default(),
        }
    }

    /// Compile validated resources, reusing per-node state from `tables`, with no discovery:
    /// discovered upstreams and host-name nodes have no nodes.
    pub fn compile(res: &Resources, tables: &Tables) -> Snapshot {
        Self::compile_with(res, tables, &DiscoveryRegistry::new())
    }

    /// Compile validated resources against the current catalogs of `registries` (host-name
    /// nodes through its `dns` registry), reusing per-node state from `tables`; then tell each
    /// registry which services the configuration references.
    pub fn compile_with(
        res: &Resources,
        tables: &Tables,
        registries: &DiscoveryRegistry,
    ) -> Snapshot {
        let mut resolver = Resolver::new(registries);
        let snap = Self::compile_resolved(res, tables, &mut resolver);
        resolver.publish_wanted();
        snap
    }

    fn compile_resolved(res: &Resources, tables: &Tables, resolver: &mut Resolver<'_>) -> Snapshot {
        let mut upstreams: HashMap<String, Arc<UpstreamRuntime>> = HashMap::new();
        let mut known = HashSet::new();
        let certs = CertStore::new(res);
        for u in &res.upstreams {
            if let Some(id) = &u.id {
                let key = format!("upstreams/{id}");
                known.insert(key.clone());
                upstreams.insert(
                    key.clone(),
                    Arc::new(compile_upstream(key, u, tables, &certs, resolver)),
                );
            }
        }
        let mut services = HashMap::new();
        for s in &res.services {
            known.insert(format!("services/{}", s.id));
            let up = match (&s.upstream, &s.upstream_id) {
                (Some(inline), _) => {
                    let key = format!("services/{}", s.id);
                    let rt = Arc::new(compile_upstream(
                        key.clone(),
                        inline,
                        tables,
                        &certs,
                        resolver,
                    ));
                    upstreams.insert(key, Arc::clone(&rt));
                    Some(rt)
                }
                (None, Some(id)) => upstreams.get(&format!("upstreams/{id}")).cloned(),
                (None, None) => None,
            };
            services.insert(s.id.clone(), (s, up));
        }
        let consumer_ids: Arc<HashMap<Arc<str>, u32>> = Arc::new(
            res.consumers
                .iter()
                .map(|c| {
                    let name = Arc::<str>::from(c.username.as_str());
                    let id = tables.metrics.consumer_id(&name);
                    (name, id)
                })
                .collect(),
        );
        let consumers: Arc<ConsumerIndex> = Arc::new(
            res.consumers
                .iter()
                .filter_map(|c| {
                    let key = c.key.as_ref()?;
                    let (name, id) = consumer_ids.get_key_value(c.username.as_str())?;
                    Some((key.expose().to_owned(), (Arc::clone(name), *id)))
                })
                .collect(),
        );
        let mut compiled_routes = Vec::with_capacity(res.routes.len());
        for r in &res.routes {
            known.insert(format!("routes/{}", r.id));
            let service = r.service_id.as_ref().and_then(|id| services.get(id));
            let upstream = if let Some(inline) = &r.upstream {
                let key = format!("routes/{}", r.id);
                let rt = Arc::new(compile_upstream(
                    key.clone(),
                    inline,
                    tables,
                    &certs,
                    resolver,
                ));
                upstreams.insert(key, Arc::clone(&rt));
                Some(rt)
            } else if let Some(id) = &r.upstream_id {
                upstreams.get(&format!("upstreams/{id}")).cloned()
            } else {
                service.and_then(|(_, up)| up.clone())
            };
            let plugins = match service {
                Some((s, _)) => r.plugins.merged_over(&s.plugins),
                None => r.plugins.clone(),
            };
            let metrics = tables.metrics.enabled().then(|| {
                crate::metrics::compile::route_metrics(
                    &tables.metrics,
                    r,
                    upstream.as_deref(),
                    &consumer_ids,
                )
            });
            compiled_routes.push((
                r,
                Arc::new(RouteRuntime {
                    metrics,
                    uris: r
                        .uris
                        .iter()
                        .map(crate::metrics::compile::uri_label)
                        .collect(),
                    hosts: r
                        .hosts
                        .iter()
                        .map(|h| crate::metrics::compile::host_label(Some(h)))
                        .collect(),
                    methods: r.methods.clone().unwrap_or_default(),
                    id: r.id.clone(),
                    service_id: r.service_id.clone(),
                    upstream,
                    timeout: r.timeout,
                    typed: tables.plugins.parse(&plugins),
                    plugins,
                    consumers: Arc::clone(&consumers),
                }),
            ));
        }
        let router = Router::new(compiled_routes);
        let checked: HashSet<String> = upstreams
            .values()
            .filter(|u| u.health.is_some())
            .map(|u| u.key.clone())
            .collect();
        tables.health.retain(&checked);
        tables.prune();
        Snapshot {
            router,
            upstreams,
            known,
            consumer_ids,
        }
    }

    /// The best route for a request (see [`Router::find`]).
    pub fn route(
        &self,
        host: &str,
        path: &str,
        method: &http::Method,
    ) -> Option<&Arc<RouteRuntime>> {
        self.router.find(host, path, method)
    }

    /// As [`route`](Self::route), with the matched (host, uri) pair (see
    /// [`Router::find_pair`]).
    pub fn route_pair(
        &self,
        host: &str,
        path: &str,
        method: &http::Method,
    ) -> Option<(&Arc<RouteRuntime>, usize)> {
        self.router.find_pair(host, path, method)
    }
}

fn compile_upstream(
    key: String,
    conf: &Upstream,
    tables: &Tables,
    certs: &CertStore<'_>,
    resolver: &mut Resolver<'_>,
) -> UpstreamRuntime {
    let pool = tables
        .pools
        .get_or_insert(key.clone(), |_| true, PoolState::default);
    let tls = conf.scheme.is_tls();
    let peer_tls = if tls {
        certs.peer_tls(&key, &conf.tls)
    } else {
        PeerTls::default()
    };
    let gk = group_key(&key, conf.scheme, peer_tls.fingerprint);

    // Levels: highest priority first; configured (or discovered) order within a level.
    let targets = resolver.targets(conf);
    let mut order: Vec<usize> = (0..targets.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(targets[i].0.priority));

    let mut nodes = Vec::with_capacity(order.len());
    let active = conf.checks.as_ref().map(|c| &c.active);
    let mut target_specs = Vec::new();
    // (priority, start, end) of each level in `nodes`.
    let mut ranges: Vec<(i64, usize, usize)> = Vec::new();
    for i in order {
        let (n, addr) = (&targets[i].0, targets[i].1);
        let identity = node_identity(n, addr);
        let node_key = (key.clone(), identity.clone(), n.port);
        let h2_epoch =
            tables
                .h2_epochs
                .get_or_insert(node_key.clone(), |_| true, AtomicU64::default);
        let metrics = tables.metrics.node(&key, &identity, n.port);
        let (outlier, ramp) = tables.resilience.node(&key, &identity, n.port, conf);
        let state = tables
            .nodes
            .get_or_insert(node_key, |_| true, NodeState::default);
        let node_sni = sni_for(&n.host).to_owned();
        let peer = node_peer(addr, node_sni.clone(), conf, &peer_tls, gk);
        let ip_verifier = (tls && peer_tls.verify).then(|| IpVerifier::new(addr.ip()));
        if let Some(active) = active {
            target_specs.push(target_spec(conf, active, n, addr));
        }
        match ranges.last_mut() {
            Some(r) if r.0 == n.priority => r.2 += 1,
            _ => ranges.push((n.priority, nodes.len(), nodes.len() + 1)),
        }
        nodes.push(NodeRuntime {
            identity,
            host_is_ip: n.ip.is_some(),
            host: n.host.clone(),
            port: n.port,
            addr,
            weight: n.weight,
            node_host_header: node_host_header(&n.host, n.port, conf.scheme),
            node_sni,
            state,
            health: None,
            ip_verifier,
            h2_epoch,
            peer,
            metrics,
            outlier,
            ramp,
        });
    }
    // Health: the checker of this key, kept across reloads; targets by identity.
    let health = conf.checks.as_ref().map(|checks| {
        let mut spec = probe_spec(&checks.active);
        spec.ca = peer_tls.ca.clone();
        spec.client_cert_key = peer_tls.client_cert_key.clone();
        let (checker, targets) =
            tables
                .health
                .sync(&key, fingerprint(&checks.active), spec, &target_specs);
        for (node, target) in nodes.iter_mut().zip(targets) {
            node.health = Some(target);
        }
        UpstreamHealth::new(checker, checks.passive.as_ref())
    });
    // Attach each level's balancer: kept while its nodes, weights, algorithm (registration)
    // and parameters are unchanged. The registry is read here, never per pick.
    let algorithm = tables.algorithms.get(conf.lb.as_str());
    if algorithm.is_none() {
        log::error!(
            "{key}: algorithm {:?} is not registered; its nodes are never picked",
            conf.lb.as_str()
        );
    }
    let params = conf.algorithm_params();
    let levels: Vec<Level> = ranges
        .into_iter()
        .map(|(priority, start, end)| {
            let members = &nodes[start..end];
            let spec = LevelSpec {
                nodes: members
                    .iter()
                    .map(|n| (n.identity.clone(), n.port, n.weight))
                    .collect(),
                lb: conf.lb.clone(),
                algorithm: algorithm.as_ref().map_or(0, Registered::id),
                params: params.clone(),
            };
            let state = tables.levels.get_or_insert(
                (key.clone(), priority),
                |old| old.spec == spec,
                || LevelState {
                    selector: build_selector(&key, algorithm.as_ref(), &params, members),
                    spec: spec.clone(),
                    ramp_seq: AtomicU64::new(0),
                },
            );
            Level {
                priority,
                start,
                end,
                state,
            }
        })
        .collect();
    UpstreamRuntime {
        metrics: tables.metrics.upstream(&key),
        resilience: tables.resilience.upstream(&key, conf),
        key,
        conf: conf.clone(),
        nodes,
        levels,
        pool,
        health,
        latency_samples: algorithm.is_some_and(|a| a.latency_samples()),
    }
}

/// What identifies a node across snapshots (its per-node state, its place in a level): the
/// host as written for an IP node; the name and the address for a host-name node, which has
/// one node per address.
fn node_identity(n: &weir_config::Node, addr: SocketAddr) -> String {
    if n.ip.is_some() {
        n.host.to_ascii_lowercase()
    } else {
        format!("{}@{}", n.host.to_ascii_lowercase(), addr.ip())
    }
}

/// A node's peer template: scheme, ALPN (HTTP/1.1 for http/https, HTTP/2 for grpc/grpcs, h2c
/// by prior knowledge for grpc), TLS verification, CA, client certificate, pool group.
fn node_peer(
    addr: SocketAddr,
    sni: String,
    conf: &Upstream,
    tls: &PeerTls,
    group_key: u64,
) -> HttpPeer {
    let mut peer = HttpPeer::new(addr, conf.scheme.is_tls(), sni);
    peer.group_key = group_key;
    let o = &mut peer.options;
    o.idle_timeout = Some(conf.keepalive_pool.idle_timeout);
    match conf.scheme {
        Scheme::Http | Scheme::Https => o.set_http_version(1, 1),
        Scheme::Grpc | Scheme::Grpcs => {
            o.set_http_version(2, 2);
            // Concurrent streams Weir opens on one connection: never more than the
            // connection may carry in total (`requests`), and at most 1000.
            o.max_h2_streams = (conf.keepalive_pool.requests.min(1000) as usize).max(1);
        }
    }
    if conf.scheme.is_tls() {
        o.verify_cert = tls.verify;
        o.verify_hostname = tls.verify;
        o.ca = tls.ca.clone();
        peer.client_cert_key = tls.client_cert_key.clone();
    }
    peer
}

/// The balancer of one level, built by the upstream's algorithm.
fn build_selector(
    key: &str,
    algorithm: Option<&Registered>,
    params: &serde_json::Value,
    members: &[NodeRuntime],
) -> Box<dyn LevelSelector> {
    let Some(algorithm) = algorithm else {
        return Box::new(Unregistered);
    };
    // IP nodes hash as written (IPv6 in brackets); name nodes by resolved address.
    let ids: Vec<Vec<u8>> = members
        .iter()
        .map(|n| {
            let addr = if n.host_is_ip {
                n.host.clone()
            } else {
                match n.addr.ip() {
                    std::net::IpAddr::V4(ip) => ip.to_string(),
                    std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                }
            };
            ring_id(&addr, n.port)
        })
        .collect();
    let level: Vec<LevelNode<'_>> = members
        .iter()
        .zip(&ids)
        .map(|(n, id)| LevelNode {
            weight: n.weight as u64,
            state: &n.state,
            addr: n.addr,
            id,
        })
        .collect();
    algorithm.build(&level, params).unwrap_or_else(|e| {
        // Validation checked the parameters with the algorithm's schema; a schema that
        // disagrees with its `Params` lands here.
        log::error!("{key}: parameters refused by its algorithm: {e}");
        Box::new(Unregistered)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use weir_balance::{Algorithm, Eligible};
    use weir_config::Extensions;

    /// The eligible node at `index`, else the first eligible one.
    struct Prefer;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct PreferParams {
        index: usize,
    }

    struct PreferSelector(usize, usize);

    impl LevelSelector for PreferSelector {
        fn select(&self, _key: &[u8], eligible: Eligible<'_>) -> Option<usize> {
            std::iter::once(self.0)
                .chain(0..self.1)
                .find(|&i| eligible.test(i))
        }
    }

    impl Algorithm for Prefer {
        type Params = PreferParams;
        fn build(&self, nodes: &[LevelNode<'_>], p: &PreferParams) -> Box<dyn LevelSelector> {
            Box::new(PreferSelector(p.index, nodes.len()))
        }
        fn latency_samples(&self) -> bool {
            true
        }
    }

    fn resources(index: usize) -> Resources {
        let ext = Extensions::new().algorithm("prefer", None);
        let yaml = format!(
            "upstreams:\n  - id: u1\n    type: prefer\n    prefer: {{index: {index}}}\n    \
             nodes: {{\"127.0.0.1:1\": 1, \"127.0.0.1:2\": 1, \"127.0.0.1:3\": 1}}\n  \
             - id: u2\n    type: ewma\n    nodes: {{\"127.0.0.1:1\": 1, \"127.0.0.1:2\": 1}}\n"
        );
        weir_config::parse_yaml_ext(&yaml, &ext)
            .expect("valid")
            .config
            .resources
    }

    fn picks(snap: &Snapshot) -> Vec<Option<usize>> {
        let up = &snap.upstreams["upstreams/u1"];
        let mut walk = crate::upstream::Walk::default();
        (0..4).map(|_| up.pick(b"", &mut walk)).collect()
    }

    #[test]
    fn registered_algorithms_build_the_levels_of_their_upstreams() {
        let tables = Tables::default();
        // Not registered yet (validation accepted the name): nothing is picked.
        let snap = Snapshot::compile(&resources(1), &tables);
        assert_eq!(picks(&snap), [None; 4]);
        assert!(!snap.upstreams["upstreams/u1"].has_candidate(&Default::default()));
        assert!(snap.upstreams["upstreams/u2"].latency_samples);

        // Registered: the same configuration recompiles with it, parameters included.
        tables.register_algorithm("prefer", Prefer);
        let snap = Snapshot::compile(&resources(1), &tables);
        assert_eq!(picks(&snap), [Some(1), Some(0), Some(2), None]);
        assert!(snap.upstreams["upstreams/u1"].latency_samples);
        let snap = Snapshot::compile(&resources(2), &tables);
        assert_eq!(picks(&snap)[0], Some(2));
    }
}
