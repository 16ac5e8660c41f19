//! A fake Consul agent speaking the HTTP API Weir reads: `/v1/catalog/services`,
//! `/v1/health/state/any` and `/v1/health/service/<name>` with real blocking queries
//! (`index` + `wait`), `X-Consul-Index` on every answer, `?passing` filtering and ACL tokens
//! (`X-Consul-Token`, 403 `ACL not found`). It runs in-process on an ephemeral port of
//! 127.0.0.1; a test changes its services, moves its index (backwards too), makes it fail
//! ([`Fault`]), stops and restarts it on the same port, and reads every request it received.
//!
//! [`server`] is the small HTTP/1.1 server under this fake and the Nacos one.

use serde_json::{json, Map, Value};
use server::{Handler, Reply, Server};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

pub use server::{Fault, Recorded};

pub mod server;

/// The longest blocking query Consul allows (`wait` is capped to it).
const MAX_WAIT: Duration = Duration::from_secs(600);
/// `wait` when a blocking query gives none.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Data {
    /// The cluster's index (one for every endpoint here): bumped by every change.
    index: u64,
    /// Service name → `/v1/health/service` entries, in registration order.
    services: BTreeMap<String, Vec<Value>>,
    token: Option<String>,
}

struct State {
    data: Mutex<Data>,
    /// Bumped on every change: wakes blocked queries.
    changed: watch::Sender<u64>,
}

