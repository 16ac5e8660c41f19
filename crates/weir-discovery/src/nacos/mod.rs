//! The Nacos registry: the instances of every service the configuration references, polled
//! from Nacos's v1 open API.
//!
//! Which services: every distinct (namespace, group, name, gRPC or not) an upstream names
//! (`service_name` plus `discovery_args` `namespace_id`, default `public`, and `group_name`,
//! default `DEFAULT_GROUP`), so the same name in another namespace or group is another
//! service. All are fetched at start-up and every `fetch_interval`; a service that becomes
//! referenced by a configuration change is fetched at once.
//!
//! Each fetch cycle starts at a random host and tries the hosts in turn, stopping at the
//! first where at least one service was fetched. With credentials it first logs in
//! (`POST <base>auth/login?username=&password=`) and reuses the token while it lives; then
//! `GET <base>ns/instance/list?healthyOnly=true&serviceName=&namespaceId=&groupName=`
//! (`&accessToken=` when logged in, `&ak=&data=&signature=` when both keys are set), with
//! `Accept: application/json`.
//!
//! Invariants: a failed answer (connection error, timeout, non-200, malformed body) changes
//! nothing: a service whose fetch failed keeps its last good nodes and only a successful
//! answer can empty it (`"hosts": []`). Disabled, unhealthy and invalid instances are left
//! out. Passwords, tokens and the secret key never appear in logs, errors or the dump.

mod client;
mod parse;

pub use parse::{Target, DEFAULT_GROUP, DEFAULT_NAMESPACE};

use crate::{Catalog, Feed, Node, Registry, ServiceRef, MASK};
use async_trait::async_trait;
use client::{Client, Failure};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// One entry of `discovery.nacos.host`.
#[derive(Clone)]
pub struct NacosHost {
    /// `http(s)://host:port`, without credentials.
    pub base_url: String,
    /// `user:pass@` of the URL: enables login. The password is a secret.
    pub credentials: Option<(String, String)>,
}

impl NacosHost {
    /// The URL as shown: `http(s)://user:******@host:port` with credentials.
    pub fn shown(&self) -> String {
        match (&self.credentials, self.base_url.split_once("://")) {
            (Some((user, _)), Some((scheme, rest))) => format!("{scheme}://{user}:{MASK}@{rest}"),
            _ => self.base_url.clone(),
        }
    }
}

impl std::fmt::Debug for NacosHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

/// `discovery.nacos`.
#[derive(Clone)]
pub struct NacosConfig {
    pub hosts: Vec<NacosHost>,
    /// Starts and ends with `/` (default `/nacos/v1/`).
    pub prefix: String,
    pub fetch_interval: Duration,
    /// For instances without a weight.
    pub weight: u32,
    pub connect_timeout: Duration,
    pub send_timeout: Duration,
    pub read_timeout: Duration,
    /// Both non-empty: requests are signed. `secret_key` is a secret.
    pub access_key: String,
    pub secret_key: String,
}

/// A secret as shown: [`MASK`] when set, empty when not.
fn mask(secret: &str) -> &'static str {
    if secret.is_empty() {
        ""
    } else {
        MASK
    }
}

impl std::fmt::Debug for NacosConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NacosConfig")
            .field("hosts", &self.hosts)
            .field("prefix", &self.prefix)
            .field("fetch_interval", &self.fetch_interval)
            .field("weight", &self.weight)
            .field("connect_timeout", &self.connect_timeout)
            .field("send_timeout", &self.send_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("access_key", &self.access_key)
            .field("secret_key", &mask(&self.secret_key))
            .finish()
    }
}

/// The Nacos registry. Build it with [`Nacos::new`], register it under `nacos`.
#[derive(Debug)]
pub struct Nacos {
    cfg: NacosConfig,
}

/// What fetching some services from one host gave: per service, its nodes or why not.
type Outcomes = Vec<(Target, Result<Vec<Node>, String>)>;

impl Nacos {
    pub fn new(cfg: NacosConfig) -> Nacos {
        Nacos { cfg }
    }

    pub fn config(&self) -> &NacosConfig {
        &self.cfg
    }

