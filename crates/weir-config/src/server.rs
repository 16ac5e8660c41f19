//! Process settings: `server`, `admin`, `control`, `config_source` (docs/configuration.md). They need a
//! restart or graceful upgrade to change.

use crate::access_log::{parse_access_log, AccessLogConfig};
use crate::cert::Secret;
use crate::common::{parse_id, Id};
use crate::error::show;
use crate::path::Path;
use crate::reader::{self, Bound, Cx, Obj};
use ipnet::IpNet;
use serde::Serialize;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TlsListen {
    pub addr: SocketAddr,
    /// Id of a `certificates` object.
    pub certificate: Id,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    pub tls_listen: Vec<TlsListen>,
    pub threads: usize,
    /// Pingora's work-stealing runtime (`true`), or one runtime per worker thread (`false`):
    /// a request and its upstream connections then stay on one thread, and each worker keeps
    /// its own idle upstream connections.
    pub work_stealing: bool,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub grace_period_seconds: u64,
    pub graceful_shutdown_timeout_seconds: u64,
    /// Idle upstream connections kept by the whole process (Pingora's pool); see docs.
    pub upstream_keepalive_pool_size: usize,
    /// `access_log`: off unless the block is present.
    pub access_log: AccessLogConfig,
    /// Limits on client (downstream) connections, with nginx's names and defaults.
    #[serde(flatten)]
    pub downstream: DownstreamLimits,
}

/// `large_client_header_buffers`: a request line or a header line longer than `size` bytes is
/// refused (414 / 431), and so is a request head larger than `count × size` (431).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HeaderBuffers {
    pub count: usize,
    pub size: usize,
}

/// The `server` fields that bound what one client may cost (docs/hardening.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DownstreamLimits {
    /// The whole request head must arrive within this time of its first byte.
    #[serde(serialize_with = "crate::common::ser_secs")]
    pub client_header_timeout: Duration,
    /// Longest wait between two reads of a request body.
    #[serde(serialize_with = "crate::common::ser_secs")]
    pub client_body_timeout: Duration,
    /// Longest idle time on a client connection before a request (the first one too).
    #[serde(serialize_with = "crate::common::ser_secs")]
    pub keepalive_timeout: Duration,
    /// Longest wait between two writes to a client.
    #[serde(serialize_with = "crate::common::ser_secs")]
    pub send_timeout: Duration,
    /// Largest request body in bytes; 0: unlimited.
    pub client_max_body_size: u64,
    pub large_client_header_buffers: HeaderBuffers,
    /// Concurrent client connections; 0: unlimited.
    pub max_connections: usize,
    /// HTTP/2: a client connection with no open stream for this long is closed.
    #[serde(serialize_with = "crate::common::ser_secs")]
    pub http2_idle_timeout: Duration,
    /// HTTP/2: concurrent streams one client connection may open.
    pub http2_max_concurrent_streams: u32,
}

impl Default for DownstreamLimits {
    /// nginx's defaults.
    fn default() -> Self {
        DownstreamLimits {
            client_header_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
            client_max_body_size: 0,
            large_client_header_buffers: HeaderBuffers {
                count: 4,
                size: 8192,
            },
            max_connections: 0,
            http2_idle_timeout: Duration::from_secs(180),
            http2_max_concurrent_streams: 128,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 9080))],
            tls_listen: Vec::new(),
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            work_stealing: true,
            pid_file: "/tmp/weir.pid".into(),
            upgrade_sock: "/tmp/weir_upgrade.sock".into(),
            grace_period_seconds: 10,
            graceful_shutdown_timeout_seconds: 5,
            upstream_keepalive_pool_size: 1024,
            access_log: AccessLogConfig::default(),
            downstream: DownstreamLimits::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub api_key: Secret,
    /// Client networks allowed to call the Admin API; empty: every client that can reach
    /// `listen` (which defaults to loopback).
    pub allow_admin: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlConfig {
    pub listen: SocketAddr,
    /// Prefix of every metric name (`weir_`; `apisix_` gives APISIX's names).
    pub metric_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EtcdSource {
    /// `http(s)://host:port` URLs, tried in turn.
    pub endpoints: Vec<String>,
    pub prefix: String,
    /// The timeout of one etcd request (and of a connection attempt).
    #[serde(serialize_with = "crate::common::ser_secs")]
    pub timeout: Duration,
    /// etcd authentication: `user` and `password` together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// TLS to etcd (`https://` endpoints).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<EtcdTls>,
}

/// TLS settings for connections to etcd. Files are PEM and are read (and checked) when the
/// configuration is loaded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EtcdTls {
    /// CA bundle that verifies etcd's certificate; without it the system's trust store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Client certificate chain (etcd's `--client-cert-auth`), with `key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Verify etcd's certificate and host name (default true).
    pub verify: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigSource {
    File { watch: bool },
    Etcd(EtcdSource),
}

impl Default for ConfigSource {
    fn default() -> Self {
        ConfigSource::File { watch: true }
    }
}

pub fn parse_addr(v: &Value, p: &Path, cx: &mut Cx) -> Option<SocketAddr> {
    let s = reader::string(v, p, cx)?;
    match s.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            cx.err(
                p,
                format!(
                    "must be an address like \"0.0.0.0:9080\" or \"[::1]:9080\", got {}",
                    show(v)
                ),
            );
            None
        }
    }
}

