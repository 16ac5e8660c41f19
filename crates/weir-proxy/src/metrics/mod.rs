//! Weir's metrics (docs/observability.md): what the data path counts, where the counts live,
//! and how a scrape of `/metrics` reads them.
//!
//! **Resolved at compile time.** Every series a request can touch is reached through handles
//! the compilation of a snapshot put in place:
//!
//! - each node of an upstream holds its [`NodeMetrics`] (attempts by outcome, connections,
//!   attempt latency), each upstream its [`UpstreamMetrics`] (requests, retries);
//! - each route holds one [`RouteCell`] per (matched host × uri pair, node IP), indexed by the
//!   pair the router reports and the index of the node attempted last; a cell carries the
//!   route's label values;
//! - in a cell, the request's consumer (a number given to each configured consumer) and its
//!   status code find their counters in an [`AtomicMap`] (insert-only, lock-free).
//!
//! So a request formats nothing, hashes no label and takes no lock to count: a few relaxed
//! atomic adds and two small integer probes.
//!
//! **Across reloads.** Handles come from state tables keyed by what the labels say (route id,
//! pattern, service, node IP; upstream key and node): a series whose labels are unchanged
//! keeps counting from where it was. Tables drop an entry when no snapshot holds it, and a
//! scrape walks the live snapshot only, so removed routes, nodes and consumers leave the
//! output.
//!
//! **Off** when the process has no `control` listener (nothing could read them): upstreams,
//! nodes and routes then carry no handles and the data path skips every count.

pub(crate) mod compile;
mod record;
pub(crate) mod render;

pub(crate) use record::{count_request, Fail};
pub use render::{render, Collector};
pub use weir_metrics::{Families, Histogram, HistogramSnapshot, LATENCY_BUCKETS_MS};

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use weir_balance::StateTable;
use weir_metrics::AtomicMap;

/// `upstream_attempts_total`'s `outcome` values, by index (`response` first).
pub const OUTCOMES: [&str; 5] = [
    "response",
    "connect_failure",
    "tls_failure",
    "timeout",
    "reset",
];

/// Counts of one node of one upstream.
#[derive(Debug, Default)]
pub struct NodeMetrics {
    /// Attempts by outcome ([`OUTCOMES`]).
    pub(crate) attempts: [AtomicU64; 5],
    /// Connections the attempts went out on: `[new, reused]`.
    pub(crate) connections: [AtomicU64; 2],
    /// Attempts that failed without a response, or got a 5xx.
    pub(crate) errors: AtomicU64,
    /// Attempts' time to the response header.
    pub(crate) latency: Histogram,
    /// Outlier ejections by reason (consecutive_5xx, consecutive_gateway_failure,
    /// consecutive_local_origin_failure, failure_percentage).
    pub(crate) ejections: [AtomicU64; 4],
}

impl NodeMetrics {
    pub fn attempts(&self) -> u64 {
        self.attempts
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn latency(&self) -> weir_metrics::HistogramSnapshot {
        self.latency.snapshot()
    }
}

/// Counts of one upstream.
#[derive(Debug, Default)]
pub struct UpstreamMetrics {
    /// Requests whose route has this upstream.
    pub(crate) requests: AtomicU64,
    /// Attempts after the first (a free repeat on a stale pooled connection is not one).
    pub(crate) retries: AtomicU64,
    /// Refusals by limit ([`crate::resilience::OVERFLOW_LIMITS`]).
    pub(crate) overflows: [AtomicU64; 5],
    /// Requests picked in panic mode.
    pub(crate) panics: AtomicU64,
}

impl UpstreamMetrics {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

/// `http_latency`'s `type` values, by index.
pub const LATENCY_TYPES: [&str; 3] = ["request", "upstream", "weir"];

/// What one consumer's requests counted in one [`RouteCell`].
#[derive(Debug, Default)]
pub struct ConsumerCell {
    /// Requests by final status code (key: the code).
    pub(crate) codes: AtomicMap<AtomicU64>,
    /// By [`LATENCY_TYPES`].
    pub(crate) latency: [Histogram; 3],
    /// `[ingress, egress]` bytes.
    pub(crate) bandwidth: [AtomicU64; 2],
}

/// The label values of one route series set.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct CellLabels {
    pub route: String,
    pub matched_uri: String,
    pub matched_host: String,
    pub service: String,
    /// The node's IP; empty when the request attempted no node.
    pub node: String,
}

/// The series of one route, matched pattern pair and node IP.
#[derive(Debug)]
pub struct RouteCell {
    pub labels: CellLabels,
    /// Key: the consumer's number + 2 (1: no consumer).
    pub(crate) by_consumer: AtomicMap<Box<ConsumerCell>>,
}

impl RouteCell {
    fn new(labels: CellLabels) -> Self {
        RouteCell {
            labels,
            by_consumer: AtomicMap::with_capacity(1),
        }
    }

