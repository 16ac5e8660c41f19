//! The Consul registry: every service of one Consul cluster, kept current with blocking
//! queries (or polling), published as one whole catalog.
//!
//! The watch loop, against one of `servers` at a time:
//!
//! 1. Two blocking queries race, `GET /v1/catalog/services` and `GET /v1/health/state/any`,
//!    each with `wait=<wait>s&index=<its stored index>`; the first answer wins and the other
//!    is dropped. Polling mode (`keepalive: false`) sends both without `wait`/`index` and
//!    reads both answers.
//! 2. The winner's `X-Consul-Index`: equal to the stored index (the wait expired with no
//!    change) sleeps 1–5 s at random and goes back to 1; lower (a restored cluster) resets
//!    both stored indexes to 0 and goes back to 1; higher is a change.
//! 3. A change fetches everything: the service list, `/v1/health/state/any` (for its
//!    index), then `GET /v1/health/service/<name>?passing=true` for every service except
//!    `consul` and `skip_services`.
//! 4. The result is published as the whole catalog: a service that is gone, or has no
//!    passing (valid) instance, is removed.
//!
//! Invariants: a failed answer (connection error, timeout, non-2xx, malformed JSON) never
//! changes the catalog; the loop retries after 1, 4, 16, 64, 256 s (then 1 again), each retry
//! on the next of `servers`. A service whose own instance list failed keeps its last good
//! nodes while the others are updated, and the round counts as failed so that it is fetched
//! again. The token is sent as `X-Consul-Token` and never logged, reported or dumped.

pub(crate) mod http;
mod parse;

use self::http::Reply;
use crate::{Backoff, Catalog, Feed, Node, Registry, ServiceRef, MASK};
use async_trait::async_trait;
use parse::IndexMove;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::Url;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How Consul nodes are ordered (`sort_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortType {
    /// Response order.
    #[default]
    Origin,
    HostSort,
    PortSort,
    /// Host, then port.
    CombineSort,
}

impl SortType {
    pub fn as_str(self) -> &'static str {
        match self {
            SortType::Origin => "origin",
            SortType::HostSort => "host_sort",
            SortType::PortSort => "port_sort",
            SortType::CombineSort => "combine_sort",
        }
    }
}

/// `discovery.consul`.
#[derive(Clone)]
pub struct ConsulConfig {
    /// Base URLs, `http://host:port` (no path), one Consul cluster.
    pub servers: Vec<String>,
    /// `X-Consul-Token` when non-empty. A secret: never logged or dumped.
    pub token: String,
    /// Blocking queries (true) or polling every `fetch_interval`.
    pub keepalive: bool,
    pub fetch_interval: Duration,
    /// Given to every instance.
    pub weight: u32,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// A blocking query's `wait`; its read deadline is `wait + read_timeout`.
    pub wait: Duration,
    pub sort_type: SortType,
    /// Never fetched (`consul` is always skipped).
    pub skip_services: Vec<String>,
    /// Served for unknown services instead of 503.
    pub default_service: Option<crate::Node>,
}

impl std::fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulConfig")
            .field("servers", &self.servers)
            .field("token", &mask(&self.token))
            .field("keepalive", &self.keepalive)
            .field("fetch_interval", &self.fetch_interval)
            .field("weight", &self.weight)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("wait", &self.wait)
            .field("sort_type", &self.sort_type)
            .field("skip_services", &self.skip_services)
            .field("default_service", &self.default_service)
            .finish()
    }
}

/// A secret as shown: [`MASK`] when set, empty when not.
fn mask(secret: &str) -> &'static str {
    if secret.is_empty() {
        ""
    } else {
        MASK
    }
}

/// The Consul registry. Build it with [`Consul::new`], register it under `consul`.
#[derive(Debug)]
pub struct Consul {
    cfg: ConsulConfig,
}

impl Consul {
    pub fn new(cfg: ConsulConfig) -> Consul {
        Consul { cfg }
    }

    pub fn config(&self) -> &ConsulConfig {
        &self.cfg
    }
}

/// The catalog key of an upstream's `service_name`: `svc` and `default/svc` are one service.
pub fn service_key(name: &str) -> &str {
    name.strip_prefix("default/").unwrap_or(name)
}

