//! A fake Kubernetes API server on an ephemeral port of 127.0.0.1, speaking the parts of the
//! real API a discovery client uses: `GET /api/v1/endpoints` and
//! `GET /apis/discovery.k8s.io/v1/endpointslices`, listed in pages (`limit`, `continue`, a
//! consistent snapshot per list) with a `resourceVersion`, and watched (`watch=true`,
//! `resourceVersion`) as a chunked stream of newline-delimited JSON events (ADDED, MODIFIED,
//! DELETED, BOOKMARK, ERROR 410). `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`) and
//! `fieldSelector` (`metadata.namespace`, `metadata.name` with `=`/`==`/`!=`) filter both.
//! Every request needs `Authorization: Bearer <token>` (else 401).
//!
//! A test changes the objects ([`put_endpoints`](FakeKubernetes::put_endpoints), …), steers the
//! open watches (bookmark, expire with 410, close, garbage, hold events back), makes the server
//! fail ([`Failure`], [`stop`](FakeKubernetes::stop) / [`restart`](FakeKubernetes::restart) on the
//! same port) and reads what it received ([`requests`](FakeKubernetes::requests)).

use openssl::ssl::{SslAcceptor, SslMethod};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

mod server;
use server::accept_loop;

/// The two object kinds served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Endpoints,
    EndpointSlices,
}

impl Resource {
    fn from_path(p: &str) -> Option<Resource> {
        match p {
            "/api/v1/endpoints" => Some(Resource::Endpoints),
            "/apis/discovery.k8s.io/v1/endpointslices" => Some(Resource::EndpointSlices),
            _ => None,
        }
    }

    fn list_kind(self) -> (&'static str, &'static str) {
        match self {
            Resource::Endpoints => ("EndpointsList", "v1"),
            Resource::EndpointSlices => ("EndpointSliceList", "discovery.k8s.io/v1"),
        }
    }

    fn kind(self) -> (&'static str, &'static str) {
        match self {
            Resource::Endpoints => ("Endpoints", "v1"),
            Resource::EndpointSlices => ("EndpointSlice", "discovery.k8s.io/v1"),
        }
    }
}

/// How the server answers new requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Normally.
    None,
    /// This status with a Kubernetes `Status` body.
    Status(u16),
    /// Read the request, never answer (until the failure changes or the server stops; then the
    /// connection is closed).
    Hang,
    /// 200 with a body that is not JSON (lists) or a watch stream whose first line is not JSON.
    Garbage,
}

/// What the server received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Lower-cased names.
    pub headers: HashMap<String, String>,
}

impl Request {
    /// The first query parameter `k`.
    pub fn param(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_watch(&self) -> bool {
        self.param("watch") == Some("true")
    }
}

/// What open watches are told.
#[derive(Debug, Clone)]
enum Signal {
    Event(Resource, &'static str, Value),
    Bookmark,
    Expire,
    Close,
    Garbage,
}

struct State {
    rv: u64,
    objects: BTreeMap<(Resource, String, String), Value>,
    /// Every change, for watches that start from an older resourceVersion.
    history: Vec<(u64, Resource, &'static str, Value)>,
    /// Watches from a resourceVersion below this get 410.
    compacted: u64,
    signals: Vec<Signal>,
    hold: bool,
    token: String,
    failure: Failure,
    page_size: Option<usize>,
    split: bool,
    snapshots: HashMap<u64, (u64, Vec<Value>)>,
    requests: Vec<Request>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Bumped by stop(): connections of an older generation end.
    generation: AtomicU64,
    open: Mutex<Vec<TcpStream>>,
    watches: AtomicUsize,
    hanging: AtomicUsize,
    /// HTTPS when set.
    tls: Option<Arc<SslAcceptor>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fake API server. Dropping it stops it.
pub struct FakeKubernetes {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeKubernetes {
    /// Start on an ephemeral port, accepting `Bearer <token>`.
    pub fn start(token: &str) -> FakeKubernetes {
        Self::start_with(token, None)
    }

    /// Start serving HTTPS with certificate `id` (see [`crate::pki`]).
    pub fn start_tls(token: &str, id: &crate::pki::Identity) -> FakeKubernetes {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
        b.set_certificate(&id.cert).expect("cert");
        b.set_private_key(&id.key).expect("key");
        Self::start_with(token, Some(Arc::new(b.build())))
    }

    fn start_with(token: &str, tls: Option<Arc<SslAcceptor>>) -> FakeKubernetes {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake kubernetes");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 100,
                objects: BTreeMap::new(),
                history: Vec::new(),
                compacted: 0,
                signals: Vec::new(),
                hold: false,
                token: token.to_owned(),
                failure: Failure::None,
                page_size: None,
                split: false,
                snapshots: HashMap::new(),
                requests: Vec::new(),
            }),
            changed: Condvar::new(),
            generation: AtomicU64::new(0),
            open: Mutex::new(Vec::new()),
            watches: AtomicUsize::new(0),
            hanging: AtomicUsize::new(0),
            tls,
        });
        accept_loop(listener, Arc::clone(&shared));
        FakeKubernetes { addr, shared }
    }

