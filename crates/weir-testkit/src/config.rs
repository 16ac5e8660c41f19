//! Typed builders for test configurations, instead of YAML text escaped inside `format!`:
//!
//! ```
//! use weir_testkit::config::{Conf, Route, Upstream};
//! # let (a, b): (std::net::SocketAddr, std::net::SocketAddr) =
//! #     ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
//! let conf = Conf::new()
//!     .route(Route::new("r1", "/*").upstream(Upstream::nodes(&[a, b]).lb("least_conn")))
//!     .route(Route::new("r2", "/api/*").upstream_id("u"))
//!     .upstream(Upstream::weighted(&[(a, 3), (b, 1)]).id("u").retries(1));
//! assert_eq!(conf.to_value()["routes"][0]["upstream"]["type"], "least_conn");
//! ```
//!
//! Every builder produces the document an operator would write (the same keys, in the same
//! order), as a [`serde_json::Value`] that `weir_config::parse_document` validates. The typed
//! methods cover what the end-to-end tests use; [`set`](Upstream::set) (on every builder)
//! adds any other field, and [`merge`](Upstream::merge) several at once. A configuration is
//! handed to [`TestProxy`](crate::TestProxy) as a [`Conf`] or as YAML text (both are a
//! [`Document`]); [`Conf::to_yaml`] writes it for the `weir` binary.

use crate::grpc::GrpcBackend;
use crate::pki::{Identity, TestCa};
use crate::{Backend, RefusedPort};
use serde_json::{json, Map, Value};
use std::fmt;
use std::net::SocketAddr;

/// Something with an address on 127.0.0.1 that can be an upstream node: a [`Backend`], a
/// [`GrpcBackend`], a [`RefusedPort`] (a dead node) or a plain [`SocketAddr`].
pub trait Addr {
    fn socket_addr(&self) -> SocketAddr;
}

impl Addr for SocketAddr {
    fn socket_addr(&self) -> SocketAddr {
        *self
    }
}

impl Addr for Backend {
    fn socket_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Addr for GrpcBackend {
    fn socket_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Addr for RefusedPort {
    fn socket_addr(&self) -> SocketAddr {
        self.addr()
    }
}

impl<T: Addr + ?Sized> Addr for &T {
    fn socket_addr(&self) -> SocketAddr {
        (**self).socket_addr()
    }
}

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| json!(s)).collect())
}

fn timeout(connect: f64, send: f64, read: f64) -> Value {
    json!({"connect": number(connect), "send": number(send), "read": number(read)})
}

/// A whole number as an integer (`1`, not `1.0`), as a hand-written document has it.
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        json!(x as i64)
    } else {
        json!(x)
    }
}

/// Merge the fields of `fields` (an object) into `into`, replacing same-named ones.
fn merge_into(into: &mut Map<String, Value>, fields: Value, what: &str) {
    match fields {
        Value::Object(m) => into.extend(m),
        other => panic!("{what}.merge takes an object, not {other}"),
    }
}

/// The methods every builder has: [`set`](Upstream::set) one field, [`merge`](Upstream::merge)
/// an object's fields, [`plugin`](Route::plugin) into `plugins`.
macro_rules! fields {
    ($ty:ident) => {
        impl $ty {
            /// Set `key` to `value` (any field, also one without a typed method).
            pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
                self.0.insert(key.to_owned(), value.into());
                self
            }

            /// Set every field of `fields` (an object), replacing same-named ones.
            pub fn merge(mut self, fields: Value) -> Self {
                merge_into(&mut self.0, fields, stringify!($ty));
                self
            }

            /// The document of this object.
            pub fn to_value(&self) -> Value {
                Value::Object(self.0.clone())
            }
        }

        impl From<$ty> for Value {
            fn from(v: $ty) -> Value {
                Value::Object(v.0)
            }
        }
    };
}