    /// Fetch `targets`: hosts in turn from a random one, until a host where at least one
    /// service was fetched. `Err` when no host was.
    async fn fetch(&self, client: &mut Client, targets: &[Target]) -> Result<Outcomes, String> {
        let n = self.cfg.hosts.len();
        if n == 0 {
            return Err("no hosts configured".into());
        }
        let start = fastrand::usize(..n);
        let mut last = String::new();
        for i in (0..n).map(|k| (start + k) % n) {
            let out = self.fetch_from(client, i, targets).await;
            if out.iter().any(|(_, r)| r.is_ok()) {
                return Ok(out);
            }
            if let Some((_, Err(e))) = out.into_iter().next() {
                last = e;
            }
        }
        Err(last)
    }

    /// Fetch `targets` from host `i`. A host failure ends the host's turn: the services not
    /// asked yet fail with it.
    async fn fetch_from(&self, client: &mut Client, i: usize, targets: &[Target]) -> Outcomes {
        let mut out = Vec::with_capacity(targets.len());
        let mut down: Option<String> = None;
        for t in targets {
            if let Some(e) = &down {
                out.push((t.clone(), Err(e.clone())));
                continue;
            }
            match client.instances(&self.cfg, i, t).await {
                Ok(nodes) => out.push((t.clone(), Ok(nodes))),
                Err(Failure::Service(e)) => out.push((t.clone(), Err(e))),
                Err(Failure::Host(e)) => {
                    out.push((t.clone(), Err(e.clone())));
                    down = Some(e);
                }
            }
        }
        out
    }

    /// A full cycle: fetch every target and publish them all (the others are dropped); a
    /// failed service keeps its last good nodes.
    async fn cycle(&self, client: &mut Client, feed: &Feed, targets: &[Target]) {
        if targets.is_empty() {
            return;
        }
        log::debug!("discovery nacos: fetching {} services", targets.len());
        let out = match self.fetch(client, targets).await {
            Ok(out) => out,
            Err(e) => return feed.failed(e),
        };
        let previous = feed.catalog();
        let mut services = HashMap::with_capacity(out.len());
        let mut errors = Vec::new();
        for (t, r) in out {
            let key = t.key();
            match r {
                Ok(nodes) => {
                    services.insert(key, nodes);
                }
                Err(e) => {
                    if let Some(old) = previous.get(&key) {
                        services.insert(key, old.to_vec());
                    }
                    errors.push(e);
                }
            }
        }
        if feed.publish(services) {
            log::info!("discovery nacos: catalog updated");
        }
        report(feed, &errors);
    }

