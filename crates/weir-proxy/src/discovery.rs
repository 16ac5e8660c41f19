//! Discovery in the data path: the `discovery:` block becomes the registries of a
//! [`DiscoveryRegistry`] (the built-ins registered by name, like an embedder's own), and
//! snapshot compilation turns an upstream's targets into concrete nodes from the registries'
//! catalogs: discovered services, and host-name nodes of static upstreams through the `dns`
//! registry. Compilation only reads catalogs; it never does I/O. What it looked up is handed
//! back to each registry as its wanted services, so registries that fetch per service
//! (Nacos, DNS) fetch exactly what the configuration references.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use weir_config::discovery::{
    ConsulConfig, KubernetesConfig, NacosConfig, NamespaceSelector, SortType,
};
use weir_config::{DiscoveryConfig, DnsConfig, Node, Targets, Upstream};
use weir_discovery::{consul, dns, kubernetes, nacos, DiscoveryRegistry, ServiceRef};

/// The registry that resolves host names.
pub const DNS: &str = "dns";

/// Registries for `cfg`: `dns` always, `consul`, `nacos` and `kubernetes` when configured.
pub fn registries(cfg: &DiscoveryConfig) -> DiscoveryRegistry {
    let mut r = DiscoveryRegistry::new();
    register_builtins(&mut r, cfg);
    r
}

/// Register the built-in registries `cfg` configures into `r`.
pub fn register_builtins(r: &mut DiscoveryRegistry, cfg: &DiscoveryConfig) {
    r.register(DNS, Arc::new(dns::Dns::new(dns_config(&cfg.dns))));
    if let Some(c) = &cfg.consul {
        r.register("consul", Arc::new(consul::Consul::new(consul_config(c))));
    }
    if let Some(n) = &cfg.nacos {
        r.register("nacos", Arc::new(nacos::Nacos::new(nacos_config(n))));
    }
    if !cfg.kubernetes.is_empty() {
        r.register(
            "kubernetes",
            Arc::new(kubernetes::Kubernetes::new(kubernetes_config(
                &cfg.kubernetes,
            ))),
        );
    }
}