macro_rules! plugins {
    ($ty:ident) => {
        impl $ty {
            /// Enable plugin `name` with `conf` (`json!({})` for its defaults).
            pub fn plugin(mut self, name: &str, conf: Value) -> Self {
                let plugins = self
                    .0
                    .entry("plugins")
                    .or_insert_with(|| Value::Object(Map::new()));
                match plugins {
                    Value::Object(m) => {
                        m.insert(name.to_owned(), conf);
                    }
                    other => panic!("plugins is not an object: {other}"),
                }
                self
            }
        }
    };
}

/// An upstream node in list form: `{host, port, weight, priority}`.
#[derive(Debug, Clone)]
pub struct Node(Map<String, Value>);

impl Node {
    /// `{host, port, weight: 1}`: `host` may be a name (`localhost`, a DNS name).
    pub fn new(host: &str, port: u16) -> Node {
        let mut m = Map::new();
        m.insert("host".into(), json!(host));
        m.insert("port".into(), json!(port));
        m.insert("weight".into(), json!(1));
        Node(m)
    }

    /// The node at `addr`'s IP and port, weight 1.
    pub fn of(addr: impl Addr) -> Node {
        let a = addr.socket_addr();
        Node::new(&a.ip().to_string(), a.port())
    }

    pub fn weight(self, weight: u32) -> Node {
        self.set("weight", weight)
    }

    pub fn priority(self, priority: i64) -> Node {
        self.set("priority", priority)
    }
}
fields!(Node);

/// An upstream: inline in a route or service, or a top-level one with an [`id`](Self::id).
#[derive(Debug, Clone, Default)]
pub struct Upstream(Map<String, Value>);

impl Upstream {
    /// An upstream with no fields yet (set `nodes`, or `service_name` and `discovery_type`).
    pub fn new() -> Upstream {
        Upstream::default()
    }

    /// `nodes` in map form, `{"ip:port": 1, ...}`, in the order given.
    pub fn nodes<A: Addr>(nodes: &[A]) -> Upstream {
        let pairs: Vec<(&A, u32)> = nodes.iter().map(|n| (n, 1)).collect();
        Upstream::weighted(&pairs)
    }

    /// `nodes` in map form with weights, `{"ip:port": weight, ...}`, in the order given.
    pub fn weighted<A: Addr>(nodes: &[(A, u32)]) -> Upstream {
        let map: Map<String, Value> = nodes
            .iter()
            .map(|(n, w)| (n.socket_addr().to_string(), json!(w)))
            .collect();
        Upstream::new().set("nodes", Value::Object(map))
    }

    /// `nodes` in list form (host names, priorities), in the order given.
    pub fn list(nodes: impl IntoIterator<Item = Node>) -> Upstream {
        let list: Vec<Value> = nodes.into_iter().map(Value::from).collect();
        Upstream::new().set("nodes", Value::Array(list))
    }

    /// Nodes from a registry: `{service_name, discovery_type}`.
    pub fn discovered(discovery_type: &str, service_name: &str) -> Upstream {
        Upstream::new()
            .set("service_name", service_name)
            .set("discovery_type", discovery_type)
    }

    /// The `id` of a top-level upstream (see [`Conf::upstream`]). It is written first.
    pub fn id(self, id: &str) -> Upstream {
        let mut m = Map::new();
        m.insert("id".into(), json!(id));
        m.extend(self.0.into_iter().filter(|(k, _)| k != "id"));
        Upstream(m)
    }

    /// The load-balancing `type`: `roundrobin`, `chash`, `least_conn`, `ewma`.
    pub fn lb(self, kind: &str) -> Upstream {
        self.set("type", kind)
    }

    /// `type: chash`, hashing `key` of `hash_on` (`vars`, `header`, `cookie`, `consumer`,
    /// `vars_combinations`).
    pub fn chash(self, hash_on: &str, key: &str) -> Upstream {
        self.lb("chash").hash_on(hash_on).key(key)
    }