    /// Fetch newly referenced services at once and drop those no longer referenced.
    async fn refresh(&self, client: &mut Client, feed: &Feed, new: &[Target], gone: &[Target]) {
        let mut changes: Vec<(String, Option<Vec<Node>>)> = Vec::new();
        if feed.catalog().loaded {
            changes.extend(gone.iter().map(|t| (t.key(), None)));
        }
        let mut errors = Vec::new();
        if !new.is_empty() {
            log::debug!(
                "discovery nacos: fetching {} newly referenced services",
                new.len()
            );
            match self.fetch(client, new).await {
                Ok(out) => {
                    for (t, r) in out {
                        match r {
                            Ok(nodes) => changes.push((t.key(), Some(nodes))),
                            Err(e) => errors.push(e),
                        }
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        if !changes.is_empty() && feed.update(changes) {
            log::info!("discovery nacos: catalog updated");
        }
        report(feed, &errors);
    }
}

/// Record failed services (after a publish, which clears the last error).
fn report(feed: &Feed, errors: &[String]) {
    match errors {
        [] => {}
        [one] => feed.failed(one),
        [first, ..] => feed.failed(format!("{} services failed, e.g. {first}", errors.len())),
    }
}

/// The distinct services `wanted` references, sorted.
fn targets(wanted: &[ServiceRef]) -> BTreeSet<Target> {
    wanted.iter().map(Target::of).collect()
}

#[async_trait]
impl Registry for Nacos {
    async fn run(&self, feed: Arc<Feed>) {
        let mut client = loop {
            match Client::new(&self.cfg) {
                Ok(c) => break c,
                Err(e) => feed.failed(e),
            }
            tokio::time::sleep(self.cfg.fetch_interval).await;
        };
        loop {
            // A full cycle: everything referenced now.
            let mut known = targets(&feed.wanted());
            let all: Vec<Target> = known.iter().cloned().collect();
            self.cycle(&mut client, &feed, &all).await;
            // Until the next one, fetch what becomes referenced at once.
            let next = Instant::now() + self.cfg.fetch_interval;
            loop {
                tokio::select! {
                    biased;
                    _ = tokio::time::sleep_until(next) => break,
                    _ = feed.wanted_changed() => {
                        let now = targets(&feed.wanted());
                        let new: Vec<Target> = now.difference(&known).cloned().collect();
                        let gone: Vec<Target> = known.difference(&now).cloned().collect();
                        known = now;
                        self.refresh(&mut client, &feed, &new, &gone).await;
                    }
                }
            }
        }
    }

    fn lookup(&self, catalog: &Catalog, service: &ServiceRef) -> Option<Arc<[Node]>> {
        catalog.get(&Target::of(service).key()).cloned()
    }

    fn config_dump(&self) -> serde_json::Value {
        let c = &self.cfg;
        json!({
            "host": c.hosts.iter().map(NacosHost::shown).collect::<Vec<_>>(),
            "prefix": c.prefix,
            "fetch_interval": c.fetch_interval.as_secs(),
            "weight": c.weight,
            "timeout": {
                "connect": c.connect_timeout.as_millis() as u64,
                "send": c.send_timeout.as_millis() as u64,
                "read": c.read_timeout.as_millis() as u64,
            },
            "access_key": c.access_key,
            "secret_key": mask(&c.secret_key),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NacosConfig {
        NacosConfig {
            hosts: vec![
                NacosHost {
                    base_url: "http://127.0.0.1:8848".into(),
                    credentials: Some(("nacos".into(), "pa55".into())),
                },
                NacosHost {
                    base_url: "https://10.0.0.2:8848".into(),
                    credentials: None,
                },
            ],
            prefix: "/nacos/v1/".into(),
            fetch_interval: Duration::from_secs(30),
            weight: 100,
            connect_timeout: Duration::from_millis(2000),
            send_timeout: Duration::from_millis(2000),
            read_timeout: Duration::from_millis(5000),
            access_key: "ak1".into(),
            secret_key: "sk-secret".into(),
        }
    }

    #[test]
    fn dump_and_debug_mask_password_and_secret_key() {
        let n = Nacos::new(cfg());
        assert_eq!(
            n.config_dump(),
            json!({
                "host": ["http://nacos:******@127.0.0.1:8848", "https://10.0.0.2:8848"],
                "prefix": "/nacos/v1/", "fetch_interval": 30, "weight": 100,
                "timeout": {"connect": 2000, "send": 2000, "read": 5000},
                "access_key": "ak1", "secret_key": "******",
            })
        );
        let debug = format!("{n:?}");
        assert!(
            !debug.contains("pa55") && !debug.contains("sk-secret"),
            "{debug}"
        );
    }

    #[test]
    fn lookup_keys_by_namespace_group_and_grpc() {
        let n = Nacos::new(cfg());
        let mut catalog = Catalog {
            loaded: true,
            ..Catalog::default()
        };
        let put = |c: &mut Catalog, k: &str, port: u16| {
            c.services
                .insert(k.into(), Arc::from(vec![Node::new("10.0.0.1", port, 1, 0)]));
        };
        put(&mut catalog, "public/DEFAULT_GROUP/orders", 1);
        put(&mut catalog, "dev/DEFAULT_GROUP/orders", 2);
        put(&mut catalog, "public/shop/orders", 3);
        put(&mut catalog, "public/DEFAULT_GROUP/orders (grpc)", 4);
        let port = |ns: Option<&str>, group: Option<&str>, grpc: bool| {
            let mut s = ServiceRef::named("orders");
            if let Some(ns) = ns {
                s.args.insert("namespace_id".into(), ns.into());
            }
            if let Some(g) = group {
                s.args.insert("group_name".into(), g.into());
            }
            s.grpc = grpc;
            n.lookup(&catalog, &s).map(|nodes| nodes[0].port)
        };
        assert_eq!(port(None, None, false), Some(1));
        assert_eq!(port(Some("public"), Some("DEFAULT_GROUP"), false), Some(1));
        assert_eq!(port(Some("dev"), None, false), Some(2));
        assert_eq!(port(None, Some("shop"), false), Some(3));
        assert_eq!(port(None, None, true), Some(4));
        assert_eq!(port(Some("prod"), None, false), None);
    }

    #[test]
    fn targets_are_distinct() {
        let mut a = ServiceRef::named("orders");
        a.args.insert("namespace_id".into(), "public".into());
        let b = ServiceRef::named("orders");
        let t = targets(&[a, b, ServiceRef::named("users")]);
        assert_eq!(
            t.iter().map(Target::key).collect::<Vec<_>>(),
            ["public/DEFAULT_GROUP/orders", "public/DEFAULT_GROUP/users"]
        );
    }
}
