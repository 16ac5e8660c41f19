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

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

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
        });
        accept_loop(listener, Arc::clone(&shared));
        FakeKubernetes { addr, shared }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
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

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let generation = shared.generation.load(Ordering::SeqCst);
    thread::spawn(move || {
        for stream in listener.incoming() {
            if shared.generation.load(Ordering::SeqCst) != generation {
                break;
            }
            let Ok(stream) = stream else { continue };
            if let Ok(c) = stream.try_clone() {
                shared
                    .open
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(c);
            }
            let s = Arc::clone(&shared);
            thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                serve(stream, &s, generation);
            });
        }
    });
}

fn read_request<S: Read>(r: &mut BufReader<S>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
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
    Some(Request {
        method,
        path: path.to_owned(),
        query: query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect(),
        headers,
    })
}

/// Form decoding: `+` is a space, `%XX` a byte.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(v)) => {
                out.push(v);
                i += 2;
            }
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status_body(code: u16, reason: &str, message: &str) -> String {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
    .to_string()
}

fn respond<W: Write>(w: &mut W, code: u16, body: &str) -> std::io::Result<()> {
    let reason = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    write!(
        w,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

fn serve(stream: TcpStream, sh: &Shared, generation: u64) {
    let Ok(w) = stream.try_clone() else { return };
    let mut w = w;
    let mut r = BufReader::new(stream);
    while let Some(req) = read_request(&mut r) {
        if sh.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        let (failure, token) = {
            let mut s = sh.lock();
            s.requests.push(req.clone());
            (s.failure.clone(), s.token.clone())
        };
        let auth_ok = req.headers.get("authorization") == Some(&format!("Bearer {token}"));
        let res = Resource::from_path(&req.path);
        let ok = match (auth_ok, &failure, res) {
            (false, _, _) => respond(
                &mut w,
                401,
                &status_body(401, "Unauthorized", "Unauthorized"),
            ),
            (_, Failure::Status(c), _) => respond(
                &mut w,
                *c,
                &status_body(*c, "InternalError", "failing on purpose"),
            ),
            (_, Failure::Hang, _) => {
                sh.hanging.fetch_add(1, Ordering::SeqCst);
                while sh.lock().failure == Failure::Hang
                    && sh.generation.load(Ordering::SeqCst) == generation
                {
                    thread::sleep(Duration::from_millis(10));
                }
                sh.hanging.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            (_, _, None) => respond(
                &mut w,
                404,
                &status_body(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            ),
            (_, Failure::Garbage, Some(_)) if req.is_watch() => {
                let _ =
                    write_watch_head(&mut w).and_then(|_| write_chunk(&mut w, b"}{ not json\n"));
                let _ = w.write_all(b"0\r\n\r\n");
                return;
            }
            (_, Failure::Garbage, Some(_)) => {
                respond(&mut w, 200, "{\"kind\": \"EndpointsList\", \"items\": [tru")
            }
            (_, Failure::None, Some(res)) if req.is_watch() => {
                watch(&mut w, sh, generation, res, &req);
                return;
            }
            (_, Failure::None, Some(res)) => match list(sh, res, &req) {
                Ok(body) => respond(&mut w, 200, &body),
                Err((code, msg)) => respond(&mut w, code, &status_body(code, "BadRequest", &msg)),
            },
        };
        if ok.is_err() {
            return;
        }
    }
}

/// Label and field selectors of a request.
struct Selectors {
    labels: Vec<(String, &'static str, String)>,
    fields: Vec<(String, &'static str, String)>,
}

fn terms(s: &str, bare: bool) -> Result<Vec<(String, &'static str, String)>, String> {
    s.split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            let t = t.trim();
            for op in ["!=", "==", "="] {
                if let Some((k, v)) = t.split_once(op) {
                    let op = if op == "!=" { "!=" } else { "=" };
                    return Ok((k.trim().to_owned(), op, v.trim().to_owned()));
                }
            }
            match t.strip_prefix('!') {
                Some(k) if bare => Ok((k.to_owned(), "!", String::new())),
                None if bare => Ok((t.to_owned(), "exists", String::new())),
                _ => Err(format!("unsupported selector term {t:?}")),
            }
        })
        .collect()
}

impl Selectors {
    fn of(req: &Request) -> Result<Selectors, String> {
        let fields = terms(req.param("fieldSelector").unwrap_or(""), false)?;
        for (k, _, _) in &fields {
            if k != "metadata.namespace" && k != "metadata.name" {
                return Err(format!("field label not supported: {k}"));
            }
        }
        Ok(Selectors {
            labels: terms(req.param("labelSelector").unwrap_or(""), true)?,
            fields,
        })
    }

    fn admits(&self, o: &Value) -> bool {
        let labels = o.get("metadata").and_then(|m| m.get("labels"));
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|(k, op, v)| match *op {
            "=" => label(k) == Some(v.as_str()),
            "!=" => label(k) != Some(v.as_str()),
            "!" => label(k).is_none(),
            _ => label(k).is_some(),
        });
        let fields_ok = self.fields.iter().all(|(k, op, v)| {
            let actual = meta(o, k.trim_start_matches("metadata."));
            (actual == *v) == (*op == "=")
        });
        labels_ok && fields_ok
    }
}

fn list(sh: &Shared, res: Resource, req: &Request) -> Result<String, (u16, String)> {
    let sel = Selectors::of(req).map_err(|e| (400, e))?;
    let mut s = sh.lock();
    let limit = req
        .param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|&l| l > 0)
        .unwrap_or(usize::MAX)
        .min(s.page_size.unwrap_or(usize::MAX));
    let (snap, offset) = match req.param("continue") {
        Some(c) => {
            let (id, off) = c
                .split_once('-')
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<usize>().ok()?)))
                .ok_or((400, format!("invalid continue token {c:?}")))?;
            if !s.snapshots.contains_key(&id) {
                return Err((410, "the provided continue parameter is too old".into()));
            }
            (id, off)
        }
        None => {
            let items: Vec<Value> = s
                .objects
                .iter()
                .filter(|((r, _, _), o)| *r == res && sel.admits(o))
                .map(|(_, o)| o.clone())
                .collect();
            let id = s.snapshots.len() as u64 + 1;
            let rv = s.rv;
            s.snapshots.insert(id, (rv, items));
            (id, 0)
        }
    };
    let (rv, items) = s.snapshots.get(&snap).cloned().unwrap_or_default();
    let page: Vec<Value> = items.iter().skip(offset).take(limit).cloned().collect();
    let next = offset + page.len();
    let (kind, api) = res.list_kind();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if next < items.len() {
        metadata["continue"] = json!(format!("{snap}-{next}"));
    }
    Ok(json!({"kind": kind, "apiVersion": api, "metadata": metadata, "items": page}).to_string())
}

