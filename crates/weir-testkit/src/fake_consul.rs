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

/// A small HTTP/1.1 server for fakes: keepalive, a thread of its own running a tokio
/// runtime, an async handler per request, [`Fault`] injection, a log of every request, and
/// stop/restart on the same port (while stopped, the port stays reserved and refuses
/// connections).
pub mod server {
    use std::collections::HashMap;
    use std::future::Future;
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpSocket, TcpStream};
    use tokio::runtime::Runtime;
    use tokio::sync::watch;
    use tokio::task::JoinHandle;

    /// How the server misbehaves, for every request that arrives while it is set.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub enum Fault {
        /// Answer normally.
        #[default]
        None,
        /// Answer this status with a text body.
        Status(u16),
        /// Read the request and never answer; the connection is closed when the fault is
        /// cleared or the server stops.
        Hang,
        /// Answer 200 `application/json` with a body that is not JSON.
        Garbage,
    }

    /// One request as the server received it.
    #[derive(Debug, Clone, Default)]
    pub struct Recorded {
        pub method: String,
        /// The path, percent-decoded, without the query.
        pub path: String,
        /// The query parameters, decoded, in order.
        pub query: Vec<(String, String)>,
        /// Lower-cased names.
        pub headers: HashMap<String, String>,
        pub body: Vec<u8>,
    }

    impl Recorded {
        /// The first query parameter `name`.
        pub fn param(&self, name: &str) -> Option<&str> {
            self.query
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }

        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .get(&name.to_ascii_lowercase())
                .map(String::as_str)
        }
    }

    /// An answer.
    #[derive(Debug, Clone)]
    pub struct Reply {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: Vec<u8>,
    }

    impl Reply {
        pub fn text(status: u16, body: &str) -> Reply {
            Reply {
                status,
                headers: vec![("Content-Type".into(), "text/plain".into())],
                body: body.as_bytes().to_vec(),
            }
        }

        pub fn json(status: u16, v: &serde_json::Value) -> Reply {
            Reply {
                status,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: v.to_string().into_bytes(),
            }
        }

        pub fn with_header(mut self, k: &str, v: &str) -> Reply {
            self.headers.push((k.to_owned(), v.to_owned()));
            self
        }
    }

    pub type Handler =
        Arc<dyn Fn(Recorded) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

    enum Listening {
        Yes(JoinHandle<()>),
        /// Bound, not listening: connections are refused and the port stays ours.
        No(TcpSocket),
    }

    struct Shared {
        handler: Handler,
        fault: Mutex<Fault>,
        requests: Mutex<Vec<Recorded>>,
        /// Bumped by `stop`: open connections close.
        generation: watch::Sender<u64>,
        live: AtomicUsize,
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A running server. Dropping it stops it.
    pub struct Server {
        addr: SocketAddr,
        shared: Arc<Shared>,
        listening: Mutex<Option<Listening>>,
        rt: Option<Runtime>,
    }

    fn socket(addr: SocketAddr) -> TcpSocket {
        let s = TcpSocket::new_v4().expect("socket");
        s.set_reuseaddr(true).expect("SO_REUSEADDR");
        s.bind(addr).expect("bind the fake's port");
        s
    }

    impl Server {
        /// Start on an ephemeral port of 127.0.0.1.
        pub fn start(handler: Handler) -> Server {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("fake-registry")
                .enable_all()
                .build()
                .expect("runtime");
            let s = socket(([127, 0, 0, 1], 0).into());
            let addr = s.local_addr().expect("local addr");
            let server = Server {
                addr,
                shared: Arc::new(Shared {
                    handler,
                    fault: Mutex::new(Fault::None),
                    requests: Mutex::new(Vec::new()),
                    generation: watch::channel(0).0,
                    live: AtomicUsize::new(0),
                }),
                listening: Mutex::new(Some(Listening::No(s))),
                rt: Some(rt),
            };
            server.restart();
            server
        }

        pub fn addr(&self) -> SocketAddr {
            self.addr
        }

        /// `http://127.0.0.1:<port>`.
        pub fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        pub fn set_fault(&self, f: Fault) {
            *lock(&self.shared.fault) = f;
        }

        pub fn requests(&self) -> Vec<Recorded> {
            lock(&self.shared.requests).clone()
        }

        pub fn clear_requests(&self) {
            lock(&self.shared.requests).clear();
        }

        /// Close the listener and every open connection; the port refuses connections.
        pub fn stop(&self) {
            let Some(rt) = &self.rt else { return };
            let mut l = lock(&self.listening);
            if let Some(Listening::Yes(task)) = l.take() {
                task.abort();
                let _ = rt.block_on(task);
                *l = Some(Listening::No(socket(self.addr)));
            }
            self.shared.generation.send_modify(|g| *g += 1);
            for _ in 0..400 {
                if self.shared.live.load(Ordering::SeqCst) == 0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }

        /// Listen again on the same port (no-op when listening).
        pub fn restart(&self) {
            let Some(rt) = &self.rt else { return };
            let mut l = lock(&self.listening);
            let Some(Listening::No(s)) = l.take() else {
                return;
            };
            let _guard = rt.enter();
            let listener = s.listen(1024).expect("listen");
            let shared = Arc::clone(&self.shared);
            *l = Some(Listening::Yes(rt.spawn(accept(listener, shared))));
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop();
            if let Some(rt) = self.rt.take() {
                rt.shutdown_background();
            }
        }
    }

    async fn accept(listener: TcpListener, shared: Arc<Shared>) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let s = Arc::clone(&shared);
            s.live.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let generation = s.generation.subscribe();
                connection(stream, &s, generation).await;
                s.live.fetch_sub(1, Ordering::SeqCst);
            });
        }
    }

    /// `%XX` and `+` decoding of a query component.
    pub fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (hex(b[i + 1]), hex(b[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn parse_target(target: &str) -> (String, Vec<(String, String)>) {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let query = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect();
        (decode(path), query)
    }

    async fn read_request<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Option<Recorded> {
        let mut line = String::new();
        if r.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next()?.to_owned();
        let (path, query) = parse_target(parts.next()?);
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await.ok()? == 0 {
                return None;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len.min(1 << 20)];
        r.read_exact(&mut body).await.ok()?;
        Some(Recorded {
            method,
            path,
            query,
            headers,
            body,
        })
    }

    fn reason(status: u16) -> &'static str {
        http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("")
    }

    async fn connection(stream: TcpStream, s: &Shared, mut generation: watch::Receiver<u64>) {
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        loop {
            let req = tokio::select! {
                req = read_request(&mut r) => req,
                _ = generation.changed() => return,
            };
            let Some(req) = req else { return };
            let close = req
                .header("connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("close"));
            lock(&s.requests).push(req.clone());
            let fault = lock(&s.fault).clone();
            let reply = match fault {
                Fault::None => tokio::select! {
                    reply = (s.handler)(req) => reply,
                    _ = generation.changed() => return,
                },
                Fault::Status(code) => Reply::text(code, "injected failure"),
                Fault::Garbage => Reply {
                    status: 200,
                    headers: vec![("Content-Type".into(), "application/json".into())],
                    body: b"<html>{\"not\": json".to_vec(),
                },
                Fault::Hang => {
                    while *lock(&s.fault) == Fault::Hang {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                            _ = generation.changed() => return,
                        }
                    }
                    return;
                }
            };
            let mut head = format!(
                "HTTP/1.1 {} {}\r\nContent-Length: {}\r\n",
                reply.status,
                reason(reply.status),
                reply.body.len()
            );
            for (k, v) in &reply.headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            if close {
                head.push_str("Connection: close\r\n");
            }
            head.push_str("\r\n");
            let mut out = head.into_bytes();
            out.extend_from_slice(&reply.body);
            if w.write_all(&out).await.is_err() || w.flush().await.is_err() || close {
                return;
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn decodes_targets() {
            let (p, q) = parse_target("/v1/health/service/a%20b?passing=true&x=%2Fy+z&flag");
            assert_eq!(p, "/v1/health/service/a b");
            assert_eq!(
                q,
                [
                    ("passing".to_owned(), "true".to_owned()),
                    ("x".to_owned(), "/y z".to_owned()),
                    ("flag".to_owned(), String::new())
                ]
            );
            assert_eq!(decode("%zz%4"), "%zz%4");
        }
    }
}

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