    #[inline]
    pub(crate) fn consumer(&self, id: u32) -> &ConsumerCell {
        self.by_consumer
            .get_or_insert_with(u64::from(id) + 2, Box::default)
    }

    /// `(consumer number or None, cell)` of every consumer that counted something.
    pub(crate) fn consumers(&self) -> impl Iterator<Item = (Option<u32>, &ConsumerCell)> {
        self.by_consumer
            .iter()
            .map(|(k, c)| ((k > 1).then(|| (k - 2) as u32), &**c))
    }
}

/// A route's cells: `cells[pair * slots + node]`, where `node` is the index of the attempted
/// node in the route's upstream and `slots - 1` stands for "no node".
#[derive(Debug)]
pub struct RouteMetrics {
    pub(crate) cells: Box<[Arc<RouteCell>]>,
    pub(crate) slots: usize,
    /// Consumer numbers by username, for consumers set by an embedder's hook (key-auth gives
    /// the number itself).
    pub(crate) consumer_ids: Arc<HashMap<Arc<str>, u32>>,
}

impl RouteMetrics {
    #[inline]
    pub(crate) fn cell(&self, pair: usize, node: Option<usize>) -> Option<&RouteCell> {
        let slot = node
            .filter(|&n| n + 1 < self.slots)
            .unwrap_or(self.slots - 1);
        self.cells.get(pair * self.slots + slot).map(|c| &**c)
    }

    /// Every distinct cell (nodes sharing an IP share a cell), for a scrape.
    pub(crate) fn distinct(&self) -> Vec<&RouteCell> {
        let mut cells: Vec<&RouteCell> = self.cells.iter().map(|c| &**c).collect();
        cells.sort_unstable_by_key(|c| *c as *const RouteCell as usize);
        cells.dedup_by_key(|c| *c as *const RouteCell as usize);
        cells
    }
}

/// Reload outcomes by source: `config_reloads_total{source, result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadSource {
    File,
    Etcd,
    Admin,
}

impl ReloadSource {
    pub const ALL: [ReloadSource; 3] =
        [ReloadSource::File, ReloadSource::Etcd, ReloadSource::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            ReloadSource::File => "file",
            ReloadSource::Etcd => "etcd",
            ReloadSource::Admin => "admin",
        }
    }
}

/// Process-wide counts.
#[derive(Debug, Default)]
pub struct ProcessMetrics {
    pub(crate) requests: AtomicU64,
    /// `[source][success, failure]`.
    reloads: [[AtomicU64; 2]; 3],
    /// Unix time of the last successful reload, in milliseconds (0: none yet).
    last_success_ms: AtomicU64,
    /// Result of the last reload: 0 none, 1 success, 2 failure; and its time (ms).
    last_result: AtomicU64,
    last_at_ms: AtomicU64,
    last_source: AtomicU64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The last reload: when, from where, and whether it succeeded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LastReload {
    pub at_unix: f64,
    pub source: ReloadSource,
    pub success: bool,
}

impl ProcessMetrics {
    /// Count a reload (or the first load) from `source`.
    pub fn reloaded(&self, source: ReloadSource, success: bool) {
        let s = source as usize;
        self.reloads[s][usize::from(!success)].fetch_add(1, Ordering::Relaxed);
        let now = now_ms();
        if success {
            self.last_success_ms.store(now, Ordering::Relaxed);
        }
        self.last_at_ms.store(now, Ordering::Relaxed);
        self.last_source.store(s as u64, Ordering::Relaxed);
        self.last_result
            .store(if success { 1 } else { 2 }, Ordering::Relaxed);
    }

    pub fn reloads(&self, source: ReloadSource, success: bool) -> u64 {
        self.reloads[source as usize][usize::from(!success)].load(Ordering::Relaxed)
    }

    /// Unix seconds of the last successful reload.
    pub fn last_success(&self) -> Option<f64> {
        match self.last_success_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms as f64 / 1000.0),
        }
    }

    pub fn last_reload(&self) -> Option<LastReload> {
        let success = match self.last_result.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => return None,
        };
        let source = ReloadSource::ALL
            .get(self.last_source.load(Ordering::Relaxed) as usize)
            .copied()
            .unwrap_or(ReloadSource::File);
        Some(LastReload {
            at_unix: self.last_at_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            source,
            success,
        })
    }

    /// `http_requests_total`.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