    pub fn hash_on(self, hash_on: &str) -> Upstream {
        self.set("hash_on", hash_on)
    }

    pub fn key(self, key: &str) -> Upstream {
        self.set("key", key)
    }

    /// `http`, `https`, `grpc`, `grpcs`.
    pub fn scheme(self, scheme: &str) -> Upstream {
        self.set("scheme", scheme)
    }

    /// `pass`, `node` (for `rewrite`, see [`rewrite_host`](Self::rewrite_host)).
    pub fn pass_host(self, mode: &str) -> Upstream {
        self.set("pass_host", mode)
    }

    /// `pass_host: rewrite` with `upstream_host: host`.
    pub fn rewrite_host(self, host: &str) -> Upstream {
        self.pass_host("rewrite").set("upstream_host", host)
    }

    pub fn retries(self, retries: u32) -> Upstream {
        self.set("retries", retries)
    }

    /// `retry_timeout` in seconds.
    pub fn retry_timeout(self, seconds: f64) -> Upstream {
        self.set("retry_timeout", number(seconds))
    }

    /// `timeout: {connect, send, read}`, in seconds.
    pub fn timeout(self, connect: f64, send: f64, read: f64) -> Upstream {
        self.set("timeout", timeout(connect, send, read))
    }

    /// `keepalive_pool` (`size`, `requests`, `idle_timeout`): `json!({})` for the defaults.
    pub fn keepalive_pool(self, pool: Value) -> Upstream {
        self.set("keepalive_pool", pool)
    }

    /// The whole `checks` object.
    pub fn checks(self, checks: Value) -> Upstream {
        self.set("checks", checks)
    }

    /// `checks.active`, next to any `checks.passive`.
    pub fn active_check(self, active: Value) -> Upstream {
        self.check("active", active)
    }

    /// `checks.passive`, next to any `checks.active`.
    pub fn passive_check(self, passive: Value) -> Upstream {
        self.check("passive", passive)
    }

    fn check(mut self, kind: &str, conf: Value) -> Upstream {
        let checks = self
            .0
            .entry("checks")
            .or_insert_with(|| Value::Object(Map::new()));
        match checks {
            Value::Object(m) => {
                m.insert(kind.to_owned(), conf);
            }
            other => panic!("checks is not an object: {other}"),
        }
        self
    }

    pub fn tls_verify(self, verify: bool) -> Upstream {
        self.set("tls_verify", verify)
    }

    /// `ca_certificates`: ids of top-level CA certificates to verify the upstream against.
    pub fn ca_certificates(self, ids: &[&str]) -> Upstream {
        self.set("ca_certificates", strings(ids))
    }

    /// `client_certificate`: the id of the certificate presented to the upstream (mTLS).
    pub fn client_certificate(self, id: &str) -> Upstream {
        self.set("client_certificate", id)
    }

    /// `discovery_args` of a discovered upstream.
    pub fn discovery_args(self, args: Value) -> Upstream {
        self.set("discovery_args", args)
    }
}
fields!(Upstream);

/// A route: `id` and `uri` (or `uris`), what it matches, and where it goes.
#[derive(Debug, Clone)]
pub struct Route(Map<String, Value>);

impl Route {
    /// `{id, uri}`.
    pub fn new(id: &str, uri: &str) -> Route {
        let mut m = Map::new();
        m.insert("id".into(), json!(id));
        m.insert("uri".into(), json!(uri));
        Route(m)
    }

    /// `{id, uris}`: several URI patterns.
    pub fn uris(id: &str, uris: &[&str]) -> Route {
        let mut m = Map::new();
        m.insert("id".into(), json!(id));
        m.insert("uris".into(), strings(uris));
        Route(m)
    }

    /// `host`: one host pattern (`*.example.com` too).
    pub fn host(self, host: &str) -> Route {
        self.set("host", host)
    }

    pub fn hosts(self, hosts: &[&str]) -> Route {
        self.set("hosts", strings(hosts))
    }

