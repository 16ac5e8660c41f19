//! The DNS registry: host names and SRV names resolved in the background by one resolver.
//!
//! It serves two kinds of service names, each published under the name exactly as wanted:
//!
//! - `host:port`: the A and AAAA records of `host`, one node per address
//!   `{address, port, default_weight, priority 0}`. The proxy also resolves the host-name
//!   nodes of static upstreams this way and keeps their own weight and priority; an address
//!   literal (`10.0.0.1:80`, `[::1]:80`) needs no query.
//! - `_service._proto.name`: the SRV records of the name; each record gives one node per
//!   address of its target, with the record's port, its weight (0 becomes 1) and priority
//!   `-priority`, so that targets of a lower SRV priority value are preferred. Records with
//!   the target `.` or port 0 are skipped with a warning.
//!
//! Only the names the configuration wants are resolved ([`Feed::wanted`]); a newly wanted
//! name is resolved at once, a name no longer wanted leaves the catalog. Each name is asked
//! again when its TTL, clamped to `[min_ttl, max_ttl]`, runs out.
//!
//! Invariants: the resolver runs in the background only, never for a request. A resolver
//! error, a timeout or an empty answer keeps the name's last good nodes (the error is
//! recorded with [`Feed::failed`] and the name retried after 1 s, doubling up to 30 s, within
//! `[min_ttl, max_ttl]`); a name that never resolved has no entry (its upstream answers 503).
//! Only a successful answer replaces a name's nodes, and only that name's.
//!
//! The resolver's own response cache is off (size 0) and its TTLs are capped at `max_ttl`,
//! so a name due again is always asked of the servers, never answered from a stale cache.

mod records;
mod resolve;
mod scheduler;
#[cfg(test)]
mod tests;

use crate::feed::Feed;
use crate::registry::Registry;
use async_trait::async_trait;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::Name;
use hickory_resolver::{Resolver, TokioResolver};
use records::SystemConf;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// `discovery.dns` (always present: the system resolver's servers when the block is absent).
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// UDP (TCP on truncation) name servers; empty: the `nameserver` lines of
    /// `/etc/resolv.conf`.
    pub servers: Vec<SocketAddr>,
    /// Per query.
    pub timeout: Duration,
    /// Weight of A/AAAA results for `discovery_type: dns`.
    pub default_weight: u32,
    /// A record is re-resolved when its TTL, clamped to this range, expires.
    pub min_ttl: Duration,
    pub max_ttl: Duration,
}

impl Default for DnsConfig {
    /// The documented defaults: the system's servers, 2 s per query, weight 1, TTLs within
    /// 1 s and 1 h.
    fn default() -> Self {
        DnsConfig {
            servers: Vec::new(),
            timeout: Duration::from_millis(2000),
            default_weight: 1,
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(3600),
        }
    }
}

/// Where the system resolver's configuration lives.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The DNS registry.
#[derive(Debug)]
pub struct Dns {
    config: DnsConfig,
    /// With no configured servers: what `/etc/resolv.conf` says (read once, at creation).
    system: Option<SystemConf>,
}

impl Dns {
    /// A registry for `config`. With no servers configured it reads `/etc/resolv.conf` now
    /// (servers, search domains, `ndots`; and then `/etc/hosts` is honoured too).
    pub fn new(config: DnsConfig) -> Dns {
        let system = config.servers.is_empty().then(|| {
            let text = std::fs::read_to_string(RESOLV_CONF).unwrap_or_else(|e| {
                log::warn!("discovery dns: cannot read {RESOLV_CONF} ({e}); using 127.0.0.1:53");
                String::new()
            });
            records::parse_resolv_conf(&text)
        });
        Dns { config, system }
    }

    pub fn config(&self) -> &DnsConfig {
        &self.config
    }

    /// The name servers queried: the configured ones, else the system's.
    pub fn servers(&self) -> &[SocketAddr] {
        match &self.system {
            Some(s) => &s.servers,
            None => &self.config.servers,
        }
    }

    fn resolver(&self) -> Result<TokioResolver, String> {
        let servers = self
            .servers()
            .iter()
            .map(|s| {
                let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                for c in &mut ns.connections {
                    c.port = s.port();
                }
                ns
            })
            .collect();
        let search = self
            .system
            .iter()
            .flat_map(|s| &s.search)
            .filter_map(|d| Name::from_ascii(d).ok())
            .collect();
        let config = ResolverConfig::from_parts(None, search, servers);
        let mut b = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
        let o = b.options_mut();
        o.timeout = self.config.timeout.max(Duration::from_millis(1));
        // One retry of a lost query; a whole resolution stays bounded.
        o.attempts = 1;
        // Re-resolution follows the TTLs here: the resolver must not answer from a cache.
        o.cache_size = 0;
        o.positive_max_ttl = Some(self.config.max_ttl);
        o.negative_max_ttl = Some(self.config.min_ttl.min(self.config.max_ttl));
        o.use_hosts_file = match &self.system {
            Some(_) => ResolveHosts::Always,
            None => ResolveHosts::Never,
        };
        if let Some(n) = self.system.as_ref().and_then(|s| s.ndots) {
            o.ndots = n;
        }
        b.build()
            .map_err(|e| format!("cannot create the resolver: {e}"))
    }
}

#[async_trait]
impl Registry for Dns {
    async fn run(&self, feed: Arc<Feed>) {
        let resolver = match self.resolver() {
            Ok(r) => r,
            Err(e) => {
                // Nothing would change on a retry: the configuration is fixed.
                feed.failed(e);
                return std::future::pending().await;
            }
        };
        log::info!(
            "discovery dns: resolving with {}",
            self.servers()
                .iter()
                .map(SocketAddr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        scheduler::Scheduler::new(resolver, self.config.clone())
            .run(&feed)
            .await
    }

    fn config_dump(&self) -> serde_json::Value {
        let addrs = |v: &[SocketAddr]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut dump = serde_json::json!({
            "servers": addrs(&self.config.servers),
            "timeout": u64::try_from(self.config.timeout.as_millis()).unwrap_or(u64::MAX),
            "default_weight": self.config.default_weight,
            "min_ttl": self.config.min_ttl.as_secs(),
            "max_ttl": self.config.max_ttl.as_secs(),
        });
        if let (Some(s), Some(o)) = (&self.system, dump.as_object_mut()) {
            o.insert("system_servers".into(), addrs(&s.servers).into());
        }
        dump
    }
}
