//! Property tests of the Admin API as a stranger with the key (or without it) sees it: merge
//! patches (RFC 7396) of arbitrary JSON, arbitrary key bytes at the gate, and arbitrary
//! requests (any method, path, id, query string and body, and mutations of valid bodies of
//! every kind) against a memory store seeded with secrets. Each request gets a JSON answer
//! with a known status in bounded time; no answer ever shows a stored secret; and what the
//! store holds after any sequence of requests is still a valid configuration.
//! `PROPTEST_CASES` sets the number of cases (256 by default).

use proptest::prelude::*;
use serde_json::{json, Map, Number, Value};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use weir_config::{AdminConfig, Resources, Secret};
use weir_store::admin::{merge_patch, AdminApi, Request};
use weir_store::memory::MemorySource;
use weir_store::{Backend, Sink, Validator};
use weir_testkit::pki::TestCa;

const KEY: &str = "fuzz-admin-key-0123456789abcdef";
const CONSUMER_KEY: &str = "consumer-secret-key-5f1e";
const PER_INPUT: Duration = Duration::from_secs(3);

/// CPU time this thread has run so far (Linux: `/proc/thread-self/schedstat`, 0 elsewhere).
/// The per-input bound is on CPU time, not wall time: a thread waiting for a CPU on a loaded
/// machine does not count, so the bound catches loops and blow-ups without depending on load.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

struct NoSink;
impl Sink for NoSink {
    fn apply(&self, _: &Resources) {}
}

struct Pems {
    cert: String,
    key: String,
    client_cert: String,
    client_key: String,
}

fn pems() -> &'static Pems {
    static P: OnceLock<Pems> = OnceLock::new();
    P.get_or_init(|| {
        let ca = TestCa::new("fuzz-ca");
        let server = ca.issue("fuzz.example", &["fuzz.example"], &[], false);
        let client = ca.issue("client", &["client"], &[], true);
        Pems {
            cert: server.cert_pem(),
            key: server.key_pem(),
            client_cert: client.cert_pem(),
            client_key: client.key_pem(),
        }
    })
}

/// The secrets the store holds: none may come back in an answer.
fn secrets() -> Vec<String> {
    let p = pems();
    // The PEM bodies, without their armour lines (which do not identify a key).
    let body = |pem: &str| {
        pem.lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .join("")
    };
    vec![
        KEY.to_owned(),
        CONSUMER_KEY.to_owned(),
        body(&p.key)[..48].to_owned(),
        body(&p.client_key)[..48].to_owned(),
    ]
}

fn seed() -> Value {
    let p = pems();
    json!({
        "upstreams": [
            {"id": "u1", "nodes": {"127.0.0.1:1980": 1}},
            {"id": "mtls", "scheme": "https", "nodes": {"127.0.0.1:1981": 1},
             "tls": {"client_cert": p.client_cert, "client_key": p.client_key}}
        ],
        "services": [{"id": "s1", "upstream_id": "u1", "plugins": {"key-auth": {}}}],
        "routes": [
            {"id": "r1", "uri": "/a/*", "service_id": "s1"},
            {"id": "r2", "uri": "/b", "upstream": {"type": "chash", "key": "remote_addr",
                                                   "nodes": {"127.0.0.1:1982": 1}}}
        ],
        "consumers": [{"username": "alice", "plugins": {"key-auth": {"key": CONSUMER_KEY}}}],
        "certificates": [{"id": "c1", "cert": p.cert, "key": p.key}]
    })
}

struct World {
    api: AdminApi,
    backend: Arc<dyn Backend>,
    validator: Validator,
    rt: tokio::runtime::Runtime,
}

fn world() -> World {
    let doc = seed();
    let validator = Validator::new(&json!({}));
    let backend: Arc<dyn Backend> =
        Arc::new(MemorySource::new(&doc, validator.clone(), Arc::new(NoSink)));
    let cfg = AdminConfig {
        listen: ([127, 0, 0, 1], 0).into(),
        api_key: Secret::new(KEY),
        allow_admin: Vec::new(),
    };
    World {
        api: AdminApi::new(&cfg, Arc::clone(&backend)),
        backend,
        validator,
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
    }
}

impl World {
    fn call(&self, method: &http::Method, path: &str, query: Option<&str>, body: &[u8]) -> Value {
        let t = thread_cpu();
        let reply = self.rt.block_on(self.api.handle(Request {
            method,
            path,
            query,
            body,
        }));
        let took = thread_cpu().saturating_sub(t);
        assert!(
            took < PER_INPUT,
            "{method} {path} took {took:?} of CPU time"
        );
        assert!(
            [200, 201, 400, 404, 405, 409].contains(&reply.status),
            "{method} {path}: status {} {}",
            reply.status,
            reply.body
        );
        if reply.status >= 400 {
            let msg = reply.body.get("error_msg").and_then(Value::as_str);
            assert!(msg.is_some_and(|m| !m.is_empty()), "{}", reply.body);
        }
        let text = reply.body.to_string();
        for s in secrets() {
            assert!(
                !text.contains(&s),
                "{method} {path}: a secret came back: {text}"
            );
        }
        // Whatever was accepted, the store still holds a valid configuration.
        let set = self.backend.current();
        if let Err(e) = self.validator.check(&set) {
            panic!("{method} {path} left an invalid store: {e}");
        }
        reply.body
    }
}

