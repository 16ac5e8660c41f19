//! The read-only control API on `control.listen`: `GET /v1/healthcheck`,
//! `GET /v1/healthcheck/{upstreams|routes|services}/{id}`, `GET /v1/discovery/{registry}/dump`,
//! `GET /metrics` (Prometheus), `GET /v1/status` and the status page `GET /ui/`.

use crate::handle::SnapshotHandle;
use crate::upstream::{NodeRuntime, UpstreamRuntime};
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::sync::Arc;
use weir_health::Checker;

/// The control API application, served by a Pingora listening service.
pub struct ControlApi {
    handle: Arc<SnapshotHandle>,
    metric_prefix: String,
}

/// The status page: one self-contained file (no external scripts, styles or fonts).
const STATUS_PAGE: &str = include_str!("status_page.html");

/// A control API answer: status, content type and body.
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl ControlApi {
    pub fn new(handle: Arc<SnapshotHandle>) -> Self {
        crate::status::mark_start();
        ControlApi {
            handle,
            metric_prefix: "weir_".to_owned(),
        }
    }

    /// Prefix metric names with `prefix` (`control.metric_prefix`).
    pub fn with_metric_prefix(mut self, prefix: &str) -> Self {
        self.metric_prefix = prefix.to_owned();
        self
    }

    /// The answer to a request for `path` (the query is ignored).
    pub fn respond(&self, method: &http::Method, path: &str) -> Answer {
        let get = method == http::Method::GET || method == http::Method::HEAD;
        match path {
            "/metrics" if get => Answer {
                status: 200,
                content_type: "text/plain; version=0.0.4; charset=utf-8",
                body: crate::metrics::render(&self.handle, &self.metric_prefix).into_bytes(),
            },
            "/ui/" | "/ui/index.html" if get => Answer {
                status: 200,
                content_type: "text/html; charset=utf-8",
                body: STATUS_PAGE.as_bytes().to_vec(),
            },
            "/ui" if get => Answer {
                status: 301,
                content_type: "text/plain; charset=utf-8",
                body: b"/ui/".to_vec(),
            },
            "/v1/status" | "/v1/status/" if get => {
                json_answer(200, &crate::status::status(&self.handle))
            }
            _ => {
                let (status, v) = self.answer(method, path);
                json_answer(status, &v)
            }
        }
    }

    /// Status and JSON body for a request.
    pub fn answer(&self, method: &http::Method, path: &str) -> (u16, Value) {
        if method != http::Method::GET && method != http::Method::HEAD {
            return (405, json!({"error_msg": "method not allowed"}));
        }
        let table = &self.handle.tables().health;
        let path = path.trim_end_matches('/');
        let snap = self.handle.load();
        if path == "/v1/healthcheck" {
            let mut all: Vec<Value> = table
                .checkers()
                .iter()
                .map(|c| entry(c, snap.upstreams.get(c.key()).map(|u| &**u)))
                .collect();
            // Upstreams with outlier detection and no checks are listed too.
            let mut outliers: Vec<_> = snap
                .upstreams
                .values()
                .filter(|u| u.health.is_none() && u.resilience.outlier.is_some())
                .collect();
            outliers.sort_by(|a, b| a.key.cmp(&b.key));
            all.extend(outliers.into_iter().map(|u| outlier_entry(u)));
            return (200, Value::Array(all));
        }
        if let Some(name) = path
            .strip_prefix("/v1/discovery/")
            .and_then(|r| r.strip_suffix("/dump"))
        {
            return self.discovery_dump(name);
        }
        let Some(rest) = path.strip_prefix("/v1/healthcheck/") else {
            return (404, json!({"error_msg": "not found"}));
        };
        let Some((kind, id)) = rest.split_once('/') else {
            return (
                400,
                json!({"error_msg": format!("invalid src type {rest}")}),
            );
        };
        if !matches!(kind, "upstreams" | "routes" | "services") {
            return (
                400,
                json!({"error_msg": format!("invalid src type {kind}")}),
            );
        }
        let key = format!("{kind}/{id}");
        if let Some(c) = table.get(&key) {
            return (200, entry(&c, snap.upstreams.get(&key).map(|u| &**u)));
        }
        if let Some(u) = snap
            .upstreams
            .get(&key)
            .filter(|u| u.resilience.outlier.is_some())
        {
            return (200, outlier_entry(u));
        }
        let msg = if self.handle.load().known.contains(&key) {
            format!("no checker for {kind}[{id}]")
        } else {
            format!("{kind}[{id}] not found")
        };
        (404, json!({ "error_msg": msg }))
    }
}