impl State {
    fn data(&self) -> MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Apply `f` to the data, then wake blocked queries.
    fn change(&self, f: impl FnOnce(&mut Data)) {
        f(&mut self.data());
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// A running fake Consul. Dropping it stops it.
pub struct FakeConsul {
    server: Server,
    state: Arc<State>,
}

/// A passing health entry for service instance `id` at `addr` (its node has the same
/// address), as `/v1/health/service/<name>` returns it.
pub fn instance(id: &str, addr: SocketAddr) -> Value {
    let ip = addr.ip().to_string();
    json!({
        "Node": {"ID": format!("node-{id}"), "Node": format!("node-{id}"), "Address": ip,
                 "Datacenter": "dc1", "Meta": {}},
        "Service": {"ID": id, "Service": id.split('-').next().unwrap_or(id), "Tags": [],
                    "Address": ip, "Port": addr.port(), "Meta": {},
                    "Weights": {"Passing": 1, "Warning": 1}},
        "Checks": [
            {"Node": format!("node-{id}"), "CheckID": "serfHealth", "Name": "Serf Health Status",
             "Status": "passing", "ServiceID": "", "ServiceName": ""},
            {"Node": format!("node-{id}"), "CheckID": format!("service:{id}"),
             "Name": "Service check", "Status": "passing", "ServiceID": id, "ServiceName": ""}
        ]
    })
}

/// `entry` with its service check failing (left out by `?passing`).
pub fn critical(mut entry: Value) -> Value {
    if let Some(Value::Array(checks)) = entry.get_mut("Checks") {
        if let Some(c) = checks.last_mut() {
            c["Status"] = json!("critical");
        }
    }
    entry
}

impl FakeConsul {
    /// Start on an ephemeral port of 127.0.0.1, with no services and index 1.
    pub fn start() -> FakeConsul {
        let state = Arc::new(State {
            data: Mutex::new(Data {
                index: 1,
                ..Data::default()
            }),
            changed: watch::channel(0).0,
        });
        let s = Arc::clone(&state);
        let handler: Handler = Arc::new(move |req| {
            let s = Arc::clone(&s);
            Box::pin(async move { answer(&s, req).await })
        });
        FakeConsul {
            server: Server::start(handler),
            state,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Register service `name` with these health entries (replacing its previous ones), or
    /// deregister it when `entries` is empty. Bumps the index.
    pub fn set_service(&self, name: &str, entries: Vec<Value>) {
        self.state.change(|d| {
            d.index += 1;
            if entries.is_empty() {
                d.services.remove(name);
            } else {
                d.services.insert(name.to_owned(), entries);
            }
        });
    }

    /// Register service `name` with one passing instance per address.
    pub fn set_nodes(&self, name: &str, addrs: &[SocketAddr]) {
        let entries = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| instance(&format!("{name}-{i}"), *a))
            .collect();
        self.set_service(name, entries);
    }

    /// Deregister service `name`. Bumps the index.
    pub fn remove_service(&self, name: &str) {
        self.set_service(name, Vec::new());
    }

    pub fn index(&self) -> u64 {
        self.state.data().index
    }

    /// Set the index (lower than now: what a restored snapshot does) and wake blocked queries.
    pub fn set_index(&self, index: u64) {
        self.state.change(|d| d.index = index);
    }

    /// Answer 403 `ACL not found` unless the request carries this `X-Consul-Token`.
    pub fn require_token(&self, token: Option<&str>) {
        self.state.change(|d| d.token = token.map(str::to_owned));
    }

    pub fn set_fault(&self, f: Fault) {
        self.server.set_fault(f);
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// Forget the requests received so far.
    pub fn clear_requests(&self) {
        self.server.clear_requests();
    }

    /// Close the listener and every connection; the port refuses connections until
    /// [`restart`](Self::restart). The data stays.
    pub fn stop(&self) {
        self.server.stop();
    }

    /// Listen again on the same port.
    pub fn restart(&self) {
        self.server.restart();
    }
}

/// Consul's duration syntax: `60s`, `500ms`, `2m`, `1h` (a bare number is seconds).
fn parse_wait(s: &str) -> Option<Duration> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        "h" => Some(Duration::from_secs(n * 3600)),
        _ => None,
    }
}

/// A blocking query: wait while the index is not above `index`, at most `wait`.
async fn block(state: &State, index: u64, wait: Duration) {
    let mut rx = state.changed.subscribe();
    let deadline = Instant::now() + wait.min(MAX_WAIT);
    while state.data().index <= index {
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            _ => break,
        }
    }
}

fn passing(entry: &Value) -> bool {
    entry
        .get("Checks")
        .and_then(Value::as_array)
        .is_none_or(|cs| cs.iter().all(|c| c["Status"] == "passing"))
}

async fn answer(state: &State, req: Recorded) -> Reply {
    if req.method != "GET" {
        return Reply::text(405, "method not allowed");
    }
    if let Some(t) = state.data().token.clone() {
        if req.header("x-consul-token") != Some(t.as_str()) {
            return Reply::text(403, "ACL not found");
        }
    }
    if let Some(i) = req.param("index").and_then(|i| i.parse::<u64>().ok()) {
        if i > 0 {
            let wait = req.param("wait").and_then(parse_wait);
            block(state, i, wait.unwrap_or(DEFAULT_WAIT)).await;
        }
    }
    let d = state.data();
    let body = match req.path.as_str() {
        "/v1/catalog/services" => {
            let mut m = Map::new();
            m.insert("consul".into(), json!([]));
            for (name, entries) in &d.services {
                let mut tags: Vec<Value> = Vec::new();
                for t in entries
                    .iter()
                    .filter_map(|e| e["Service"]["Tags"].as_array())
                    .flatten()
                {
                    if !tags.contains(t) {
                        tags.push(t.clone());
                    }
                }
                m.insert(name.clone(), Value::Array(tags));
            }
            Value::Object(m)
        }
        "/v1/health/state/any" => Value::Array(
            d.services
                .values()
                .flatten()
                .filter_map(|e| e.get("Checks").and_then(Value::as_array))
                .flatten()
                .cloned()
                .collect(),
        ),
        p => match p.strip_prefix("/v1/health/service/") {
            Some(name) => {
                let only_passing = req
                    .param("passing")
                    .is_some_and(|v| v.is_empty() || v == "true" || v == "1");
                let entries = d.services.get(name).cloned().unwrap_or_default();
                Value::Array(
                    entries
                        .into_iter()
                        .filter(|e| !only_passing || passing(e))
                        .collect(),
                )
            }
            None => return Reply::text(404, "Invalid URL path"),
        },
    };
    Reply::json(200, &body).with_header("X-Consul-Index", &d.index.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_parse() {
        assert_eq!(parse_wait("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_wait("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_wait("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_wait("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_wait("x"), None);
    }

    #[test]
    fn passing_filters_on_every_check() {
        let a: SocketAddr = ([127, 0, 0, 1], 1).into();
        assert!(passing(&instance("web-1", a)));
        assert!(!passing(&critical(instance("web-1", a))));
    }
}