const KINDS: &[&str] = &[
    "routes",
    "services",
    "upstreams",
    "consumers",
    "certificates",
    "ca_certificates",
];

const NAMES: &[&str] = &[
    "id",
    "uri",
    "uris",
    "host",
    "hosts",
    "methods",
    "priority",
    "upstream",
    "upstream_id",
    "service_id",
    "plugins",
    "nodes",
    "type",
    "hash_on",
    "key",
    "host",
    "port",
    "weight",
    "scheme",
    "pass_host",
    "timeout",
    "connect",
    "retries",
    "checks",
    "active",
    "tls",
    "client_cert",
    "client_key",
    "client_cert_id",
    "ca_certificates",
    "key-auth",
    "username",
    "cert",
    "snis",
    "create_time",
    "update_time",
    "desc",
    "labels",
    "name",
    "discovery_type",
    "service_name",
    "keepalive_pool",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(
            &[
                "",
                "/",
                "/x/*",
                "127.0.0.1:1980",
                "u1",
                "s1",
                "c1",
                "r1",
                "mtls",
                "******",
                "chash",
                "roundrobin",
                "remote_addr",
                "https",
                "alice",
                "$host",
                "key-auth",
            ][..]
        )
        .prop_map(|s| Value::String(s.to_owned())),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        let name = prop_oneof![
            4 => prop::sample::select(NAMES).prop_map(str::to_owned),
            1 => "\\PC{0,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((name, inner), 0..7)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn method() -> impl Strategy<Value = http::Method> {
    prop_oneof![
        4 => prop::sample::select(&["GET", "PUT", "POST", "PATCH", "DELETE"][..])
            .prop_map(|m| http::Method::from_bytes(m.as_bytes()).expect("method")),
        1 => "[A-Z]{1,8}".prop_map(|m| http::Method::from_bytes(m.as_bytes()).expect("method")),
    ]
}

fn path() -> impl Strategy<Value = String> {
    let seg = prop_oneof![
        prop::sample::select(
            &[
                "u1",
                "s1",
                "r1",
                "r2",
                "mtls",
                "c1",
                "alice",
                "nodes",
                "upstream",
                "plugins",
                "key-auth",
                "key",
                "tls",
                "client_key",
                "",
                "..",
                "%2F"
            ][..]
        )
        .prop_map(str::to_owned),
        "\\PC{0,10}",
    ];
    (
        prop_oneof![
            4 => Just("/apisix/admin/".to_owned()),
            1 => "\\PC{0,16}",
        ],
        prop_oneof![
            4 => prop::sample::select(KINDS).prop_map(str::to_owned),
            1 => "\\PC{0,10}",
        ],
        prop::collection::vec(seg, 0..4),
    )
        .prop_map(|(p, k, segs)| {
            let mut s = format!("{p}{k}");
            for x in segs {
                s.push('/');
                s.push_str(&x);
            }
            s
        })
}

fn query() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        "(page|page_size|x)=[0-9]{0,22}(&(page|page_size)=-?[0-9]{0,22}){0,3}",
        "\\PC{0,24}",
    ])
}

/// A body: arbitrary JSON (objects of resource members mostly), a valid resource of some
/// kind with one member replaced, or bytes.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => json_value().prop_map(|v| v.to_string().into_bytes()),
        3 => (any::<usize>(), any::<usize>(), json_value()).prop_map(|(k, pick, with)| {
            let seed = seed();
            let kind = KINDS[k % 5];
            let list = seed[kind].as_array().cloned().unwrap_or_default();
            let valid = list[pick % list.len()].clone();
            replace_somewhere(&valid, pick / 7, with).to_string().into_bytes()
        }),
        1 => prop::collection::vec(any::<u8>(), 0..256),
    ]
}

fn replace_somewhere(doc: &Value, pick: usize, with: Value) -> Value {
    fn count(v: &Value) -> usize {
        1 + match v {
            Value::Array(a) => a.iter().map(count).sum(),
            Value::Object(o) => o.values().map(count).sum(),
            _ => 0,
        }
    }
    fn go(v: &mut Value, n: &mut usize, with: &mut Option<Value>) {
        if *n == 0 {
            if let Some(w) = with.take() {
                *v = w;
            }
            return;
        }
        *n -= 1;
        match v {
            Value::Array(a) => a.iter_mut().for_each(|x| go(x, n, with)),
            Value::Object(o) => o.values_mut().for_each(|x| go(x, n, with)),
            _ => {}
        }
    }
    let mut v = doc.clone();
    let mut n = pick % count(&v);
    go(&mut v, &mut n, &mut Some(with));
    v
}