impl ControlApi {
    /// What registry `name` holds now: its services and nodes, when it last succeeded, its
    /// last error, and its configuration with secrets masked.
    fn discovery_dump(&self, name: &str) -> (u16, Value) {
        let Some(e) = self.handle.registries().get(name) else {
            return (
                404,
                json!({"error_msg": format!("discovery {name} is not configured")}),
            );
        };
        let catalog = e.feed.catalog();
        let mut names: Vec<&String> = catalog.services.keys().collect();
        names.sort();
        let mut services = serde_json::Map::new();
        for n in names {
            let nodes: Vec<Value> = catalog.services[n]
                .iter()
                .map(|node| {
                    json!({
                        "host": node.host,
                        "port": node.port,
                        "weight": node.weight,
                        "priority": node.priority,
                    })
                })
                .collect();
            services.insert(n.clone(), Value::Array(nodes));
        }
        let status = e.feed.status();
        (
            200,
            json!({
                "services": services,
                "last_update": status.last_update,
                "last_error": status.last_error,
                "config": e.registry.config_dump(),
            }),
        )
    }
}

/// One checker as the control API shows it; with outlier detection on `up`, each node also
/// carries `ejected_until` (unix seconds or null) and `ejections` (its ejection level).
fn entry(c: &Checker, up: Option<&UpstreamRuntime>) -> Value {
    let outlier = up.filter(|u| u.resilience.outlier.is_some());
    let nodes: Vec<Value> = c
        .targets()
        .iter()
        .map(|t| {
            let h = t.health();
            let mut v = json!({
                "ip": t.id.ip.to_string(),
                "port": t.id.port,
                "hostname": t.id.hostname,
                "status": h.status.as_str(),
                "counter": {
                    "success": h.counters.success,
                    "http_failure": h.counters.http_failure,
                    "tcp_failure": h.counters.tcp_failure,
                    "timeout_failure": h.counters.timeout_failure,
                },
            });
            if let Some(u) = outlier {
                // The node whose health target this is (the target's address is the probe's,
                // which differs with `checks.active.port`).
                let node = u
                    .nodes
                    .iter()
                    .find(|n| n.health.as_ref().is_some_and(|h| Arc::ptr_eq(h, t)));
                add_outlier_fields(&mut v, u, node);
            }
            v
        })
        .collect();
    json!({"name": c.key(), "type": &*c.check_type(), "nodes": nodes})
}

/// An upstream with outlier detection and no checks: `type: "outlier"`, a node `unhealthy`
/// while ejected.
fn outlier_entry(u: &UpstreamRuntime) -> Value {
    let now = weir_resilience::now_ms();
    let nodes: Vec<Value> = u
        .nodes
        .iter()
        .map(|n| {
            let ejected = n.outlier.as_ref().is_some_and(|o| o.is_ejected(now));
            let mut v = json!({
                "ip": n.addr.ip().to_string(),
                "port": n.port,
                "hostname": if n.host_is_ip { Value::Null } else { json!(n.host) },
                "status": if ejected { "unhealthy" } else { "healthy" },
                "counter": {"success": 0, "http_failure": 0, "tcp_failure": 0, "timeout_failure": 0},
            });
            add_outlier_fields(&mut v, u, Some(n));
            v
        })
        .collect();
    json!({"name": u.key, "type": "outlier", "nodes": nodes})
}

fn add_outlier_fields(v: &mut Value, u: &UpstreamRuntime, n: Option<&NodeRuntime>) {
    let now = weir_resilience::now_ms();
    let (until, level) = match (n.and_then(|n| n.outlier.as_ref()), &u.resilience.outlier) {
        (Some(o), Some((params, _))) => (
            crate::status::ejected_until(n.unwrap_or(&u.nodes[0])),
            o.ejection_level(now, params),
        ),
        _ => (Value::Null, 0),
    };
    if let Value::Object(m) = v {
        m.insert("ejected_until".into(), until);
        m.insert("ejections".into(), json!(level));
    }
}

fn json_answer(status: u16, v: &Value) -> Answer {
    Answer {
        status,
        content_type: "application/json",
        body: v.to_string().into_bytes(),
    }
}

#[async_trait]
impl ServeHttp for ControlApi {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let a = self.respond(&req.method, req.uri.path());
        let redirect = a.status == 301;
        let mut resp = Response::new(a.body);
        *resp.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::OK);
        let headers = resp.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(a.content_type),
        );
        headers.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        if redirect {
            headers.insert(
                http::header::LOCATION,
                http::HeaderValue::from_static("/ui/"),
            );
        }
        let len = resp.body().len();
        resp.headers_mut()
            .insert(http::header::CONTENT_LENGTH, len.into());
        resp
    }
}
