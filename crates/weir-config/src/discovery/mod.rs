//! The `discovery:` block: one entry per registry (docs/discovery.md), and the [`Env`] that
//! upstreams are validated against (which registries exist).

use crate::cert::Secret;
use crate::path::Path;
use crate::reader::{self, Cx, Obj};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

mod dns;
mod kubernetes;

pub use dns::DnsConfig;
use dns::{check_dns_service, parse_dns};
use kubernetes::parse_kubernetes;
pub use kubernetes::{KubernetesConfig, NamespaceSelector};

/// The built-in registries. An embedder may register more by name (see [`Env`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiscoveryType {
    Consul,
    Nacos,
    Kubernetes,
    Dns,
}

pub const DISCOVERY_TYPES: &[(&str, DiscoveryType)] = &[
    ("consul", DiscoveryType::Consul),
    ("dns", DiscoveryType::Dns),
    ("kubernetes", DiscoveryType::Kubernetes),
    ("nacos", DiscoveryType::Nacos),
];

impl DiscoveryType {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscoveryType::Consul => "consul",
            DiscoveryType::Nacos => "nacos",
            DiscoveryType::Kubernetes => "kubernetes",
            DiscoveryType::Dns => "dns",
        }
    }

    /// The built-in registry called `name`.
    pub fn from_name(name: &str) -> Option<DiscoveryType> {
        DISCOVERY_TYPES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
    }
}

/// An `http(s)://[user:pass@]host:port[/]` registry address.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    #[serde(skip)]
    pub credentials: Option<(String, Secret)>,
}

/// `s` with any `user:password@` of its authority replaced by `******@`: URLs are quoted in
/// errors, and a password must never be.
pub(crate) fn mask_userinfo(s: &str) -> String {
    let start = s.find("://").map_or(0, |i| i + 3);
    let end = s[start..]
        .find(['/', '?', '#'])
        .map_or(s.len(), |i| start + i);
    match s[start..end].rfind('@') {
        Some(at) => format!("{}******{}", &s[..start], &s[start + at..]),
        None => s.to_owned(),
    }
}

fn parse_url(v: &Value, p: &Path, cx: &mut Cx, allow_userinfo: bool) -> Option<ServerUrl> {
    let s = reader::string(v, p, cx)?;
    let shown = mask_userinfo(s);
    let bad = |cx: &mut Cx, why: &str| {
        cx.err(
            p,
            format!("must be http(s)://host:port ({why}), got {shown:?}"),
        );
    };
    let Ok(uri) = s.parse::<http::Uri>() else {
        bad(cx, "not a URL");
        return None;
    };
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => {
            bad(cx, "scheme must be http or https");
            return None;
        }
    };
    let Some(auth) = uri.authority() else {
        bad(cx, "no host");
        return None;
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        bad(cx, "no path allowed");
        return None;
    }
    let credentials = match auth.as_str().rsplit_once('@') {
        Some((userinfo, _)) if allow_userinfo => {
            let (u, pw) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            Some((u.to_owned(), Secret::new(pw)))
        }
        Some(_) => {
            bad(cx, "no credentials allowed");
            return None;
        }
        None => None,
    };
    Some(ServerUrl {
        tls,
        host: auth.host().to_owned(),
        port: auth.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        credentials,
    })
}

fn millis(o: &mut Obj<'_>, cx: &mut Cx, k: &str, default: u64) -> Duration {
    Duration::from_millis(o.uint(cx, k, 1, u32::MAX as u64).unwrap_or(default))
}