fn base_url(tls: bool, host: &str, port: u16) -> String {
    let scheme = if tls { "https" } else { "http" };
    if host.contains(':') && !host.starts_with('[') {
        format!("{scheme}://[{host}]:{port}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

fn dns_config(d: &DnsConfig) -> dns::DnsConfig {
    dns::DnsConfig {
        servers: d.servers.clone(),
        timeout: d.timeout,
        default_weight: d.default_weight,
        min_ttl: d.min_ttl,
        max_ttl: d.max_ttl,
    }
}

fn consul_config(c: &ConsulConfig) -> consul::ConsulConfig {
    consul::ConsulConfig {
        servers: c
            .servers
            .iter()
            .map(|s| base_url(s.tls, &s.host, s.port))
            .collect(),
        token: c.token.expose().to_owned(),
        keepalive: c.keepalive,
        fetch_interval: c.fetch_interval,
        weight: c.weight,
        connect_timeout: c.connect_timeout,
        read_timeout: c.read_timeout,
        wait: c.wait,
        sort_type: match c.sort_type {
            SortType::Origin => consul::SortType::Origin,
            SortType::HostSort => consul::SortType::HostSort,
            SortType::PortSort => consul::SortType::PortSort,
            SortType::CombineSort => consul::SortType::CombineSort,
        },
        skip_services: c.skip_services.clone(),
        default_service: c
            .default_service
            .as_ref()
            .map(|(h, p, w)| weir_discovery::Node::new(h.clone(), *p, *w, 0)),
    }
}

fn nacos_config(n: &NacosConfig) -> nacos::NacosConfig {
    nacos::NacosConfig {
        hosts: n
            .hosts
            .iter()
            .map(|h| nacos::NacosHost {
                base_url: base_url(h.tls, &h.host, h.port),
                credentials: h
                    .credentials
                    .as_ref()
                    .map(|(u, p)| (u.clone(), p.expose().to_owned())),
            })
            .collect(),
        prefix: n.prefix.clone(),
        fetch_interval: n.fetch_interval,
        weight: n.weight,
        connect_timeout: n.connect_timeout,
        send_timeout: n.send_timeout,
        read_timeout: n.read_timeout,
        access_key: n.access_key.clone(),
        secret_key: n.secret_key.expose().to_owned(),
    }
}

/// `${VAR}` from the environment (empty when unset), anything else as written.
fn expand_env(s: &str) -> String {
    match s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        Some(var) => std::env::var(var).unwrap_or_default(),
        None => s.to_owned(),
    }
}

/// The service account's CA, used for `ssl_verify` when no `ca_file` is configured.
const SERVICE_ACCOUNT_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

fn kubernetes_config(clusters: &[KubernetesConfig]) -> kubernetes::KubernetesConfig {
    kubernetes::KubernetesConfig {
        clusters: clusters
            .iter()
            .map(|k| {
                let host = expand_env(&k.host);
                let port = expand_env(&k.port);
                let scheme = if k.tls { "https" } else { "http" };
                let host = if host.contains(':') && !host.starts_with('[') {
                    format!("[{host}]")
                } else {
                    host
                };
                kubernetes::KubernetesCluster {
                    id: k.id.clone(),
                    base_url: format!("{scheme}://{host}:{port}"),
                    ssl_verify: k.ssl_verify,
                    ca_file: k.ca_file.clone().or_else(|| {
                        std::path::Path::new(SERVICE_ACCOUNT_CA)
                            .exists()
                            .then(|| SERVICE_ACCOUNT_CA.to_owned())
                    }),
                    token: k.token.as_ref().map(|t| t.expose().to_owned()),
                    token_file: k.token_file.clone(),
                    namespace_selector: k.namespace_selector.as_ref().map(|s| match s {
                        NamespaceSelector::Equal(n) => {
                            kubernetes::NamespaceSelector::Equal(n.clone())
                        }
                        NamespaceSelector::NotEqual(n) => {
                            kubernetes::NamespaceSelector::NotEqual(n.clone())
                        }
                        NamespaceSelector::Match(l) => {
                            kubernetes::NamespaceSelector::Match(l.clone())
                        }
                        NamespaceSelector::NotMatch(l) => {
                            kubernetes::NamespaceSelector::NotMatch(l.clone())
                        }
                    }),
                    label_selector: k.label_selector.clone(),
                    default_weight: k.default_weight,
                    watch_endpoint_slices: k.watch_endpoint_slices,
                }
            })
            .collect(),
    }
}

/// Turns upstream targets into concrete nodes during one compilation, and remembers which
/// services it asked each registry for.
pub(crate) struct Resolver<'a> {
    registries: &'a DiscoveryRegistry,
    wanted: HashMap<String, Vec<ServiceRef>>,
}

impl<'a> Resolver<'a> {
    pub fn new(registries: &'a DiscoveryRegistry) -> Self {
        Resolver {
            registries,
            wanted: HashMap::new(),
        }
    }

    /// The nodes `conf` has now, each with the address it is reached at. Static IP nodes as
    /// written; a host-name node once per address the `dns` registry holds for it (none before
    /// its first resolution); a discovered service's nodes from its registry's catalog.
    pub fn targets(&mut self, conf: &Upstream) -> Vec<(Node, SocketAddr)> {
        match &conf.targets {
            Targets::Nodes(nodes) => {
                let mut out = Vec::with_capacity(nodes.len());
                for n in nodes {
                    self.expand(n.clone(), &mut out);
                }
                out
            }
            Targets::Discovery(d) => {
                let mut args = BTreeMap::new();
                if d.builtin() == Some(weir_config::DiscoveryType::Nacos) {
                    args.insert("namespace_id".to_owned(), d.namespace_id.clone());
                    args.insert("group_name".to_owned(), d.group_name.clone());
                }
                let service = ServiceRef {
                    name: d.service_name.clone(),
                    args,
                    grpc: conf.scheme.is_grpc(),
                };
                let found = self.registries.lookup(&d.discovery_type, &service);
                self.want(&d.discovery_type, service);
                let mut out = Vec::new();
                for dn in found.iter().flat_map(|n| n.iter()) {
                    if let Err(e) = dn.check() {
                        log::warn!(
                            "discovery {}: {}: {e}; skipped",
                            d.discovery_type,
                            d.service_name
                        );
                        continue;
                    }
                    let ip = dn.host.parse::<IpAddr>().ok();
                    let host = match ip {
                        Some(IpAddr::V6(v6)) => format!("[{v6}]"),
                        Some(v4) => v4.to_string(),
                        None => dn.host.clone(),
                    };
                    let node = Node {
                        host,
                        ip,
                        port: dn.port,
                        weight: dn.weight,
                        priority: dn.priority,
                        metadata: None,
                    };
                    self.expand(node, &mut out);
                }
                out
            }
        }
    }

    /// Push `n` with its address(es): an IP node as it is, a name through the `dns` registry.
    fn expand(&mut self, n: Node, out: &mut Vec<(Node, SocketAddr)>) {
        if let Some(ip) = n.ip {
            let addr = SocketAddr::new(ip, n.port);
            out.push((n, addr));
            return;
        }
        let service = ServiceRef::named(format!("{}:{}", n.host, n.port));
        let found = self.registries.lookup(DNS, &service);
        self.want(DNS, service);
        for r in found.iter().flat_map(|a| a.iter()) {
            if let Ok(ip) = r.host.parse::<IpAddr>() {
                out.push((n.clone(), SocketAddr::new(ip, n.port)));
            }
        }
    }

    fn want(&mut self, registry: &str, service: ServiceRef) {
        self.wanted
            .entry(registry.to_owned())
            .or_default()
            .push(service);
    }

    /// Hand every registry the services this compilation referenced (none for the others).
    pub fn publish_wanted(mut self) {
        for (name, e) in self.registries.entries() {
            e.feed.want(self.wanted.remove(name).unwrap_or_default());
        }
    }
}