pub fn parse_server(v: &Value, p: &Path, cx: &mut Cx) -> ServerConfig {
    let mut s = ServerConfig::default();
    let Some(mut o) = Obj::of(v, p, cx) else {
        return s;
    };
    if let Some((v, lp)) = o.take("listen") {
        if let Some(l) = reader::list(v, &lp, cx, 0, parse_addr) {
            s.listen = l;
        }
    }
    if let Some((v, lp)) = o.take("tls_listen") {
        let items = reader::list(v, &lp, cx, 0, |x, xp, cx| {
            let mut t = Obj::of(x, xp, cx)?;
            let addr = t
                .require(cx, "addr")
                .and_then(|(v, ap)| parse_addr(v, &ap, cx));
            let cert = t
                .require(cx, "certificate")
                .and_then(|(v, cp)| parse_id(v, &cp, cx));
            t.finish(cx);
            Some(TlsListen {
                addr: addr?,
                certificate: cert?,
            })
        });
        if let Some(items) = items {
            s.tls_listen = items;
        }
    }
    if let Some(n) = o.uint(cx, "threads", 1, 1024) {
        s.threads = n as usize;
    }
    s.work_stealing = o.bool(cx, "work_stealing", s.work_stealing);
    if let Some(f) = o.str(cx, "pid_file") {
        s.pid_file = f.to_owned();
    }
    if let Some(f) = o.str(cx, "upgrade_sock") {
        s.upgrade_sock = f.to_owned();
    }
    if let Some(n) = o.uint(cx, "grace_period_seconds", 0, 86400) {
        s.grace_period_seconds = n;
    }
    if let Some(n) = o.uint(cx, "graceful_shutdown_timeout_seconds", 0, 86400) {
        s.graceful_shutdown_timeout_seconds = n;
    }
    if let Some(n) = o.uint(cx, "upstream_keepalive_pool_size", 0, 1 << 24) {
        s.upstream_keepalive_pool_size = n as usize;
    }
    if let Some((v, ap)) = o.take("access_log") {
        s.access_log = parse_access_log(v, &ap, cx);
    }
    parse_downstream(&mut o, p, cx, &mut s.downstream);
    o.finish(cx);
    s
}

/// One day: no client needs longer, and it keeps every deadline far from overflow.
const MAX_TIMEOUT: Duration = Duration::from_secs(86400);

/// The downstream limits among `server`'s fields (fractions of a second allowed).
fn parse_downstream(o: &mut Obj<'_>, p: &Path, cx: &mut Cx, d: &mut DownstreamLimits) {
    let timeout = |o: &mut Obj<'_>, cx: &mut Cx, k: &str, slot: &mut Duration| {
        let Some((v, tp)) = o.take(k) else {
            return;
        };
        if let Some(t) = reader::secs(v, &tp, cx, Bound::Positive) {
            if t > MAX_TIMEOUT {
                cx.err(&tp, format!("must be <= 86400 seconds, got {}", show(v)));
            } else {
                *slot = t;
            }
        }
    };
    timeout(o, cx, "client_header_timeout", &mut d.client_header_timeout);
    timeout(o, cx, "client_body_timeout", &mut d.client_body_timeout);
    timeout(o, cx, "keepalive_timeout", &mut d.keepalive_timeout);
    timeout(o, cx, "send_timeout", &mut d.send_timeout);
    timeout(o, cx, "http2_idle_timeout", &mut d.http2_idle_timeout);
    if let Some(n) = o.uint(cx, "client_max_body_size", 0, u64::MAX >> 1) {
        d.client_max_body_size = n;
    }
    if let Some(n) = o.uint(cx, "max_connections", 0, 1 << 24) {
        d.max_connections = n as usize;
    }
    if let Some(n) = o.uint(cx, "http2_max_concurrent_streams", 1, 1 << 16) {
        d.http2_max_concurrent_streams = n as u32;
    }
    if let Some(mut b) = o.obj(cx, "large_client_header_buffers") {
        // 1 MiB heads at most: Pingora's own cap on a request head.
        if let Some(n) = b.uint(cx, "size", 64, 1 << 20) {
            d.large_client_header_buffers.size = n as usize;
        }
        if let Some(n) = b.uint(cx, "count", 1, 1024) {
            d.large_client_header_buffers.count = n as usize;
        }
        let total = d.large_client_header_buffers.count * d.large_client_header_buffers.size;
        if total > 1 << 20 {
            cx.err(
                &p.field("large_client_header_buffers"),
                format!("count × size must be <= 1048576 bytes, got {total}"),
            );
        }
        b.finish(cx);
    }
}