fn write_watch_head<W: Write>(w: &mut W) -> std::io::Result<()> {
    w.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )?;
    w.flush()
}

fn write_chunk<W: Write>(w: &mut W, data: &[u8]) -> std::io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    write!(w, "{:x}\r\n", data.len())?;
    w.write_all(data)?;
    w.write_all(b"\r\n")?;
    w.flush()
}

fn event_line(ty: &str, object: &Value) -> Vec<u8> {
    let mut l = json!({"type": ty, "object": object})
        .to_string()
        .into_bytes();
    l.push(b'\n');
    l
}

fn expired_line(rv: u64, current: u64) -> Vec<u8> {
    let status: Value = serde_json::from_str(&status_body(
        410,
        "Expired",
        &format!("too old resource version: {rv} ({current})"),
    ))
    .unwrap_or(Value::Null);
    event_line("ERROR", &status)
}

/// Serve one watch until it ends (close, expire, garbage, stop or a write error).
fn watch<W: Write>(w: &mut W, sh: &Shared, generation: u64, res: Resource, req: &Request) {
    let Ok(sel) = Selectors::of(req) else {
        let _ = respond(w, 400, &status_body(400, "BadRequest", "bad selector"));
        return;
    };
    let from: u64 = req
        .param("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let (replay, mut cursor, compacted, current) = {
        let s = sh.lock();
        let replay: Vec<Vec<u8>> = s
            .history
            .iter()
            .filter(|(rv, r, _, o)| *rv > from && *r == res && sel.admits(o))
            .map(|(_, _, ty, o)| event_line(ty, o))
            .collect();
        (replay, s.signals.len(), s.compacted, s.rv)
    };
    if write_watch_head(w).is_err() {
        return;
    }
    if from != 0 && from < compacted {
        let _ = write_chunk(w, &expired_line(from, current));
        let _ = w.write_all(b"0\r\n\r\n");
        return;
    }
    sh.watches.fetch_add(1, Ordering::SeqCst);
    let mut out = replay.concat();
    loop {
        let split = sh.lock().split;
        let sent = if split {
            out.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .try_for_each(|l| {
                    let (a, b) = l.split_at(l.len() / 2);
                    write_chunk(w, a)?;
                    thread::sleep(Duration::from_millis(5));
                    write_chunk(w, &[b, b"\n"].concat())
                })
        } else {
            write_chunk(w, &out)
        };
        out.clear();
        if sent.is_err() {
            break;
        }
        let mut s = sh.lock();
        while s.signals.len() == cursor && sh.generation.load(Ordering::SeqCst) == generation {
            s = sh
                .changed
                .wait_timeout(s, Duration::from_millis(50))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        if sh.generation.load(Ordering::SeqCst) != generation {
            break;
        }
        let mut end = false;
        for sig in &s.signals[cursor..] {
            match sig {
                Signal::Event(r, ty, o) if *r == res && sel.admits(o) => {
                    out.extend(event_line(ty, o))
                }
                Signal::Event(..) => {}
                Signal::Bookmark => {
                    let (kind, api) = res.kind();
                    out.extend(event_line(
                        "BOOKMARK",
                        &json!({"kind": kind, "apiVersion": api,
                                "metadata": {"resourceVersion": s.rv.to_string()}}),
                    ));
                }
                Signal::Expire => {
                    out.extend(expired_line(from, s.rv));
                    end = true;
                }
                Signal::Garbage => {
                    out.extend_from_slice(b"{\"type\": \"ADDED\", \"object\": garbage\n");
                    end = true;
                }
                Signal::Close => end = true,
            }
            if end {
                break;
            }
        }
        cursor = s.signals.len();
        drop(s);
        if end {
            let _ = write_chunk(w, &out);
            let _ = w.write_all(b"0\r\n\r\n");
            let _ = w.flush();
            break;
        }
    }
    sh.watches.fetch_sub(1, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_form_values() {
        assert_eq!(decode("a%3Db%2Cc+d"), "a=b,c d");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }
}
