//! A fake Nacos server speaking the v1 open API Weir reads, under `/nacos/v1/`:
//! `POST auth/login` (query or form `username`/`password` → `accessToken`, `tokenTtl`) and
//! `GET ns/instance/list` (`serviceName`, `namespaceId` default `public`, `groupName`
//! default `DEFAULT_GROUP`, `healthyOnly`, `accessToken`, and the `ak`/`data`/`signature`
//! of signed requests), answering with Nacos's JSON shape. With login required, a request
//! without a valid, unexpired token gets 403; with keys required, a bad signature gets 403.
//! An unknown service is 200 with `"hosts": []`, as Nacos answers.
//!
//! `healthyOnly=true` leaves unhealthy instances out unless the service's protection
//! threshold is reached (then all are returned, `reachProtectionThreshold: true`), as Nacos
//! does; disabled instances are returned as stored, as some Nacos versions do, so clients
//! must skip them. It runs in-process on an ephemeral port of 127.0.0.1; a test changes its
//! data, fails it ([`Fault`], or one service's status), stops and restarts it on the same
//! port, and reads every request it received.

use crate::fake_consul::server::{Handler, Reply, Server};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use crate::fake_consul::server::{Fault, Recorded};

/// The API prefix the fake serves.
pub const PREFIX: &str = "/nacos/v1/";

#[derive(Default)]
struct Service {
    hosts: Vec<Value>,
    /// Answer this status instead (this service only).
    status: Option<u16>,
    protect_threshold: f64,
}

struct Auth {
    username: String,
    password: String,
    ttl: Duration,
    /// Issued tokens and when they expire.
    tokens: HashMap<String, Instant>,
    next: u64,
}

#[derive(Default)]
struct Data {
    /// (namespace, group, name) → service.
    services: BTreeMap<(String, String, String), Service>,
    auth: Option<Auth>,
    keys: Option<(String, String)>,
    logins: u64,
}

/// A running fake Nacos. Dropping it stops it.
pub struct FakeNacos {
    server: Server,
    data: Arc<Mutex<Data>>,
}

fn lock(d: &Mutex<Data>) -> MutexGuard<'_, Data> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}

fn key(ns: &str, group: &str, name: &str) -> (String, String, String) {
    (ns.to_owned(), group.to_owned(), name.to_owned())
}

/// A healthy, enabled instance at `addr` with `weight`, as `ns/instance/list` returns it.
pub fn instance(addr: SocketAddr, weight: f64) -> Value {
    json!({
        "instanceId": format!("{}#{}#DEFAULT", addr.ip(), addr.port()),
        "ip": addr.ip().to_string(), "port": addr.port(), "weight": weight,
        "healthy": true, "enabled": true, "ephemeral": true,
        "clusterName": "DEFAULT", "metadata": {}
    })
}

impl FakeNacos {
    /// Start on an ephemeral port of 127.0.0.1, with no services and no login.
    pub fn start() -> FakeNacos {
        let data = Arc::new(Mutex::new(Data::default()));
        let d = Arc::clone(&data);
        let handler: Handler = Arc::new(move |req| {
            let reply = answer(&d, &req);
            Box::pin(async move { reply })
        });
        FakeNacos {
            server: Server::start(handler),
            data,
        }
    }

