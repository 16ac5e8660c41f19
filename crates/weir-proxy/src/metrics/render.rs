//! A scrape of `/metrics`: every family, read from the live snapshot and the state it holds.

use super::{MetricsTables, ReloadSource, LATENCY_TYPES, OUTCOMES};
use crate::handle::SnapshotHandle;
use crate::resilience::{EJECT_REASONS, OVERFLOW_LIMITS};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use weir_metrics::prometheus::proto::MetricType;
use weir_metrics::{encode_text, Families, HistogramSnapshot};

/// Families contributed to every scrape by something outside the data path (the etcd
/// source's reachability, the access log's drops, an embedder's own registry): see
/// [`MetricsTables::add_collector`].
pub trait Collector: Send + Sync + 'static {
    fn collect(&self, families: &mut Families);
}

impl<F: Fn(&mut Families) + Send + Sync + 'static> Collector for F {
    fn collect(&self, families: &mut Families) {
        self(families)
    }
}

const H_REQUESTS: &str = "The total number of client requests.";
const H_STATUS: &str = "HTTP status codes per route, service, consumer and node.";
const H_LATENCY: &str = "HTTP request latency in milliseconds per route, service, consumer and node (type: request, upstream, weir).";
const H_BANDWIDTH: &str =
    "Total bandwidth in bytes per route, service, consumer and node (type: ingress, egress).";
const H_UPSTREAM_STATUS: &str = "Health of each health-checked node: 1 up, 0 down.";
const H_NODE_INFO: &str = "Information of this Weir instance.";
const H_ATTEMPTS: &str = "Attempts sent to each node, by outcome.";
const H_RETRIES: &str = "Attempts after the first, per upstream.";
const H_ACTIVE: &str = "Requests in flight on each node.";
const H_CONNECTIONS: &str = "Upstream connections requests were sent on, new or reused.";
const H_EJECTIONS: &str = "Nodes ejected by outlier detection.";
const H_OVERFLOW: &str = "Requests refused by a limit.";
const H_PANIC: &str = "Requests served in panic mode (too few healthy nodes).";
const H_DISC_UPDATES: &str = "Answers of each discovery registry, by result.";
const H_DISC_NODES: &str = "Nodes each discovery registry holds per service.";
const H_RELOADS: &str = "Configuration loads, by source and result.";
const H_LAST_RELOAD: &str = "Unix time of the last successful configuration load.";

/// A node's (or an IP's) attempts by outcome, connections, in-flight count and ejections.
type NodeSums = ([u64; 5], [u64; 2], u64, [u64; 4]);

/// Aggregation key of the families without the matched pattern labels.
type SeriesKey = (String, String, String, String);

/// The text exposition of every family, with names prefixed by `prefix`.
pub fn render(handle: &SnapshotHandle, prefix: &str) -> String {
    let mut f = Families::new(prefix);
    collect(handle, &mut f);
    encode_text(&f.finish())
}