fn warn_if_public(addr: &SocketAddr, p: &Path, cx: &mut Cx, what: &str) {
    if !addr.ip().is_loopback() {
        cx.warn(
            p,
            format!("{what} listens on {addr}, which is not a loopback address"),
        );
    }
}

pub fn parse_admin(v: &Value, p: &Path, cx: &mut Cx) -> Option<AdminConfig> {
    let mut o = Obj::of(v, p, cx)?;
    let listen = match o.take("listen") {
        Some((v, lp)) => {
            let a = parse_addr(v, &lp, cx);
            if let Some(a) = &a {
                warn_if_public(a, &lp, cx, "the Admin API");
            }
            a
        }
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9180))),
    };
    // Never echo the key in an error.
    let key = match o.require(cx, "api_key") {
        Some((Value::String(s), _)) if !s.is_empty() => Some(Secret::new(s.clone())),
        Some((_, kp)) => {
            cx.err(&kp, "must be a non-empty string");
            None
        }
        None => None,
    };
    let allow_admin = match o.take("allow_admin") {
        Some((v, ap)) => reader::list(v, &ap, cx, 0, parse_cidr).unwrap_or_default(),
        None => Vec::new(),
    };
    o.finish(cx);
    Some(AdminConfig {
        listen: listen?,
        api_key: key?,
        allow_admin,
    })
}

/// A network in CIDR notation (`127.0.0.0/24`, `::1/128`) or a single address.
fn parse_cidr(v: &Value, p: &Path, cx: &mut Cx) -> Option<IpNet> {
    let s = reader::string(v, p, cx)?;
    if let Ok(n) = s.parse::<IpNet>() {
        return Some(n.trunc());
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(IpNet::from(ip));
    }
    cx.err(
        p,
        format!("must be an address or a CIDR like \"127.0.0.0/24\", got {s:?}"),
    );
    None
}

pub fn parse_control(v: &Value, p: &Path, cx: &mut Cx) -> Option<ControlConfig> {
    let mut o = Obj::of(v, p, cx)?;
    let listen = match o.take("listen") {
        Some((v, lp)) => parse_addr(v, &lp, cx),
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
    };
    let metric_prefix = match o.take("metric_prefix") {
        Some((v, mp)) => reader::string(v, &mp, cx).and_then(|s| {
            let ok = s.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            });
            if ok {
                Some(s.to_owned())
            } else {
                cx.err(
                    &mp,
                    format!("must be a Prometheus name prefix (letters, digits, '_' or ':', not starting with a digit), got {s:?}"),
                );
                None
            }
        }),
        None => Some("weir_".to_owned()),
    };
    o.finish(cx);
    Some(ControlConfig {
        listen: listen?,
        metric_prefix: metric_prefix?,
    })
}