    /// `http://127.0.0.1:<port>` (without the prefix).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `http://<user>:<pass>@127.0.0.1:<port>`.
    pub fn url_with_credentials(&self, user: &str, pass: &str) -> String {
        format!("http://{user}:{pass}@{}", self.server.addr())
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Set the instances of `name` in `namespace`/`group` (a service with no instances is
    /// still known: `"hosts": []`).
    pub fn set_service(&self, namespace: &str, group: &str, name: &str, hosts: Vec<Value>) {
        let mut d = lock(&self.data);
        d.services
            .entry(key(namespace, group, name))
            .or_default()
            .hosts = hosts;
    }

    /// Set the instances of `name` in `public`/`DEFAULT_GROUP`: `(address, weight)` pairs.
    pub fn set_nodes(&self, name: &str, nodes: &[(SocketAddr, f64)]) {
        let hosts = nodes.iter().map(|(a, w)| instance(*a, *w)).collect();
        self.set_service("public", "DEFAULT_GROUP", name, hosts);
    }

    pub fn remove_service(&self, namespace: &str, group: &str, name: &str) {
        lock(&self.data)
            .services
            .remove(&key(namespace, group, name));
    }

    /// Answer `status` for this service only (`None`: answer normally again).
    pub fn set_service_status(&self, namespace: &str, group: &str, name: &str, s: Option<u16>) {
        let mut d = lock(&self.data);
        d.services
            .entry(key(namespace, group, name))
            .or_default()
            .status = s;
    }

    /// Nacos's protection threshold of a service (0 to 1).
    pub fn set_protect_threshold(&self, namespace: &str, group: &str, name: &str, t: f64) {
        let mut d = lock(&self.data);
        d.services
            .entry(key(namespace, group, name))
            .or_default()
            .protect_threshold = t;
    }

    /// Require login as `username`/`password`; tokens live `ttl`.
    pub fn require_login(&self, username: &str, password: &str, ttl: Duration) {
        lock(&self.data).auth = Some(Auth {
            username: username.to_owned(),
            password: password.to_owned(),
            ttl,
            tokens: HashMap::new(),
            next: 0,
        });
    }

    /// Forget every issued token (what a restarted Nacos does).
    pub fn revoke_tokens(&self) {
        if let Some(a) = &mut lock(&self.data).auth {
            a.tokens.clear();
        }
    }

    /// Successful logins so far.
    pub fn logins(&self) -> u64 {
        lock(&self.data).logins
    }

    /// Require requests signed with `access_key`/`secret_key`.
    pub fn require_signature(&self, access_key: &str, secret_key: &str) {
        lock(&self.data).keys = Some((access_key.to_owned(), secret_key.to_owned()));
    }

    pub fn set_fault(&self, f: Fault) {
        self.server.set_fault(f);
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    /// Instance-list requests received so far, oldest first.
    pub fn list_requests(&self) -> Vec<Recorded> {
        let path = format!("{PREFIX}ns/instance/list");
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

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

/// `base64(HMAC-SHA1(secret_key, data))`.
pub fn signature(secret_key: &str, data: &str) -> String {
    let key = PKey::hmac(secret_key.as_bytes()).expect("hmac key");
    let mut s = Signer::new(MessageDigest::sha1(), &key).expect("signer");
    s.update(data.as_bytes()).expect("sign");
    openssl::base64::encode_block(&s.sign_to_vec().expect("sign"))
}

/// A parameter from the query, else from a form body.
fn param(req: &Recorded, name: &str) -> Option<String> {
    if let Some(v) = req.param(name) {
        return Some(v.to_owned());
    }
    let body = String::from_utf8_lossy(&req.body);
    body.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (crate::fake_consul::server::decode(k) == name)
            .then(|| crate::fake_consul::server::decode(v))
    })
}

fn login(d: &mut Data, req: &Recorded) -> Reply {
    if req.method != "POST" {
        return Reply::text(405, "Request method 'GET' not supported");
    }
    let Some(a) = &mut d.auth else {
        // Nacos without auth still answers a login, with a token nobody checks.
        return Reply::json(200, &json!({"accessToken": "", "tokenTtl": 18000}));
    };
    let (u, p) = (param(req, "username"), param(req, "password"));
    if u.as_deref() != Some(a.username.as_str()) || p.as_deref() != Some(a.password.as_str()) {
        return Reply::text(403, "unknown user!");
    }
    a.next += 1;
    let token = format!("token-{}-{}", a.next, a.username);
    a.tokens.insert(token.clone(), Instant::now() + a.ttl);
    d.logins += 1;
    Reply::json(
        200,
        &json!({"accessToken": token, "tokenTtl": a.ttl.as_secs(), "globalAdmin": true,
                "username": a.username}),
    )
}

/// Why a request is refused, if it is: its token (login required) or its signature.
fn refused(d: &Data, req: &Recorded, group: &str, name: &str) -> Option<Reply> {
    if let Some(a) = &d.auth {
        let token = req
            .param("accessToken")
            .or_else(|| req.header("accesstoken"));
        match token.and_then(|t| a.tokens.get(t)) {
            None if token.is_none() => return Some(Reply::text(403, "user not found!")),
            None => return Some(Reply::text(403, "token invalid!")),
            Some(end) if Instant::now() >= *end => return Some(Reply::text(403, "token expired!")),
            Some(_) => {}
        }
    }
    if let Some((ak, sk)) = &d.keys {
        let data = req.param("data").unwrap_or("");
        let ok = req.param("ak") == Some(ak.as_str())
            && data.ends_with(&format!("@@{group}@@{name}"))
            && req.param("signature") == Some(signature(sk, data).as_str());
        if !ok {
            return Some(Reply::text(403, "signature mismatch"));
        }
    }
    None
}

fn instance_list(d: &Data, req: &Recorded) -> Reply {
    if req.method != "GET" {
        return Reply::text(405, "method not allowed");
    }
    let Some(name) = req.param("serviceName").filter(|n| !n.is_empty()) else {
        return Reply::text(400, "Param 'serviceName' is required.");
    };
    let ns = req.param("namespaceId").unwrap_or("public");
    let group = req.param("groupName").unwrap_or("DEFAULT_GROUP");
    if let Some(r) = refused(d, req, group, name) {
        return r;
    }
    let svc = d.services.get(&key(ns, group, name));
    if let Some(s) = svc.and_then(|s| s.status) {
        return Reply::text(s, "caused: injected failure;");
    }
    let all: Vec<Value> = svc.map(|s| s.hosts.clone()).unwrap_or_default();
    let threshold = svc.map_or(0.0, |s| s.protect_threshold);
    let healthy = all.iter().filter(|h| h["healthy"] != false).count();
    let protect = !all.is_empty() && (healthy as f64 / all.len() as f64) <= threshold;
    let healthy_only = req.param("healthyOnly") == Some("true");
    let full = format!("{group}@@{name}");
    let hosts: Vec<Value> = all
        .into_iter()
        .filter(|h| !healthy_only || protect || h["healthy"] != false)
        .map(|mut h| {
            if h.is_object() && h.get("serviceName").is_none() {
                h["serviceName"] = json!(full);
            }
            h
        })
        .collect();
    Reply::json(
        200,
        &json!({"name": full, "groupName": group, "clusters": "", "cacheMillis": 10000,
                "hosts": hosts, "lastRefTime": 1700000000000u64, "checksum": "",
                "allIPs": false, "reachProtectionThreshold": protect, "valid": true}),
    )
}

fn answer(data: &Mutex<Data>, req: &Recorded) -> Reply {
    let mut d = lock(data);
    match req.path.strip_prefix(PREFIX) {
        Some("auth/login") => login(&mut d, req),
        Some("ns/instance/list") => instance_list(&d, req),
        _ => Reply::text(404, "Not Found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(query: &[(&str, &str)]) -> Recorded {
        Recorded {
            method: "GET".into(),
            path: format!("{PREFIX}ns/instance/list"),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Recorded::default()
        }
    }

    #[test]
    fn protection_threshold_returns_unhealthy_instances() {
        let d = Mutex::new(Data::default());
        let a: SocketAddr = ([127, 0, 0, 1], 1).into();
        let mut sick = instance(a, 1.0);
        sick["healthy"] = json!(false);
        lock(&d).services.insert(
            key("public", "DEFAULT_GROUP", "s"),
            Service {
                hosts: vec![instance(a, 1.0), sick],
                ..Service::default()
            },
        );
        let q = [("serviceName", "s"), ("healthyOnly", "true")];
        let hosts = |d: &Mutex<Data>| {
            let r = answer(d, &get(&q));
            let v: Value = serde_json::from_slice(&r.body).expect("json");
            v["hosts"].as_array().map(Vec::len)
        };
        assert_eq!(hosts(&d), Some(1));
        if let Some(s) = lock(&d)
            .services
            .get_mut(&key("public", "DEFAULT_GROUP", "s"))
        {
            s.protect_threshold = 0.6;
        }
        assert_eq!(hosts(&d), Some(2));
    }

    #[test]
    fn login_then_token() {
        let d = Mutex::new(Data::default());
        lock(&d).auth = Some(Auth {
            username: "u".into(),
            password: "p w".into(),
            ttl: Duration::from_secs(60),
            tokens: HashMap::new(),
            next: 0,
        });
        assert_eq!(answer(&d, &get(&[("serviceName", "s")])).status, 403);
        let mut login = get(&[("username", "u"), ("password", "p w")]);
        login.method = "POST".into();
        login.path = format!("{PREFIX}auth/login");
        let r = answer(&d, &login);
        assert_eq!(r.status, 200);
        let v: Value = serde_json::from_slice(&r.body).expect("json");
        let token = v["accessToken"].as_str().expect("token").to_owned();
        let ok = answer(&d, &get(&[("serviceName", "s"), ("accessToken", &token)]));
        assert_eq!(ok.status, 200);
    }
}