type NodeKey = (String, String, u16);

/// Consumer numbers by username, and usernames by number.
#[derive(Debug, Default)]
struct Interner(HashMap<String, u32>, Vec<Arc<str>>);

/// Where metric state lives across snapshots (part of [`Tables`](crate::Tables)).
#[derive(Default)]
pub struct MetricsTables {
    enabled: AtomicBool,
    pub(crate) nodes: StateTable<NodeKey, NodeMetrics>,
    pub(crate) upstreams: StateTable<String, UpstreamMetrics>,
    pub(crate) cells: StateTable<CellLabels, RouteCell>,
    /// Requests that matched no route.
    pub(crate) no_route: Arc<RouteCell>,
    /// Consumer numbers by username, and usernames by number.
    consumers: Mutex<Interner>,
    pub process: ProcessMetrics,
    /// Families others contribute to a scrape (the etcd source, the access log, an
    /// embedder's registry).
    pub(crate) collectors: Mutex<Vec<Arc<dyn Collector>>>,
}

impl std::fmt::Debug for MetricsTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsTables")
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl MetricsTables {
    /// Count from the next compilation on (the proxy with a control listener does).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Add families to every scrape.
    pub fn add_collector(&self, c: Arc<dyn Collector>) {
        if let Ok(mut cs) = self.collectors.lock() {
            cs.push(c);
        }
    }

    /// The number of consumer `name` (given on first sight, kept for the process's life).
    pub(crate) fn consumer_id(&self, name: &str) -> u32 {
        let Ok(mut g) = self.consumers.lock() else {
            return 0;
        };
        if let Some(&id) = g.0.get(name) {
            return id;
        }
        let id = g.1.len() as u32;
        g.1.push(Arc::from(name));
        g.0.insert(name.to_owned(), id);
        id
    }

    /// Usernames by number.
    pub(crate) fn consumer_names(&self) -> Vec<Arc<str>> {
        self.consumers
            .lock()
            .map(|g| g.1.clone())
            .unwrap_or_default()
    }

    pub(crate) fn node(
        &self,
        upstream: &str,
        identity: &str,
        port: u16,
    ) -> Option<Arc<NodeMetrics>> {
        self.enabled().then(|| {
            self.nodes.get_or_insert(
                (upstream.to_owned(), identity.to_owned(), port),
                |_| true,
                NodeMetrics::default,
            )
        })
    }

    pub(crate) fn upstream(&self, key: &str) -> Option<Arc<UpstreamMetrics>> {
        self.enabled().then(|| {
            self.upstreams
                .get_or_insert(key.to_owned(), |_| true, UpstreamMetrics::default)
        })
    }

    pub(crate) fn cell(&self, labels: CellLabels) -> Arc<RouteCell> {
        self.cells
            .get_or_insert(labels.clone(), |_| true, || RouteCell::new(labels))
    }

    pub(crate) fn prune(&self) {
        self.nodes.prune();
        self.upstreams.prune();
        self.cells.prune();
    }
}

impl Default for RouteCell {
    fn default() -> Self {
        RouteCell::new(CellLabels::default())
    }
}

/// The size of a request head as HTTP/1.1 writes it (request line, header lines, blank
/// line): `bandwidth{type="ingress"}` adds the body. Computed from the parsed header, so
/// HTTP/2's header compression is not reflected.
pub(crate) fn request_head_size(req: &pingora::http::RequestHeader) -> u64 {
    let target = req.uri.path_and_query().map_or(1, |p| p.as_str().len());
    let line = req.method.as_str().len() + 1 + target + 1 + 8 + 2;
    (line + headers_size(&req.headers) + 2) as u64
}

/// The size of a response head as HTTP/1.1 writes it (status line, header lines, blank line).
pub(crate) fn response_head_size(resp: &pingora::http::ResponseHeader) -> u64 {
    let reason = resp.status.canonical_reason().map_or(0, str::len);
    let line = 8 + 1 + 3 + 1 + reason + 2;
    (line + headers_size(&resp.headers) + 2) as u64
}

fn headers_size(h: &http::HeaderMap) -> usize {
    h.iter()
        .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
        .sum()
}

/// The `node` label of an address.
pub(crate) fn node_label(ip: IpAddr) -> String {
    ip.to_string()
}