pub fn parse_config_source(v: &Value, p: &Path, cx: &mut Cx) -> ConfigSource {
    let Some(mut o) = Obj::of(v, p, cx) else {
        return ConfigSource::default();
    };
    let file = o.obj(cx, "file").map(|mut f| {
        let watch = f.bool(cx, "watch", true);
        f.finish(cx);
        ConfigSource::File { watch }
    });
    let etcd = o.obj(cx, "etcd").and_then(|mut e| {
        let endpoints = e.require(cx, "endpoints").and_then(|(v, ep)| {
            reader::list(v, &ep, cx, 1, |x, xp, cx| {
                let s = reader::string(x, xp, cx)?;
                let ok = s
                    .parse::<http::Uri>()
                    .ok()
                    .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
                    .and_then(|u| u.authority().map(|a| a.port_u16().is_some()))
                    .unwrap_or(false);
                if !ok {
                    let shown = crate::discovery::mask_userinfo(s);
                    cx.err(xp, format!("must be http(s)://host:port, got {shown:?}"));
                    return None;
                }
                // Credentials in a URL end up in logs; never quote them.
                if s.parse::<http::Uri>()
                    .ok()
                    .and_then(|u| u.authority().map(|a| a.as_str().contains('@')))
                    .unwrap_or(false)
                {
                    cx.err(xp, "must not contain credentials (use user and password)");
                    return None;
                }
                Some(s.trim_end_matches('/').to_owned())
            })
        });
        let prefix = match e.take("prefix") {
            Some((v, pp)) => reader::string(v, &pp, cx).and_then(|s| {
                if s.starts_with('/') && s.len() > 1 && !s.ends_with('/') {
                    Some(s.to_owned())
                } else {
                    cx.err(
                        &pp,
                        format!("must start with \"/\" and not end with it, got {s:?}"),
                    );
                    None
                }
            }),
            None => Some("/weir".to_owned()),
        };
        let timeout = e
            .secs(cx, "timeout", Bound::Positive)
            .unwrap_or(Duration::from_secs(5));
        let user = e.str(cx, "user").map(str::to_owned);
        // Never echo the password in an error.
        let password = match e.take("password") {
            Some((Value::String(s), _)) => Some(Secret::new(s.clone())),
            Some((_, pp)) => {
                cx.err(&pp, "must be a string");
                None
            }
            None => None,
        };
        if user.is_some() != password.is_some() {
            let missing = if user.is_some() { "password" } else { "user" };
            cx.err(
                &p.field("etcd").field(missing),
                "required with user and password authentication",
            );
        }
        let tls = e.obj(cx, "tls").map(|t| parse_etcd_tls(t, cx));
        if let (Some(_), Some(eps)) = (&tls, &endpoints) {
            for (i, ep) in eps.iter().enumerate() {
                if !ep.starts_with("https://") {
                    cx.err(
                        &p.field("etcd").field("endpoints").index(i),
                        format!("must be https:// when tls is set, got {ep:?}"),
                    );
                }
            }
        }
        e.finish(cx);
        Some(ConfigSource::Etcd(EtcdSource {
            endpoints: endpoints?,
            prefix: prefix?,
            timeout,
            user,
            password,
            tls,
        }))
    });
    let both = o.has("file") && o.has("etcd");
    o.finish(cx);
    if both {
        cx.err(p, "file and etcd are mutually exclusive");
    }
    etcd.or(file).unwrap_or_default()
}

/// `config_source.etcd.tls`: the files must exist and hold what they claim.
fn parse_etcd_tls(mut t: Obj<'_>, cx: &mut Cx) -> EtcdTls {
    let file = |t: &mut Obj<'_>, cx: &mut Cx, k: &str| -> Option<(String, String, Path)> {
        let (v, fp) = t.take(k)?;
        let name = reader::string(v, &fp, cx)?;
        match std::fs::read_to_string(name) {
            // Absolute: the files are read again on every connection, and a daemon's working
            // directory is `/`.
            Ok(text) => {
                let abs = std::fs::canonicalize(name)
                    .map_or_else(|_| name.to_owned(), |p| p.display().to_string());
                Some((abs, text, fp))
            }
            Err(e) => {
                cx.err(&fp, format!("cannot read {name:?}: {e}"));
                None
            }
        }
    };
    let ca = file(&mut t, cx, "ca_file");
    if let Some((_, text, fp)) = &ca {
        if let Err(e) = crate::cert::check_cert_pem(text) {
            cx.err(fp, e);
        }
    }
    let cert = file(&mut t, cx, "cert_file");
    let key = file(&mut t, cx, "key_file");
    match (&cert, &key) {
        (Some((_, c, cp)), Some((_, k, kp))) => {
            if let Err(e) = crate::cert::check_cert_pem(c) {
                cx.err(cp, e);
            } else if let Err(e) = crate::cert::check_key_pair(c, k) {
                cx.err(kp, e);
            }
        }
        (Some((_, _, cp)), None) if !t.has("key_file") => {
            cx.err(cp, "needs key_file");
        }
        (None, Some((_, _, kp))) if !t.has("cert_file") => {
            cx.err(kp, "needs cert_file");
        }
        _ => {}
    }
    let verify = t.bool(cx, "verify", true);
    t.finish(cx);
    EtcdTls {
        ca_file: ca.map(|(n, _, _)| n),
        cert_file: cert.map(|(n, _, _)| n),
        key_file: key.map(|(n, _, _)| n),
        verify,
    }
}
