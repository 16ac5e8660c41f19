//! `GET /v1/status`: what the status page draws — each route, each upstream and each of its
//! nodes with health, in-flight requests and cumulative counts (the page derives rates and
//! windowed percentiles from the difference between two polls).

use crate::handle::SnapshotHandle;
use crate::metrics::{render::hostname, ReloadSource};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use weir_metrics::{HistogramSnapshot, LATENCY_BUCKETS_MS};

static STARTED: OnceLock<Instant> = OnceLock::new();

/// Mark the process start (the control API does when it is created).
pub(crate) fn mark_start() {
    STARTED.get_or_init(Instant::now);
}

fn p99(h: &HistogramSnapshot) -> Value {
    h.quantile_ms(0.99)
        .map_or(Value::Null, |q| json!((q * 100.0).round() / 100.0))
}

fn buckets(h: &HistogramSnapshot) -> Value {
    let mut le: Vec<Value> = LATENCY_BUCKETS_MS.iter().map(|b| json!(b)).collect();
    le.push(Value::Null);
    json!({"le": le, "counts": h.buckets.to_vec()})
}

/// When node `n`'s ejection ends (unix seconds), if it is ejected.
pub(crate) fn ejected_until(n: &crate::upstream::NodeRuntime) -> Value {
    let now = weir_resilience::now_ms();
    n.outlier
        .as_ref()
        .and_then(|o| o.ejected_until_ms(now))
        .map_or(Value::Null, |ms| {
            json!(weir_resilience::Clock::to_unix_ms(ms) as f64 / 1000.0)
        })
}

/// The status document.
pub fn status(handle: &SnapshotHandle) -> Value {
    let snap = handle.load();
    let m = &handle.tables().metrics;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let uptime = STARTED.get().map_or(0.0, |s| s.elapsed().as_secs_f64());
    let last = m.process.last_reload();
    let source = last.map(|l| l.source);
    let config = json!({
        "source": source.map(ReloadSource::as_str),
        "last_reload": last.map(|l| json!({
            "at": l.at_unix,
            "result": if l.success { "success" } else { "failure" },
        })),
    });

    let routes: Vec<Value> = snap
        .router
        .routes()
        .iter()
        .map(|r| {
            let (mut requests, mut errors) = (0u64, 0u64);
            let mut latency = HistogramSnapshot::default();
            if let Some(rm) = &r.metrics {
                for cell in rm.distinct() {
                    for (_, c) in cell.consumers() {
                        for (code, n) in c.codes.iter() {
                            let n = n.load(Ordering::Relaxed);
                            requests += n;
                            if code >= 500 {
                                errors += n;
                            }
                        }
                        latency.add(&c.latency[0].snapshot());
                    }
                }
            }
            json!({
                "id": r.id.as_str(),
                "uris": r.uris,
                "hosts": r.hosts,
                "methods": r.methods,
                "service_id": r.service_id.as_ref().map(|s| s.as_str()),
                "upstream": r.upstream.as_ref().map(|u| u.key.as_str()),
                "requests": requests,
                "errors": errors,
                "p99_ms": p99(&latency),
            })
        })
        .collect();

    let mut ups: Vec<_> = snap.upstreams.values().collect();
    ups.sort_by(|a, b| a.key.cmp(&b.key));
    let upstreams: Vec<Value> = ups
        .iter()
        .map(|u| {
            let nodes: Vec<Value> = u
                .levels
                .iter()
                .flat_map(|l| (l.start..l.end).map(move |i| (l.priority, i)))
                .map(|(priority, i)| {
                    let n = &u.nodes[i];
                    let health = n
                        .health
                        .as_ref()
                        .map_or("unchecked", |t| t.health().status.as_str());
                    let lat = n.metrics.as_ref().map(|m| m.latency()).unwrap_or_default();
                    json!({
                        "host": n.host,
                        "port": n.port,
                        "weight": n.weight,
                        "priority": priority,
                        "health": health,
                        "ejected_until": ejected_until(n),
                        "in_flight": n.state.in_flight(),
                        "requests": n.metrics.as_ref().map_or(0, |m| m.attempts()),
                        "errors": n.metrics.as_ref().map_or(0, |m| m.errors()),
                        "p99_ms": p99(&lat),
                        "latency": buckets(&lat),
                    })
                })
                .collect();
            json!({
                "key": u.key,
                "type": u.conf.lb.as_str(),
                "scheme": u.conf.scheme,
                "checks": u.health.is_some(),
                "requests": u.metrics.as_ref().map_or(0, |m| m.requests()),
                "retries": u.metrics.as_ref().map_or(0, |m| m.retries()),
                "nodes": nodes,
            })
        })
        .collect();

    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "hostname": hostname(),
        "uptime_seconds": (uptime * 10.0).round() / 10.0,
        "now": now,
        "config": config,
        "routes": routes,
        "upstreams": upstreams,
    })
}