    pub fn methods(self, methods: &[&str]) -> Route {
        self.set("methods", strings(methods))
    }

    pub fn priority(self, priority: i64) -> Route {
        self.set("priority", priority)
    }

    /// An inline upstream.
    pub fn upstream(self, upstream: Upstream) -> Route {
        self.set("upstream", upstream)
    }

    pub fn upstream_id(self, id: &str) -> Route {
        self.set("upstream_id", id)
    }

    pub fn service_id(self, id: &str) -> Route {
        self.set("service_id", id)
    }

    /// The route's `timeout: {connect, send, read}` (in seconds), replacing the upstream's.
    pub fn timeout(self, connect: f64, send: f64, read: f64) -> Route {
        self.set("timeout", timeout(connect, send, read))
    }
}
fields!(Route);
plugins!(Route);

/// A service: shared upstream and plugins of the routes naming it.
#[derive(Debug, Clone)]
pub struct Service(Map<String, Value>);

impl Service {
    /// `{id}`.
    pub fn new(id: &str) -> Service {
        let mut m = Map::new();
        m.insert("id".into(), json!(id));
        Service(m)
    }

    /// An inline upstream.
    pub fn upstream(self, upstream: Upstream) -> Service {
        self.set("upstream", upstream)
    }

    pub fn upstream_id(self, id: &str) -> Service {
        self.set("upstream_id", id)
    }
}
fields!(Service);
plugins!(Service);

/// A consumer (`username` and its plugins' credentials).
#[derive(Debug, Clone)]
pub struct Consumer(Map<String, Value>);

impl Consumer {
    /// `{username}`.
    pub fn new(username: &str) -> Consumer {
        let mut m = Map::new();
        m.insert("username".into(), json!(username));
        Consumer(m)
    }

    /// `{username, plugins: {key-auth: {key}}}`.
    pub fn key_auth(username: &str, key: &str) -> Consumer {
        Consumer::new(username).plugin("key-auth", json!({ "key": key }))
    }
}
fields!(Consumer);
plugins!(Consumer);

/// A whole configuration document.
#[derive(Debug, Clone, Default)]
pub struct Conf(Map<String, Value>);

impl Conf {
    pub fn new() -> Conf {
        Conf::default()
    }

    fn push(mut self, kind: &str, item: Value) -> Conf {
        let list = self
            .0
            .entry(kind)
            .or_insert_with(|| Value::Array(Vec::new()));
        match list {
            Value::Array(items) => items.push(item),
            other => panic!("{kind} is not a list: {other}"),
        }
        self
    }

    /// Add a route to `routes`.
    pub fn route(self, route: Route) -> Conf {
        self.push("routes", route.into())
    }

    /// Add a service to `services`.
    pub fn service(self, service: Service) -> Conf {
        self.push("services", service.into())
    }

    /// Add an upstream to `upstreams`; it needs an [`id`](Upstream::id).
    pub fn upstream(self, upstream: Upstream) -> Conf {
        assert!(
            upstream.0.contains_key("id"),
            "a top-level upstream needs an id: {:?}",
            upstream.0
        );
        self.push("upstreams", upstream.into())
    }

    /// Add a consumer to `consumers`.
    pub fn consumer(self, consumer: Consumer) -> Conf {
        self.push("consumers", consumer.into())
    }

    /// Add `who`'s certificate and key to `certificates` as `id`.
    pub fn certificate(self, id: &str, who: &Identity) -> Conf {
        self.push(
            "certificates",
            json!({"id": id, "cert": who.cert_pem(), "key": who.key_pem()}),
        )
    }

    /// Add `ca`'s certificate to `ca_certificates` as `id`.
    pub fn ca_certificate(self, id: &str, ca: &TestCa) -> Conf {
        self.push("ca_certificates", json!({"id": id, "cert": ca.cert_pem()}))
    }