#[async_trait]
impl Registry for Consul {
    async fn run(&self, feed: Arc<Feed>) {
        let mut backoff = Backoff::cycle([1, 4, 16, 64, 256].map(Duration::from_secs).to_vec());
        loop {
            match Watcher::new(&self.cfg, &feed) {
                Ok(mut w) => w.run().await,
                Err(e) => {
                    feed.failed(e);
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    fn lookup(&self, catalog: &Catalog, service: &ServiceRef) -> Option<Arc<[Node]>> {
        if let Some(nodes) = catalog.get(service_key(&service.name)) {
            return Some(Arc::clone(nodes));
        }
        self.cfg
            .default_service
            .as_ref()
            .map(|n| Arc::from(vec![n.clone()]))
    }

    fn config_dump(&self) -> serde_json::Value {
        let c = &self.cfg;
        json!({
            "servers": c.servers,
            "token": mask(&c.token),
            "keepalive": c.keepalive,
            "fetch_interval": c.fetch_interval.as_secs(),
            "weight": c.weight,
            "timeout": {
                "connect": c.connect_timeout.as_millis() as u64,
                "read": c.read_timeout.as_millis() as u64,
                "wait": c.wait.as_secs(),
            },
            "sort_type": c.sort_type.as_str(),
            "skip_services": c.skip_services,
            "default_service": c.default_service.as_ref().map(|n| json!({
                "host": n.host, "port": n.port, "weight": n.weight,
            })),
        })
    }
}

/// The result of one full fetch.
struct Fetched {
    services: HashMap<String, Vec<Node>>,
    catalog_index: u64,
    health_index: u64,
    /// Services whose instance list failed (they kept their last good nodes).
    errors: Vec<String>,
}

/// The state of the watch loop: where it is, what it has seen.
struct Watcher<'a> {
    cfg: &'a ConsulConfig,
    feed: &'a Feed,
    http: reqwest::Client,
    headers: HeaderMap,
    server: usize,
    catalog_index: u64,
    health_index: u64,
    backoff: Backoff,
}

impl<'a> Watcher<'a> {
    fn new(cfg: &'a ConsulConfig, feed: &'a Feed) -> Result<Watcher<'a>, String> {
        if cfg.servers.is_empty() {
            return Err("no servers configured".into());
        }
        let mut headers = HeaderMap::new();
        if !cfg.token.is_empty() {
            let mut v = HeaderValue::from_str(&cfg.token)
                .map_err(|_| "the token is not a valid header value".to_owned())?;
            v.set_sensitive(true);
            headers.insert("x-consul-token", v);
        }
        Ok(Watcher {
            cfg,
            feed,
            // No per-read timeout: a blocking query is silent for up to `wait`.
            http: http::client(cfg.connect_timeout, None)?,
            headers,
            server: 0,
            catalog_index: 0,
            health_index: 0,
            backoff: Backoff::cycle([1, 4, 16, 64, 256].map(Duration::from_secs).to_vec()),
        })
    }

    fn base(&self) -> &str {
        let s = self.cfg.servers.get(self.server).map_or("", String::as_str);
        s.trim_end_matches('/')
    }

    async fn run(&mut self) {
        loop {
            match self.round().await {
                Ok(pause) => {
                    if let Some(d) = pause {
                        tokio::time::sleep(d).await;
                    }
                }
                Err(e) => {
                    self.feed.failed(e);
                    let delay = self.backoff.next_delay();
                    self.server = (self.server + 1) % self.cfg.servers.len();
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One pass of the loop; returns how long to pause before the next.
    async fn round(&mut self) -> Result<Option<Duration>, String> {
        match self.watch().await? {
            IndexMove::Unchanged => return Ok(Some(self.idle_pause())),
            IndexMove::Reset => {
                log::info!("discovery consul: the index went backwards; watching from 0");
                self.catalog_index = 0;
                self.health_index = 0;
                return Ok(None);
            }
            IndexMove::Changed => {}
        }
        let f = self.fetch_all().await?;
        let changed = self.feed.publish(f.services);
        if changed {
            log::info!("discovery consul: catalog updated from {}", self.base());
        }
        if let Some(first) = f.errors.first() {
            return Err(format!(
                "{} service(s) failed, e.g. {first}",
                f.errors.len()
            ));
        }
        self.catalog_index = f.catalog_index;
        self.health_index = f.health_index;
        self.backoff.reset();
        Ok((!self.cfg.keepalive).then_some(self.cfg.fetch_interval))
    }

    /// The pause after an unchanged answer: 1–5 s with blocking queries, `fetch_interval`
    /// when polling.
    fn idle_pause(&self) -> Duration {
        if self.cfg.keepalive {
            Duration::from_millis(fastrand::u64(1000..=5000))
        } else {
            self.cfg.fetch_interval
        }
    }

    /// Step 1–2: what the watched indexes say.
    async fn watch(&self) -> Result<IndexMove, String> {
        let (ci, hi) = (self.catalog_index, self.health_index);
        let catalog = self.watch_one("/v1/catalog/services", ci);
        let health = self.watch_one("/v1/health/state/any", hi);
        if self.cfg.keepalive {
            tokio::select! {
                r = catalog => Ok(parse::index_move(ci, r?)),
                r = health => Ok(parse::index_move(hi, r?)),
            }
        } else {
            // Polling: both answers count, or a change seen by the slower one would be lost.
            let (c, h) = tokio::join!(catalog, health);
            let moves = [parse::index_move(ci, c?), parse::index_move(hi, h?)];
            Ok(if moves.contains(&IndexMove::Reset) {
                IndexMove::Reset
            } else if moves.contains(&IndexMove::Changed) {
                IndexMove::Changed
            } else {
                IndexMove::Unchanged
            })
        }
    }

    /// A (blocking, with `keepalive`) query of `path`: its `X-Consul-Index`.
    async fn watch_one(&self, path: &str, index: u64) -> Result<u64, String> {
        let mut url = self.url(path)?;
        let mut timeout = self.cfg.read_timeout;
        if self.cfg.keepalive {
            let wait = self.cfg.wait.as_secs().max(1);
            url.query_pairs_mut()
                .append_pair("wait", &format!("{wait}s"))
                .append_pair("index", &index.to_string());
            // Consul may answer up to wait/16 late (its jitter), then the read deadline runs.
            let w = Duration::from_secs(wait);
            timeout += w + w / 16;
        }
        let r = self.get(url, timeout).await?;
        parse::parse_index(r.header("x-consul-index")).ok_or_else(|| {
            format!(
                "{}{path}: no valid X-Consul-Index in the answer",
                self.base()
            )
        })
    }

    /// Step 3: the service list and every service's passing instances.
    async fn fetch_all(&self) -> Result<Fetched, String> {
        let t = self.cfg.read_timeout;
        let (c, h) = tokio::join!(
            self.get(self.url("/v1/catalog/services")?, t),
            self.get(self.url("/v1/health/state/any")?, t),
        );
        let (c, h) = (c?, h?);
        let names = parse::parse_services(&c.body, &self.cfg.skip_services)
            .map_err(|e| format!("{}/v1/catalog/services: {e}", self.base()))?;
        let previous = self.feed.catalog();
        let mut f = Fetched {
            services: HashMap::new(),
            // Consul sends the index on every answer; one without it is not Consul's (and an
            // index of 0 would turn the blocking queries into a busy loop).
            catalog_index: parse::parse_index(c.header("x-consul-index"))
                .ok_or_else(|| format!("{}/v1/catalog/services: no X-Consul-Index", self.base()))?,
            health_index: parse::parse_index(h.header("x-consul-index"))
                .ok_or_else(|| format!("{}/v1/health/state/any: no X-Consul-Index", self.base()))?,
            errors: Vec::new(),
        };
        for name in names {
            match self.instances(&name).await {
                Ok(nodes) if nodes.is_empty() => {}
                Ok(nodes) => {
                    f.services.insert(name, nodes);
                }
                Err(e) => {
                    log::warn!("discovery consul: {e}; keeping its last good nodes");
                    if let Some(old) = previous.get(&name) {
                        f.services.insert(name, old.to_vec());
                    }
                    f.errors.push(e);
                }
            }
        }
        Ok(f)
    }

    /// The passing, valid instances of one service, ordered by `sort_type`.
    async fn instances(&self, name: &str) -> Result<Vec<Node>, String> {
        let mut url = self.url("/v1/health/service/")?;
        url.path_segments_mut()
            .map_err(|_| format!("{}: not a base URL", self.base()))?
            .pop_if_empty()
            .push(name);
        url.query_pairs_mut().append_pair("passing", "true");
        let shown = http::shown(&url);
        let r = self.get(url, self.cfg.read_timeout).await?;
        parse::parse_health(&r.body, name, self.cfg.weight, self.cfg.sort_type)
            .map_err(|e| format!("GET {shown}: {e}"))
    }

    fn url(&self, path: &str) -> Result<Url, String> {
        let s = format!("{}{path}", self.base());
        Url::parse(&s).map_err(|e| format!("invalid server URL {:?}: {e}", self.base()))
    }

    /// GET `url` with the token; a non-2xx answer is an error.
    async fn get(&self, url: Url, timeout: Duration) -> Result<Reply, String> {
        let shown = http::shown(&url);
        let req = self
            .http
            .get(url)
            .headers(self.headers.clone())
            .timeout(self.cfg.connect_timeout + timeout);
        let r = http::send(req)
            .await
            .map_err(|e| format!("GET {shown}: {e}"))?;
        if !r.is_success() {
            return Err(format!(
                "GET {shown}: HTTP {} {}",
                r.status,
                http::snippet(&r.body, 200)
            ));
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ConsulConfig {
        ConsulConfig {
            servers: vec!["http://127.0.0.1:8500".into()],
            token: "s3cr3t".into(),
            keepalive: true,
            fetch_interval: Duration::from_secs(3),
            weight: 1,
            connect_timeout: Duration::from_millis(2000),
            read_timeout: Duration::from_millis(2000),
            wait: Duration::from_secs(60),
            sort_type: SortType::HostSort,
            skip_services: vec!["vault".into()],
            default_service: Some(Node::new("10.9.9.9", 8080, 2, 0)),
        }
    }

    #[test]
    fn dump_and_debug_mask_the_token() {
        let c = Consul::new(cfg());
        let d = c.config_dump();
        assert_eq!(
            d,
            json!({
                "servers": ["http://127.0.0.1:8500"], "token": "******", "keepalive": true,
                "fetch_interval": 3, "weight": 1,
                "timeout": {"connect": 2000, "read": 2000, "wait": 60},
                "sort_type": "host_sort", "skip_services": ["vault"],
                "default_service": {"host": "10.9.9.9", "port": 8080, "weight": 2},
            })
        );
        let debug = format!("{:?}", c);
        assert!(!debug.contains("s3cr3t"), "{debug}");
        let mut open = cfg();
        open.token.clear();
        assert_eq!(Consul::new(open).config_dump()["token"], "");
    }

    #[test]
    fn lookup_strips_default_and_falls_back_to_the_default_service() {
        let c = Consul::new(cfg());
        let mut catalog = Catalog {
            loaded: true,
            ..Catalog::default()
        };
        catalog.services.insert(
            "web".into(),
            Arc::from(vec![Node::new("10.0.0.1", 80, 1, 0)]),
        );
        let hosts = |name: &str| {
            c.lookup(&catalog, &ServiceRef::named(name))
                .map(|n| n.iter().map(|n| n.host.clone()).collect::<Vec<_>>())
        };
        assert_eq!(hosts("web"), Some(vec!["10.0.0.1".to_owned()]));
        assert_eq!(hosts("default/web"), Some(vec!["10.0.0.1".to_owned()]));
        assert_eq!(hosts("other"), Some(vec!["10.9.9.9".to_owned()]));
        let mut plain = cfg();
        plain.default_service = None;
        let c = Consul::new(plain);
        assert!(c.lookup(&catalog, &ServiceRef::named("other")).is_none());
        assert_eq!(service_key("default/a/b"), "a/b");
        assert_eq!(service_key("shop/web"), "shop/web");
    }
}
