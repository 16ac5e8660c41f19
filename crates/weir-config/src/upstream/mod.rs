//! The upstream object (docs/configuration.md): standalone with an `id`, or inline in a route or
//! service without one.

pub mod checks;
pub mod hash;
pub mod nodes;
pub mod resilience;
pub mod tls;

use crate::common::{parse_id, ser_secs, valid_host_syntax, Id, Meta, Timeout};
use crate::discovery::{DiscoveryType, Env};
use crate::error::show;
use crate::path::Path;
use crate::reader::{self, Bound, Cx, Obj};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

pub use checks::{ActiveCheck, CheckType, Checks, PassiveCheck};
pub use hash::{HashOn, Part, Template, Var};
pub use nodes::Node;
pub use resilience::{FailurePercentage, Limits, OutlierDetection, RetryBudget, SlowStart};
pub use tls::{ClientCert, UpstreamTls};

/// Load-balancing algorithm (`type`): a built-in, or an algorithm the embedding program
/// registered by name (docs/algorithms.md, "Custom algorithms").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LbType {
    RoundRobin,
    Chash,
    LeastConn,
    Ewma,
    /// A registered algorithm; its parameters are [`Upstream::lb_params`].
    Custom(String),
}

const LB_TYPES: &[(&str, LbType)] = &[
    ("roundrobin", LbType::RoundRobin),
    ("chash", LbType::Chash),
    ("least_conn", LbType::LeastConn),
    ("ewma", LbType::Ewma),
];

impl LbType {
    /// The name an upstream's `type` gives it.
    pub fn as_str(&self) -> &str {
        match self {
            LbType::RoundRobin => "roundrobin",
            LbType::Chash => "chash",
            LbType::LeastConn => "least_conn",
            LbType::Ewma => "ewma",
            LbType::Custom(name) => name,
        }
    }

    /// The built-in called `name`.
    pub fn builtin(name: &str) -> Option<LbType> {
        LB_TYPES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t.clone())
    }
}

impl Serialize for LbType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Whether `name` cannot name a registered algorithm: a built-in's, or a member of the
/// upstream object (the algorithm's parameter block is the member named like it).
pub fn reserved_algorithm_name(name: &str) -> bool {
    LbType::builtin(name).is_some() || UPSTREAM_MEMBERS.contains(&name)
}

/// Every member an upstream object may have.
const UPSTREAM_MEMBERS: &[&str] = &[
    "id",
    "name",
    "desc",
    "labels",
    "create_time",
    "update_time",
    "type",
    "scheme",
    "nodes",
    "service_name",
    "discovery_type",
    "discovery_args",
    "hash_on",
    "key",
    "hash_balance_factor",
    "retries",
    "retry_timeout",
    "retry_on_status",
    "timeout",
    "pass_host",
    "upstream_host",
    "keepalive_pool",
    "checks",
    "tls",
    "tls_verify",
    "ca_certificates",
    "client_certificate",
    "client_cert_id",
    "client_cert",
    "client_key",
    "outlier_detection",
    "slow_start",
    "limits",
    "healthy_panic_threshold",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    Https,
    Grpc,
    Grpcs,
}

const SCHEMES: &[(&str, Scheme)] = &[
    ("http", Scheme::Http),
    ("https", Scheme::Https),
    ("grpc", Scheme::Grpc),
    ("grpcs", Scheme::Grpcs),
];

impl Scheme {
    pub fn default_port(self) -> u16 {
        if self.is_tls() {
            443
        } else {
            80
        }
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Https | Scheme::Grpcs)
    }

    pub fn is_grpc(self) -> bool {
        matches!(self, Scheme::Grpc | Scheme::Grpcs)
    }
}

/// Which Host header goes upstream (docs/data-path.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PassHost {
    Pass,
    Node,
    Rewrite(String),
}

/// `keepalive_pool`: idle connections kept per pool key, their idle lifetime, and requests
/// per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeepalivePool {
    pub size: usize,
    #[serde(serialize_with = "ser_secs")]
    pub idle_timeout: Duration,
    pub requests: u64,
}

impl Default for KeepalivePool {
    fn default() -> Self {
        KeepalivePool {
            size: 320,
            idle_timeout: Duration::from_secs(60),
            requests: 1000,
        }
    }
}