    /// The control API (`control.listen`; the [`TestProxy`](crate::TestProxy) gives it an
    /// ephemeral port, see `TestProxy::control_get`).
    pub fn control(self) -> Conf {
        self.set("control", json!({"listen": "127.0.0.1:0"}))
    }

    /// `discovery.<kind>`: a registry's settings (`dns`, `consul`, `nacos`, `kubernetes`).
    pub fn discovery(mut self, kind: &str, settings: Value) -> Conf {
        let d = self
            .0
            .entry("discovery")
            .or_insert_with(|| Value::Object(Map::new()));
        match d {
            Value::Object(m) => {
                m.insert(kind.to_owned(), settings);
            }
            other => panic!("discovery is not an object: {other}"),
        }
        self
    }

    /// A `server.tls_listen` listener serving the certificate `certificate` (the
    /// [`TestProxy`](crate::TestProxy) gives it an ephemeral port, see `TestProxy::tls`).
    pub fn tls_listen(mut self, certificate: &str) -> Conf {
        let server = self
            .0
            .entry("server")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(server) = server else {
            panic!("server is not an object: {server}");
        };
        let list = server
            .entry("tls_listen")
            .or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(list) = list else {
            panic!("server.tls_listen is not a list: {list}");
        };
        list.push(json!({"addr": "127.0.0.1:0", "certificate": certificate}));
        self
    }

    /// Set the top-level `key` to `value` (`routes: []`, `server`, `admin`, ...).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Conf {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    /// The document.
    pub fn to_value(&self) -> Value {
        Value::Object(self.0.clone())
    }

    /// The document as YAML (a configuration file for the `weir` binary).
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(&self.to_value()).expect("a JSON value is valid YAML")
    }
}

impl From<Conf> for Value {
    fn from(c: Conf) -> Value {
        Value::Object(c.0)
    }
}

/// YAML.
impl fmt::Display for Conf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_yaml())
    }
}

/// A configuration handed to the [`TestProxy`](crate::TestProxy): YAML text (for tests of
/// YAML itself, and hand-written documents), or a built one ([`Conf`], a `serde_json::Value`).
///
/// YAML text converts from `&str` and `&String` only, not from `String`: a `&format!(..)`
/// argument is then a borrow clippy accepts (`needless_borrows_for_generic_args`).
#[derive(Debug, Clone)]
pub enum Document {
    Yaml(String),
    Value(Value),
}

impl Document {
    /// Validate the document with the names of `ext`.
    pub fn parse(
        &self,
        ext: &weir_config::Extensions,
    ) -> Result<weir_config::Loaded, weir_config::ConfigErrors> {
        match self {
            Document::Yaml(y) => weir_config::parse_yaml_ext(y, ext),
            Document::Value(v) => weir_config::parse_document_ext(v, ext),
        }
    }

    /// [`parse`](Self::parse), panicking with the errors and the document when it is invalid.
    pub fn load(&self, ext: &weir_config::Extensions) -> weir_config::Loaded {
        self.parse(ext)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}\nin:\n{self}"))
    }
}

impl fmt::Display for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Document::Yaml(y) => f.write_str(y),
            Document::Value(v) => match serde_yaml_ng::to_string(v) {
                Ok(y) => f.write_str(&y),
                Err(_) => write!(f, "{v}"),
            },
        }
    }
}

impl From<&str> for Document {
    fn from(y: &str) -> Document {
        Document::Yaml(y.to_owned())
    }
}

impl From<&String> for Document {
    fn from(y: &String) -> Document {
        Document::Yaml(y.clone())
    }
}

impl From<Conf> for Document {
    fn from(c: Conf) -> Document {
        Document::Value(c.into())
    }
}

impl From<&Conf> for Document {
    fn from(c: &Conf) -> Document {
        Document::Value(c.to_value())
    }
}

impl From<Value> for Document {
    fn from(v: Value) -> Document {
        Document::Value(v)
    }
}