proptest! {
    /// RFC 7396: applying a merge patch twice gives what applying it once gives, and the
    /// result has no `null` member where the patch had one.
    #[test]
    fn merge_patch_is_idempotent(target in json_value(), patch in json_value()) {
        let mut once = target.clone();
        merge_patch(&mut once, &patch);
        let mut twice = once.clone();
        merge_patch(&mut twice, &patch);
        prop_assert_eq!(&once, &twice);
        if let (Value::Object(p), Value::Object(r)) = (&patch, &once) {
            for (k, v) in p {
                if v.is_null() {
                    prop_assert!(!r.contains_key(k));
                }
            }
        }
    }

    /// Only the exact key passes the gate; every other byte string is a 401.
    #[test]
    fn only_the_key_opens_the_gate(key in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        (0usize..KEY.len(), any::<u8>()).prop_map(|(i, b)| {
            let mut k = KEY.as_bytes().to_vec();
            k[i] = k[i].wrapping_add(b.max(1));
            k
        }),
        (0usize..KEY.len()).prop_map(|n| KEY.as_bytes()[..n].to_vec()),
        any::<u8>().prop_map(|b| [KEY.as_bytes(), &[b]].concat()),
    ]) {
        let w = world();
        let refused = w.api.gate(None, Some(&key));
        prop_assert_eq!(refused.map(|r| r.status), Some(401));
        prop_assert!(w.api.gate(None, Some(KEY.as_bytes())).is_none());
    }

    /// A sequence of arbitrary requests against one store.
    #[test]
    fn arbitrary_requests(reqs in prop::collection::vec((method(), path(), query(), body()), 1..8)) {
        let w = world();
        for (m, p, q, b) in &reqs {
            w.call(m, p, q.as_deref(), b);
        }
    }

    /// Writes of arbitrary and mutated bodies to every kind, by PUT, POST and PATCH, then
    /// reads of everything.
    #[test]
    fn writes_of_every_kind(k in 0usize..KINDS.len(), id in prop_oneof![
        prop::sample::select(&["u1", "s1", "r1", "r2", "mtls", "c1", "alice", "new"][..]).prop_map(str::to_owned),
        "[a-zA-Z0-9._-]{1,12}",
    ], b in body(), member in "[a-z_-]{1,10}") {
        let w = world();
        let kind = KINDS[k];
        for (m, path) in [
            (http::Method::PUT, format!("/apisix/admin/{kind}/{id}")),
            (http::Method::PUT, format!("/apisix/admin/{kind}")),
            (http::Method::POST, format!("/apisix/admin/{kind}")),
            (http::Method::PATCH, format!("/apisix/admin/{kind}/{id}")),
            (http::Method::PATCH, format!("/apisix/admin/{kind}/{id}/{member}")),
        ] {
            w.call(&m, &path, None, &b);
        }
        for kind in KINDS {
            let list = w.call(&http::Method::GET, &format!("/apisix/admin/{kind}"), None, b"");
            prop_assert!(list["total"].is_u64());
        }
        w.call(&http::Method::DELETE, &format!("/apisix/admin/{kind}/{id}"), None, b"");
    }
}

/// Bodies a fuzzer rarely builds: deep nesting (over serde_json's recursion limit, and just
/// under it through PATCH's recursive merge), a megabyte of members.
#[test]
fn hostile_bodies_are_bounded() {
    let w = world();
    let deep = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
    let wide = {
        let mut m = Map::new();
        for i in 0..30_000 {
            m.insert(format!("k{i}"), json!(i));
        }
        Value::Object(m).to_string()
    };
    for body in [deep(100_000), deep(127), wide, "[".repeat(1 << 19)] {
        for (m, p) in [
            (http::Method::PUT, "/apisix/admin/upstreams/u9"),
            (http::Method::PATCH, "/apisix/admin/upstreams/u1"),
            (http::Method::PATCH, "/apisix/admin/routes/r1/upstream"),
            (http::Method::POST, "/apisix/admin/routes"),
        ] {
            let reply = w.call(&m, p, None, body.as_bytes());
            assert!(reply.get("error_msg").is_some(), "{m} {p}: {reply}");
        }
    }
    // A long member path.
    let long = format!("/apisix/admin/routes/r1/{}", vec!["a"; 10_000].join("/"));
    let reply = w.call(&http::Method::PATCH, &long, None, b"1");
    assert!(reply.get("error_msg").is_some(), "{reply}");
}