    /// `http://127.0.0.1:<port>` (`https` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.shared.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    pub fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The token accepted from now on (the old one gets 401).
    pub fn set_token(&self, token: &str) {
        self.shared.lock().token = token.to_owned();
    }

    /// How new requests are answered. A failure also ends the open watches, so a client meets
    /// it at once.
    pub fn set_failure(&self, f: Failure) {
        let fails = f != Failure::None;
        let mut s = self.shared.lock();
        s.failure = f;
        if fails {
            s.signals.push(Signal::Close);
        }
        drop(s);
        self.shared.changed.notify_all();
    }

    /// At most `n` items per list page, whatever `limit` says (to exercise paging).
    pub fn set_page_size(&self, n: Option<usize>) {
        self.shared.lock().page_size = n;
    }

    /// Write each watch event in two chunks, split in the middle of its JSON.
    pub fn split_events(&self, on: bool) {
        self.shared.lock().split = on;
    }

    /// While held, changes are stored (lists see them) but not sent to open watches.
    pub fn hold_events(&self, on: bool) {
        self.shared.lock().hold = on;
    }

    /// Create or replace Endpoints `ns/name` with `subsets` (see [`subset`]).
    pub fn put_endpoints(&self, ns: &str, name: &str, subsets: Value) {
        self.put(
            Resource::Endpoints,
            json!({"metadata": {"name": name, "namespace": ns}, "subsets": subsets}),
        );
    }

    /// Create or replace Endpoints `ns/name` carrying `labels`.
    pub fn put_endpoints_labeled(&self, ns: &str, name: &str, labels: Value, subsets: Value) {
        self.put(
            Resource::Endpoints,
            json!({"metadata": {"name": name, "namespace": ns, "labels": labels},
                   "subsets": subsets}),
        );
    }

    pub fn delete_endpoints(&self, ns: &str, name: &str) {
        self.delete(Resource::Endpoints, ns, name);
    }

    /// Create or replace EndpointSlice `ns/name` of Service `service` (no label when `None`).
    pub fn put_slice(
        &self,
        ns: &str,
        name: &str,
        service: Option<&str>,
        endpoints: Value,
        ports: Value,
    ) {
        let labels = match service {
            Some(s) => json!({"kubernetes.io/service-name": s}),
            None => json!({}),
        };
        self.put(
            Resource::EndpointSlices,
            json!({"metadata": {"name": name, "namespace": ns, "labels": labels},
                   "addressType": "IPv4", "endpoints": endpoints, "ports": ports}),
        );
    }

    pub fn delete_slice(&self, ns: &str, name: &str) {
        self.delete(Resource::EndpointSlices, ns, name);
    }

    /// Create or replace an object given whole (its `metadata.name`/`namespace` name it; they
    /// default to empty strings). `kind`, `apiVersion` and `resourceVersion` are set here.
    pub fn put(&self, res: Resource, mut object: Value) {
        let mut s = self.shared.lock();
        s.rv += 1;
        let rv = s.rv;
        let (kind, api) = res.kind();
        if let Some(o) = object.as_object_mut() {
            o.insert("kind".into(), json!(kind));
            o.insert("apiVersion".into(), json!(api));
        }
        if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        let key = (res, meta(&object, "namespace"), meta(&object, "name"));
        let ty = if s.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.objects.insert(key, object.clone());
        Self::record(&mut s, rv, res, ty, object);
        drop(s);
        self.shared.changed.notify_all();
    }