impl From<&Value> for Document {
    fn from(v: &Value) -> Document {
        Document::Value(v.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// What the builders write is what the equivalent YAML says.
    #[test]
    fn builders_write_the_documents_of_their_yaml() {
        let built = Conf::new()
            .control()
            .route(
                Route::uris("a", &["/a/*", "/b/*"])
                    .hosts(&["x.test"])
                    .methods(&["POST"])
                    .priority(2)
                    .timeout(1.0, 1.0, 0.2)
                    .plugin("key-auth", json!({}))
                    .upstream(
                        Upstream::nodes(&[addr(1), addr(2)])
                            .chash("header", "X-User")
                            .keepalive_pool(json!({"requests": 3}))
                            .active_check(json!({"type": "tcp"}))
                            .passive_check(json!({})),
                    ),
            )
            .route(Route::new("b", "/*").service_id("s"))
            .service(Service::new("s").upstream_id("u"))
            .upstream(
                Upstream::list([Node::new("localhost", 3).priority(1), Node::of(addr(4))])
                    .rewrite_host("api.internal")
                    .retries(0)
                    .retry_timeout(0.5)
                    .id("u"),
            )
            .consumer(Consumer::key_auth("alice", "k"))
            .discovery("dns", json!({"servers": ["127.0.0.1:53"]}))
            .tls_listen("edge");
        let yaml = "
control: {listen: \"127.0.0.1:0\"}
routes:
  - id: a
    uris: [/a/*, /b/*]
    hosts: [x.test]
    methods: [POST]
    priority: 2
    timeout: {connect: 1, send: 1, read: 0.2}
    plugins: {key-auth: {}}
    upstream:
      nodes: {\"127.0.0.1:1\": 1, \"127.0.0.1:2\": 1}
      type: chash
      hash_on: header
      key: X-User
      keepalive_pool: {requests: 3}
      checks: {active: {type: tcp}, passive: {}}
  - {id: b, uri: /*, service_id: s}
services: [{id: s, upstream_id: u}]
upstreams:
  - id: u
    nodes:
      - {host: localhost, port: 3, weight: 1, priority: 1}
      - {host: 127.0.0.1, port: 4, weight: 1}
    pass_host: rewrite
    upstream_host: api.internal
    retries: 0
    retry_timeout: 0.5
consumers: [{username: alice, plugins: {key-auth: {key: k}}}]
discovery: {dns: {servers: [\"127.0.0.1:53\"]}}
server: {tls_listen: [{addr: \"127.0.0.1:0\", certificate: edge}]}
";
        let want = weir_config::yaml_to_value(yaml).expect("yaml");
        assert_eq!(built.to_value(), want);
        // And back: the YAML written is the same document.
        assert_eq!(
            weir_config::yaml_to_value(&built.to_yaml()).expect("yaml"),
            want
        );
    }

    #[test]
    fn built_documents_validate() {
        let conf = Conf::new()
            .route(Route::new("r", "/*").upstream_id("u"))
            .upstream(Upstream::weighted(&[(addr(1), 3), (addr(2), 0)]).id("u"));
        let ext = weir_config::Extensions::new();
        let loaded = Document::from(&conf).load(&ext);
        assert_eq!(loaded.config.resources.upstreams.len(), 1);
        let err = Document::from(Conf::new().route(Route::new("r", "/*").upstream_id("nope")))
            .parse(&ext);
        assert!(err.is_err(), "an unknown upstream_id is refused");
    }

    #[test]
    fn set_and_merge_add_any_field() {
        let u = Upstream::nodes(&[addr(1)])
            .set("retry_timeout", 1)
            .merge(json!({"type": "ewma", "scheme": "grpc"}));
        assert_eq!(
            u.to_value(),
            json!({"nodes": {"127.0.0.1:1": 1}, "retry_timeout": 1, "type": "ewma", "scheme": "grpc"})
        );
    }
}