fn collect(handle: &SnapshotHandle, f: &mut Families) {
    let m: &MetricsTables = &handle.tables().metrics;
    let snap = handle.load();
    f.declare("http_requests_total", H_REQUESTS, MetricType::COUNTER);
    f.counter("http_requests_total", H_REQUESTS, &[], m.process.requests());

    // Route families.
    let names = m.consumer_names();
    let live: HashMap<u32, &str> = snap
        .consumer_ids
        .values()
        .filter_map(|&id| Some((id, &**names.get(id as usize)?)))
        .collect();
    let consumer = |id: Option<u32>| -> Option<&str> {
        match id {
            None => Some(""),
            Some(id) => live.get(&id).copied(),
        }
    };
    f.declare("http_status", H_STATUS, MetricType::COUNTER);
    f.declare("http_latency", H_LATENCY, MetricType::HISTOGRAM);
    f.declare("bandwidth", H_BANDWIDTH, MetricType::COUNTER);
    let mut latency: BTreeMap<SeriesKey, [HistogramSnapshot; 3]> = BTreeMap::new();
    let mut bandwidth: BTreeMap<SeriesKey, [u64; 2]> = BTreeMap::new();
    let cells = snap
        .router
        .routes()
        .iter()
        .filter_map(|r| r.metrics.as_ref())
        .flat_map(|rm| rm.distinct())
        .chain(std::iter::once(&*m.no_route));
    for cell in cells {
        let l = &cell.labels;
        for (id, c) in cell.consumers() {
            let Some(consumer) = consumer(id) else {
                continue;
            };
            let mut codes: Vec<(u64, u64)> = c
                .codes
                .iter()
                .map(|(code, n)| (code, n.load(Ordering::Relaxed)))
                .collect();
            codes.sort_unstable();
            for (code, n) in codes {
                let code = code.to_string();
                f.counter(
                    "http_status",
                    H_STATUS,
                    &[
                        ("code", &code),
                        ("route", &l.route),
                        ("matched_uri", &l.matched_uri),
                        ("matched_host", &l.matched_host),
                        ("service", &l.service),
                        ("consumer", consumer),
                        ("node", &l.node),
                    ],
                    n,
                );
            }
            let key = (
                l.route.clone(),
                l.service.clone(),
                consumer.to_owned(),
                l.node.clone(),
            );
            let lat = latency.entry(key.clone()).or_default();
            for (acc, h) in lat.iter_mut().zip(&c.latency) {
                acc.add(&h.snapshot());
            }
            let bw = bandwidth.entry(key).or_default();
            for (acc, b) in bw.iter_mut().zip(&c.bandwidth) {
                *acc += b.load(Ordering::Relaxed);
            }
        }
    }
    for ((route, service, consumer, node), hs) in &latency {
        for (ty, h) in LATENCY_TYPES.iter().zip(hs) {
            if h.count() == 0 {
                continue;
            }
            f.histogram(
                "http_latency",
                H_LATENCY,
                &[
                    ("type", ty),
                    ("route", route),
                    ("service", service),
                    ("consumer", consumer),
                    ("node", node),
                ],
                h,
            );
        }
    }
    for ((route, service, consumer, node), bw) in &bandwidth {
        for (ty, n) in ["ingress", "egress"].iter().zip(bw) {
            f.counter(
                "bandwidth",
                H_BANDWIDTH,
                &[
                    ("type", ty),
                    ("route", route),
                    ("service", service),
                    ("consumer", consumer),
                    ("node", node),
                ],
                *n,
            );
        }
    }

    // Health of checked nodes.
    f.declare("upstream_status", H_UPSTREAM_STATUS, MetricType::GAUGE);
    let mut checkers = handle.tables().health.checkers();
    checkers.sort_by(|a, b| a.key().cmp(b.key()));
    for c in &checkers {
        for t in c.targets().iter() {
            let ip = t.id.ip.to_string();
            let port = t.id.port.to_string();
            let up = if t.is_up() { 1.0 } else { 0.0 };
            f.gauge(
                "upstream_status",
                H_UPSTREAM_STATUS,
                &[("name", c.key()), ("ip", &ip), ("port", &port)],
                up,
            );
        }
    }
    f.gauge(
        "node_info",
        H_NODE_INFO,
        &[
            ("hostname", &hostname()),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1.0,
    );
    // The etcd source's gauge comes in its place, from its collector.
    f.declare(
        "etcd_reachable",
        "Whether etcd answers: 1 yes, 0 no.",
        MetricType::GAUGE,
    );

    // Upstream and node families.
    f.declare("upstream_attempts_total", H_ATTEMPTS, MetricType::COUNTER);
    f.declare("upstream_retries_total", H_RETRIES, MetricType::COUNTER);
    f.declare("upstream_active_requests", H_ACTIVE, MetricType::GAUGE);
    f.declare(
        "upstream_connections_total",
        H_CONNECTIONS,
        MetricType::COUNTER,
    );
    f.declare("upstream_ejections_total", H_EJECTIONS, MetricType::COUNTER);
    f.declare("upstream_overflow_total", H_OVERFLOW, MetricType::COUNTER);
    f.declare("upstream_panic_total", H_PANIC, MetricType::COUNTER);
    let mut upstreams: Vec<_> = snap.upstreams.values().collect();
    upstreams.sort_by(|a, b| a.key.cmp(&b.key));
    for up in upstreams {
        if let Some(um) = &up.metrics {
            f.counter(
                "upstream_retries_total",
                H_RETRIES,
                &[("upstream", &up.key)],
                um.retries(),
            );
            let r = &up.resilience;
            let limits: &[usize] = match (&r.limits, &r.outlier) {
                (Some(_), Some(_)) => &[0, 1, 2, 3, 4],
                (Some(_), None) => &[0, 1, 2, 3],
                (None, Some(_)) => &[4],
                (None, None) => &[],
            };
            for &i in limits {
                f.counter(
                    "upstream_overflow_total",
                    H_OVERFLOW,
                    &[("upstream", &up.key), ("limit", OVERFLOW_LIMITS[i])],
                    um.overflows[i].load(Ordering::Relaxed),
                );
            }
            if r.panic_threshold > 0 {
                f.counter(
                    "upstream_panic_total",
                    H_PANIC,
                    &[("upstream", &up.key)],
                    um.panics.load(Ordering::Relaxed),
                );
            }
        }
        let outlier = up.resilience.outlier.is_some();
        // Nodes that share an IP share the `node` label: their counts are summed.
        let mut by_ip: BTreeMap<String, NodeSums> = BTreeMap::new();
        for n in &up.nodes {
            let e = by_ip.entry(super::node_label(n.addr.ip())).or_default();
            e.2 += n.state.in_flight();
            if let Some(nm) = &n.metrics {
                for (acc, a) in e.0.iter_mut().zip(&nm.attempts) {
                    *acc += a.load(Ordering::Relaxed);
                }
                for (acc, c) in e.1.iter_mut().zip(&nm.connections) {
                    *acc += c.load(Ordering::Relaxed);
                }
                for (acc, c) in e.3.iter_mut().zip(&nm.ejections) {
                    *acc += c.load(Ordering::Relaxed);
                }
            }
        }
        for (ip, (attempts, conns, active, ejections)) in &by_ip {
            if outlier {
                for (reason, n) in EJECT_REASONS.iter().zip(ejections) {
                    f.counter(
                        "upstream_ejections_total",
                        H_EJECTIONS,
                        &[("upstream", &up.key), ("node", ip), ("reason", reason)],
                        *n,
                    );
                }
            }
            for (outcome, n) in OUTCOMES.iter().zip(attempts) {
                f.counter(
                    "upstream_attempts_total",
                    H_ATTEMPTS,
                    &[("upstream", &up.key), ("node", ip), ("outcome", outcome)],
                    *n,
                );
            }
            f.gauge(
                "upstream_active_requests",
                H_ACTIVE,
                &[("upstream", &up.key), ("node", ip)],
                *active as f64,
            );
            for (reused, n) in ["false", "true"].iter().zip(conns) {
                f.counter(
                    "upstream_connections_total",
                    H_CONNECTIONS,
                    &[("upstream", &up.key), ("node", ip), ("reused", reused)],
                    *n,
                );
            }
        }
    }

    // Discovery.
    f.declare(
        "discovery_updates_total",
        H_DISC_UPDATES,
        MetricType::COUNTER,
    );
    f.declare("discovery_nodes", H_DISC_NODES, MetricType::GAUGE);
    for (name, e) in handle.registries().entries() {
        let st = e.feed.status();
        for (result, n) in [("success", st.successes), ("failure", st.failures)] {
            f.counter(
                "discovery_updates_total",
                H_DISC_UPDATES,
                &[("type", name), ("result", result)],
                n,
            );
        }
        let catalog = e.feed.catalog();
        let mut services: Vec<_> = catalog.services.iter().collect();
        services.sort_by(|a, b| a.0.cmp(b.0));
        for (service, nodes) in services {
            f.gauge(
                "discovery_nodes",
                H_DISC_NODES,
                &[("type", name), ("service", service)],
                nodes.len() as f64,
            );
        }
    }

    // Configuration loads.
    for source in ReloadSource::ALL {
        for (result, ok) in [("success", true), ("failure", false)] {
            f.counter(
                "config_reloads_total",
                H_RELOADS,
                &[("source", source.as_str()), ("result", result)],
                m.process.reloads(source, ok),
            );
        }
    }
    if let Some(t) = m.process.last_success() {
        f.gauge(
            "config_last_reload_success_timestamp_seconds",
            H_LAST_RELOAD,
            &[],
            t,
        );
    }

    let collectors: Vec<Arc<dyn Collector>> =
        m.collectors.lock().map(|c| c.clone()).unwrap_or_default();
    for c in collectors {
        c.collect(f);
    }
}

/// This machine's host name (`node_info`).
pub(crate) fn hostname() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".to_owned())
    })
    .clone()
}