    fn delete(&self, res: Resource, ns: &str, name: &str) {
        let mut s = self.shared.lock();
        let Some(mut object) = s.objects.remove(&(res, ns.to_owned(), name.to_owned())) else {
            return;
        };
        s.rv += 1;
        let rv = s.rv;
        if let Some(m) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        Self::record(&mut s, rv, res, "DELETED", object);
        drop(s);
        self.shared.changed.notify_all();
    }

    fn record(s: &mut State, rv: u64, res: Resource, ty: &'static str, object: Value) {
        s.history.push((rv, res, ty, object.clone()));
        if !s.hold {
            s.signals.push(Signal::Event(res, ty, object));
        }
    }

    fn signal(&self, sig: Signal) {
        self.shared.lock().signals.push(sig);
        self.shared.changed.notify_all();
    }

    /// Send a BOOKMARK with the current resourceVersion to every open watch.
    pub fn bookmark(&self) {
        self.signal(Signal::Bookmark);
    }

    /// Forget the history up to now: open watches get `ERROR` 410 (Expired) and end, and a
    /// watch from an older resourceVersion gets the same.
    pub fn expire_watches(&self) {
        let mut s = self.shared.lock();
        s.compacted = s.rv;
        s.signals.push(Signal::Expire);
        drop(s);
        self.shared.changed.notify_all();
    }

    /// End every open watch normally (as at its `timeoutSeconds`).
    pub fn close_watches(&self) {
        self.signal(Signal::Close);
    }

    /// Send a line that is not JSON on every open watch.
    pub fn garbage_in_watches(&self) {
        self.signal(Signal::Garbage);
    }

    /// The current resourceVersion (bumped by every change).
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Every request received, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    /// List requests (not watches) received.
    pub fn lists(&self) -> usize {
        self.requests().iter().filter(|r| !r.is_watch()).count()
    }

    /// Watch requests received.
    pub fn watch_requests(&self) -> usize {
        self.requests().iter().filter(|r| r.is_watch()).count()
    }

    /// Watch streams open now.
    pub fn open_watches(&self) -> usize {
        self.shared.watches.load(Ordering::SeqCst)
    }

    /// Requests kept unanswered by [`Failure::Hang`] now.
    pub fn hanging(&self) -> usize {
        self.shared.hanging.load(Ordering::SeqCst)
    }

    /// Stop listening and drop every connection (the port then refuses connections). The
    /// objects are kept for [`restart`](Self::restart).
    pub fn stop(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for c in self
            .shared
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        self.shared.changed.notify_all();
        for _ in 0..200 {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(50)).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Listen again on the same port, with the same objects.
    pub fn restart(&self) {
        let listener = (0..200)
            .find_map(|_| {
                TcpListener::bind(self.addr)
                    .map_err(|_| thread::sleep(Duration::from_millis(10)))
                    .ok()
            })
            .expect("rebind the fake kubernetes port");
        accept_loop(listener, Arc::clone(&self.shared));
    }
}

impl Drop for FakeKubernetes {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One Endpoints subset: ready and not-ready IPs, ports as `(name, number)`.
pub fn subset(ready: &[&str], not_ready: &[&str], ports: &[(Option<&str>, u16)]) -> Value {
    let addrs = |l: &[&str]| l.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>();
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p)| match n {
            Some(n) => json!({"name": n, "port": p, "protocol": "TCP"}),
            None => json!({"port": p, "protocol": "TCP"}),
        })
        .collect();
    let mut s = json!({"addresses": addrs(ready), "ports": ports});
    if !not_ready.is_empty() {
        s["notReadyAddresses"] = json!(addrs(not_ready));
    }
    s
}

/// One EndpointSlice endpoint.
pub fn slice_endpoint(ip: &str, ready: bool) -> Value {
    json!({"addresses": [ip], "conditions": {"ready": ready}})
}

fn meta(o: &Value, k: &str) -> String {
    o.get("metadata")
        .and_then(|m| m.get(k))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}