fn str_list(o: &mut Obj<'_>, cx: &mut Cx, k: &str) -> Vec<String> {
    o.take(k)
        .and_then(|(v, p)| {
            reader::list(v, &p, cx, 0, |x, xp, cx| {
                reader::string(x, xp, cx).map(str::to_owned)
            })
        })
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SortType {
    Origin,
    HostSort,
    PortSort,
    CombineSort,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsulConfig {
    pub servers: Vec<ServerUrl>,
    #[serde(skip)]
    pub token: Secret,
    pub keepalive: bool,
    pub fetch_interval: Duration,
    pub weight: u32,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub wait: Duration,
    pub sort_type: SortType,
    pub skip_services: Vec<String>,
    /// `(host, port, weight)` served for unknown services.
    pub default_service: Option<(String, u16, u32)>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NacosConfig {
    pub hosts: Vec<ServerUrl>,
    pub prefix: String,
    pub fetch_interval: Duration,
    pub weight: u32,
    pub connect_timeout: Duration,
    pub send_timeout: Duration,
    pub read_timeout: Duration,
    #[serde(skip)]
    pub access_key: String,
    #[serde(skip)]
    pub secret_key: Secret,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DiscoveryConfig {
    pub consul: Option<ConsulConfig>,
    pub nacos: Option<NacosConfig>,
    /// Empty: not configured. One entry with `id: None`: single cluster.
    pub kubernetes: Vec<KubernetesConfig>,
    /// Always in force: the defaults when the block is absent.
    pub dns: DnsConfig,
}

/// What resources are validated against: the configured registries, and the names of
/// plugins and discovery registries an embedder registered besides the built-in ones.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub discovery: DiscoveryConfig,
    /// What the embedder registered (plugins, registries, algorithms, checks).
    pub ext: crate::extensions::Extensions,
}

impl Env {
    pub fn has_discovery(&self, t: DiscoveryType) -> bool {
        match t {
            DiscoveryType::Consul => self.discovery.consul.is_some(),
            DiscoveryType::Nacos => self.discovery.nacos.is_some(),
            DiscoveryType::Kubernetes => !self.discovery.kubernetes.is_empty(),
            DiscoveryType::Dns => true,
        }
    }

    /// Every `discovery_type` name this configuration accepts, sorted.
    pub fn discovery_type_names(&self) -> Vec<String> {
        let mut names: Vec<String> = DISCOVERY_TYPES
            .iter()
            .map(|(n, _)| n.to_string())
            .chain(self.ext.discovery_names().map(str::to_owned))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Check a `service_name` against its registry's format.
    pub fn check_service_name(&self, t: DiscoveryType, name: &str) -> Result<(), String> {
        match t {
            DiscoveryType::Dns => check_dns_service(name),
            DiscoveryType::Consul | DiscoveryType::Nacos => Ok(()),
            DiscoveryType::Kubernetes => {
                let multi = self.discovery.kubernetes.iter().any(|k| k.id.is_some());
                let (path, port) = name.rsplit_once(':').unwrap_or((name, ""));
                let parts: Vec<&str> = path.split('/').collect();
                let want = if multi { 3 } else { 2 };
                let shape = if multi {
                    "<id>/<namespace>/<name>:<port>"
                } else {
                    "<namespace>/<name>:<port>"
                };
                if port.is_empty() || parts.len() != want || parts.iter().any(|s| s.is_empty()) {
                    return Err(format!("must be {shape}, got {name:?}"));
                }
                if multi
                    && !self
                        .discovery
                        .kubernetes
                        .iter()
                        .any(|k| k.id.as_deref() == Some(parts[0]))
                {
                    return Err(format!("unknown kubernetes cluster id {:?}", parts[0]));
                }
                Ok(())
            }
        }
    }
}

pub fn parse_discovery(v: &Value, p: &Path, cx: &mut Cx) -> DiscoveryConfig {
    let mut d = DiscoveryConfig::default();
    let Some(mut o) = Obj::of(v, p, cx) else {
        return d;
    };
    if let Some(c) = o.obj(cx, "consul") {
        d.consul = parse_consul(c, cx);
    }
    if let Some(n) = o.obj(cx, "nacos") {
        d.nacos = parse_nacos(n, cx);
    }
    if let Some(n) = o.obj(cx, "dns") {
        d.dns = parse_dns(n, cx);
    }
    if let Some((kv, kp)) = o.take("kubernetes") {
        match kv {
            Value::Array(items) => {
                let mut ids = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let ip = kp.index(i);
                    if let Some(k) =
                        Obj::of(item, &ip, cx).and_then(|ko| parse_kubernetes(ko, cx, true))
                    {
                        if let Some(id) = &k.id {
                            if ids.contains(id) {
                                cx.err(&ip.field("id"), format!("duplicate id {id:?}"));
                            }
                            ids.push(id.clone());
                        }
                        d.kubernetes.push(k);
                    }
                }
            }
            _ => {
                if let Some(k) = Obj::of(kv, &kp, cx).and_then(|ko| parse_kubernetes(ko, cx, false))
                {
                    d.kubernetes.push(k);
                }
            }
        }
    }
    o.finish(cx);
    d
}

fn parse_consul(mut o: Obj<'_>, cx: &mut Cx) -> Option<ConsulConfig> {
    let servers = o
        .require(cx, "servers")
        .and_then(|(v, p)| reader::list(v, &p, cx, 1, |x, xp, cx| parse_url(x, xp, cx, false)));
    let token = Secret::new(o.str(cx, "token").unwrap_or(""));
    let keepalive = o.bool(cx, "keepalive", true);
    let fetch_interval = Duration::from_secs(o.uint(cx, "fetch_interval", 1, 86400).unwrap_or(3));
    let weight = o.uint(cx, "weight", 1, u32::MAX as u64).unwrap_or(1) as u32;
    let (mut connect_timeout, mut read_timeout, mut wait) = (
        Duration::from_millis(2000),
        Duration::from_millis(2000),
        Duration::from_secs(60),
    );
    if let Some(mut t) = o.obj(cx, "timeout") {
        connect_timeout = millis(&mut t, cx, "connect", 2000);
        read_timeout = millis(&mut t, cx, "read", 2000);
        wait = Duration::from_secs(t.uint(cx, "wait", 1, 3600).unwrap_or(60));
        t.finish(cx);
    }
    let sort_type = o
        .enumeration(
            cx,
            "sort_type",
            &[
                ("origin", SortType::Origin),
                ("host_sort", SortType::HostSort),
                ("port_sort", SortType::PortSort),
                ("combine_sort", SortType::CombineSort),
            ],
        )
        .unwrap_or(SortType::Origin);
    let skip_services = str_list(&mut o, cx, "skip_services");
    let default_service = o.obj(cx, "default_service").and_then(|mut d| {
        let host = d
            .require(cx, "host")
            .and_then(|(v, p)| reader::string(v, &p, cx).map(str::to_owned));
        let port = d
            .require(cx, "port")
            .and_then(|(v, p)| reader::uint(v, &p, cx, 1, 65535));
        let weight = d.uint(cx, "weight", 0, u32::MAX as u64).unwrap_or(1);
        d.finish(cx);
        Some((host?, port? as u16, weight as u32))
    });
    o.finish(cx);
    Some(ConsulConfig {
        servers: servers?,
        token,
        keepalive,
        fetch_interval,
        weight,
        connect_timeout,
        read_timeout,
        wait,
        sort_type,
        skip_services,
        default_service,
    })
}

fn parse_nacos(mut o: Obj<'_>, cx: &mut Cx) -> Option<NacosConfig> {
    let hosts = o
        .require(cx, "host")
        .and_then(|(v, p)| reader::list(v, &p, cx, 1, |x, xp, cx| parse_url(x, xp, cx, true)));
    let prefix = match o.take("prefix") {
        Some((v, p)) => match reader::string(v, &p, cx) {
            Some(s) if s.starts_with('/') => {
                let mut s = s.to_owned();
                if !s.ends_with('/') {
                    s.push('/');
                }
                s
            }
            Some(s) => {
                cx.err(&p, format!("must start with \"/\", got {s:?}"));
                String::new()
            }
            None => String::new(),
        },
        None => "/nacos/v1/".into(),
    };
    let fetch_interval = Duration::from_secs(o.uint(cx, "fetch_interval", 1, 86400).unwrap_or(30));
    let weight = o.uint(cx, "weight", 0, u32::MAX as u64).unwrap_or(100) as u32;
    let (mut connect_timeout, mut send_timeout, mut read_timeout) = (
        Duration::from_millis(2000),
        Duration::from_millis(2000),
        Duration::from_millis(5000),
    );
    if let Some(mut t) = o.obj(cx, "timeout") {
        connect_timeout = millis(&mut t, cx, "connect", 2000);
        send_timeout = millis(&mut t, cx, "send", 2000);
        read_timeout = millis(&mut t, cx, "read", 5000);
        t.finish(cx);
    }
    let access_key = o.str(cx, "access_key").unwrap_or("").to_owned();
    let secret_key = Secret::new(o.str(cx, "secret_key").unwrap_or(""));
    o.finish(cx);
    Some(NacosConfig {
        hosts: hosts?,
        prefix,
        fetch_interval,
        weight,
        connect_timeout,
        send_timeout,
        read_timeout,
        access_key,
        secret_key,
    })
}