/// Discovery instead of static nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoveryRef {
    pub service_name: String,
    /// The registry's name: a built-in (`consul`, `nacos`, `kubernetes`, `dns`) or one an
    /// embedder registered.
    pub discovery_type: String,
    /// Nacos only; defaults `public` / `DEFAULT_GROUP`.
    pub namespace_id: String,
    pub group_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Targets {
    Nodes(Vec<Node>),
    Discovery(DiscoveryRef),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Upstream {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    #[serde(flatten)]
    pub meta: Meta,
    #[serde(rename = "type")]
    pub lb: LbType,
    /// A registered algorithm's parameters: its `<type>` block, `{}` when absent, already
    /// checked by its schema. `None` for the built-ins (see [`Upstream::algorithm_params`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lb_params: Option<Value>,
    pub targets: Targets,
    pub scheme: Scheme,
    /// The chash key; `Some` exactly when `lb` is `Chash`.
    pub hash_on: Option<HashOn>,
    pub hash_balance_factor: Option<f64>,
    /// `None`: the snapshot's node count − 1.
    pub retries: Option<u32>,
    /// `None`: no deadline (`retry_timeout: 0`).
    pub retry_timeout: Option<Duration>,
    pub retry_on_status: Vec<u16>,
    /// `None`: 60 s each unless the route sets `timeout`.
    pub timeout: Option<Timeout>,
    pub pass_host: PassHost,
    pub keepalive_pool: KeepalivePool,
    pub checks: Option<Checks>,
    pub tls: UpstreamTls,
    /// Eject nodes that keep failing (Weir extension). `None`: never.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// Ramp the weight of a node that joins or comes back (Weir extension). `None`: full
    /// weight at once. Ignored by `chash`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<SlowStart>,
    /// Caps on requests and retries in flight (Weir extension). `None`: unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// Percent (0..100) of usable nodes below which the upstream ignores health and uses
    /// every node (Weir extension). 0: off.
    #[serde(skip_serializing_if = "is_zero")]
    pub healthy_panic_threshold: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Upstream {
    /// The parameters given to the upstream's algorithm when its levels are built: a
    /// registered algorithm's block (`{}` when absent); for `chash`
    /// `{"hash_balance_factor": f}` (or `{}`); `{}` for the other built-ins.
    pub fn algorithm_params(&self) -> Value {
        match (&self.lb, &self.lb_params, self.hash_balance_factor) {
            (LbType::Custom(_), Some(v), _) => v.clone(),
            (LbType::Chash, _, Some(f)) => serde_json::json!({ "hash_balance_factor": f }),
            _ => Value::Object(Default::default()),
        }
    }

    /// Static nodes, or an empty slice for a discovered upstream.
    pub fn nodes(&self) -> &[Node] {
        match &self.targets {
            Targets::Nodes(n) => n,
            Targets::Discovery(_) => &[],
        }
    }
}

/// Whether the upstream being read is standalone (needs `id`) or inline (has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Standalone,
    Inline,
}

/// Read an upstream object. Cross references (certificate ids) are checked by the document.
pub fn parse_upstream(
    v: &Value,
    p: &Path,
    cx: &mut Cx,
    env: &Env,
    placement: Placement,
) -> Option<Upstream> {
    let mut o = Obj::of(v, p, cx)?;
    let before = cx.errors.len();
    let id = match (placement, o.take("id")) {
        (Placement::Standalone, Some((v, ip))) => parse_id(v, &ip, cx),
        (Placement::Standalone, None) => {
            cx.err(&p.field("id"), "required");
            None
        }
        (Placement::Inline, Some((_, ip))) => {
            cx.err(&ip, "not allowed in an inline upstream");
            None
        }
        (Placement::Inline, None) => None,
    };
    let meta = Meta::parse(&mut o, cx);
    let (lb, lb_params) = parse_lb(&mut o, cx, env);
    let scheme = o.enumeration(cx, "scheme", SCHEMES).unwrap_or(Scheme::Http);

    let targets = parse_targets(&mut o, cx, env, scheme);

    let hash_on_v = o.take("hash_on");
    let key_v = o.take("key");
    let factor_v = o.take("hash_balance_factor");
    let (hash_on, hash_balance_factor) = if lb == Some(LbType::Chash) {
        let h = hash::parse_hash_on(hash_on_v, key_v, p, cx);
        let f = factor_v.and_then(|(v, fp)| {
            let f = reader::number(v, &fp, cx)?;
            if f < 1.0 {
                cx.err(&fp, format!("must be >= 1.0, got {f}"));
                return None;
            }
            Some(f)
        });
        (h, f)
    } else {
        (None, None) // accepted and ignored on other types
    };

    let retries = o.uint(cx, "retries", 0, u32::MAX as u64).map(|n| n as u32);
    let retry_timeout = o
        .secs(cx, "retry_timeout", Bound::NonNegative)
        .filter(|d| !d.is_zero());
    let retry_on_status = o
        .take("retry_on_status")
        .and_then(|(v, rp)| reader::status_list(v, &rp, cx, 500, 599, 0))
        .unwrap_or_default();
    let timeout = o
        .take("timeout")
        .and_then(|(v, tp)| Timeout::parse(v, &tp, cx));

    let pass_host = parse_pass_host(&mut o, cx);
    let keepalive_pool = parse_keepalive(&mut o, cx);
    let checks = o
        .take("checks")
        .and_then(|(v, cp)| checks::parse_checks(v, &cp, cx, env));
    let tls = UpstreamTls::parse(&mut o, cx);
    let resilience = resilience::parse(&mut o, cx, lb.as_ref());
    if tls.is_configured() && !scheme.is_tls() {
        cx.warn(
            p,
            "tls_verify, ca_certificates and client certificates are ignored on a plaintext scheme",
        );
    }
    o.finish(cx);
    if cx.errors.len() != before {
        return None;
    }
    Some(Upstream {
        id,
        meta,
        lb: lb?,
        lb_params,
        targets: targets?,
        scheme,
        hash_on,
        hash_balance_factor,
        retries,
        retry_timeout,
        retry_on_status,
        timeout,
        pass_host,
        keepalive_pool,
        checks,
        tls,
        outlier_detection: resilience.outlier_detection,
        slow_start: resilience.slow_start,
        limits: resilience.limits,
        healthy_panic_threshold: resilience.healthy_panic_threshold,
    })
}

/// `type`, and a registered algorithm's `<type>` block checked by its schema. `None` (an
/// error recorded) for an unknown name; no `type` is `roundrobin`.
fn parse_lb(o: &mut Obj<'_>, cx: &mut Cx, env: &Env) -> (Option<LbType>, Option<Value>) {
    let Some((v, tp)) = o.take("type") else {
        return (Some(LbType::RoundRobin), None);
    };
    let name = v.as_str().unwrap_or_default();
    if let Some(t) = LbType::builtin(name) {
        return (Some(t), None);
    }
    let registered = env
        .ext
        .algorithm_schema(name)
        .filter(|_| !UPSTREAM_MEMBERS.contains(&name));
    let Some(schema) = registered else {
        // Built-ins in their documented order, then the registered names, sorted.
        let names: Vec<&str> = LB_TYPES
            .iter()
            .map(|(n, _)| *n)
            .chain(
                env.ext
                    .algorithm_names()
                    .filter(|n| !reserved_algorithm_name(n)),
            )
            .collect();
        cx.err(
            &tp,
            format!("must be one of {}, got {}", names.join(", "), show(v)),
        );
        return (None, None);
    };
    let schema = schema.cloned();
    let (params, pp) = match o.take(name) {
        Some((pv, pp)) => (pv.clone(), pp),
        None => (Value::Object(Default::default()), o.path.field(name)),
    };
    if !params.is_object() {
        cx.err(&pp, format!("must be an object, got {}", show(&params)));
        return (None, None);
    }
    let errors = schema.map(|s| s.check(&params)).unwrap_or_default();
    let ok = errors.is_empty();
    for (rel, reason) in errors {
        cx.err(&pp.join(&rel), reason);
    }
    (Some(LbType::Custom(name.to_owned())), ok.then_some(params))
}

fn parse_targets(o: &mut Obj<'_>, cx: &mut Cx, env: &Env, scheme: Scheme) -> Option<Targets> {
    let nodes = o.take("nodes");
    let name = o.take("service_name");
    let dtype = o.take("discovery_type");
    let args = o.take("discovery_args");
    match (nodes, name.is_some() || dtype.is_some()) {
        (Some((v, np)), false) => {
            nodes::parse_nodes(v, &np, cx, scheme.default_port()).map(Targets::Nodes)
        }
        (Some(_), true) => {
            cx.err(
                &o.path,
                "nodes and service_name/discovery_type are mutually exclusive",
            );
            None
        }
        (None, false) => {
            cx.err(
                &o.path.field("nodes"),
                "required (or service_name with discovery_type)",
            );
            None
        }
        (None, true) => parse_discovery_ref(o, cx, env, name, dtype, args),
    }
}

fn parse_discovery_ref(
    o: &Obj<'_>,
    cx: &mut Cx,
    env: &Env,
    name: Option<(&Value, Path)>,
    dtype: Option<(&Value, Path)>,
    args: Option<(&Value, Path)>,
) -> Option<Targets> {
    let Some((nv, np)) = name else {
        cx.err(
            &o.path.field("service_name"),
            "required with discovery_type",
        );
        return None;
    };
    let Some((dv, dp)) = dtype else {
        cx.err(
            &o.path.field("discovery_type"),
            "required with service_name",
        );
        return None;
    };
    let service_name = reader::string_len(nv, &np, cx, 1, 256);
    let names = env.discovery_type_names();
    let discovery_type = match dv.as_str() {
        Some(n) if names.iter().any(|x| x == n) => Some(n.to_owned()),
        _ => {
            cx.err(
                &dp,
                format!("must be one of {}, got {}", names.join(", "), show(dv)),
            );
            None
        }
    };
    let builtin = discovery_type.as_deref().and_then(DiscoveryType::from_name);
    let (mut namespace_id, mut group_name) = ("public".to_owned(), "DEFAULT_GROUP".to_owned());
    if let Some((av, ap)) = args {
        if discovery_type.is_some() && builtin != Some(DiscoveryType::Nacos) {
            cx.err(&ap, "only allowed with discovery_type nacos");
        } else if let Some(mut a) = Obj::of(av, &ap, cx) {
            if let Some(s) = a.str(cx, "namespace_id") {
                namespace_id = s.to_owned();
            }
            if let Some(s) = a.str(cx, "group_name") {
                group_name = s.to_owned();
            }
            a.finish(cx);
        }
    }
    let (service_name, discovery_type) = (service_name?, discovery_type?);
    if let Some(t) = builtin {
        if !env.has_discovery(t) {
            cx.err(
                &dp,
                format!("{} is not configured under discovery", t.as_str()),
            );
            return None;
        }
        if let Err(e) = env.check_service_name(t, service_name) {
            cx.err(&np, e);
            return None;
        }
    }
    Some(Targets::Discovery(DiscoveryRef {
        service_name: service_name.to_owned(),
        discovery_type,
        namespace_id,
        group_name,
    }))
}

impl DiscoveryRef {
    /// The built-in registry it names, if it names one.
    pub fn builtin(&self) -> Option<DiscoveryType> {
        DiscoveryType::from_name(&self.discovery_type)
    }
}

fn parse_pass_host(o: &mut Obj<'_>, cx: &mut Cx) -> PassHost {
    const MODES: &[(&str, u8)] = &[("pass", 0), ("node", 1), ("rewrite", 2)];
    let mode = o.enumeration(cx, "pass_host", MODES).unwrap_or(0);
    let host = o.take("upstream_host").and_then(|(v, hp)| {
        let s = reader::string(v, &hp, cx)?;
        if !s.is_empty() && !valid_host_syntax(s) {
            cx.err(&hp, format!("invalid host {s:?}"));
            return None;
        }
        Some(s.to_owned())
    });
    match mode {
        1 => PassHost::Node,
        2 => match host.filter(|h| !h.is_empty()) {
            Some(h) => PassHost::Rewrite(h),
            None => {
                cx.err(
                    &o.path.field("upstream_host"),
                    "required when pass_host is rewrite",
                );
                PassHost::Pass
            }
        },
        _ => PassHost::Pass,
    }
}

fn parse_keepalive(o: &mut Obj<'_>, cx: &mut Cx) -> KeepalivePool {
    let mut k = KeepalivePool::default();
    if let Some(mut ko) = o.obj(cx, "keepalive_pool") {
        if let Some(n) = ko.uint(cx, "size", 1, u32::MAX as u64) {
            k.size = n as usize;
        }
        if let Some(d) = ko.secs(cx, "idle_timeout", Bound::NonNegative) {
            k.idle_timeout = d;
        }
        if let Some(n) = ko.uint(cx, "requests", 1, u64::MAX) {
            k.requests = n;
        }
        ko.finish(cx);
    }
    k
}

#[cfg(test)]
mod tests;
