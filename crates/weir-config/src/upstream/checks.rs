//! `checks.active` and `checks.passive` with APISIX's defaults (docs/configuration.md).

use crate::common::{ser_secs, valid_host_syntax, Method, METHODS};
use crate::discovery::Env;
use crate::error::show;
use crate::path::Path;
use crate::reader::{self, Bound, Cx, Obj};
use serde::Serialize;
use serde_json::Value;
use std::borrow::Cow;
use std::time::Duration;

/// `checks.active.type` (and `checks.passive.type`): the name of a health check. `http`,
/// `https` and `tcp` are built in; an embedding program registers more by name
/// ([`Extensions::check`](crate::Extensions::check) for validation, and the check itself in
/// the health table). A custom type takes every `checks.active` option, validated as for the
/// built-ins, and its check receives them all (see docs/health-checks.md).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct CheckType(Cow<'static, str>);

impl CheckType {
    pub const HTTP: CheckType = CheckType(Cow::Borrowed("http"));
    pub const HTTPS: CheckType = CheckType(Cow::Borrowed("https"));
    pub const TCP: CheckType = CheckType(Cow::Borrowed("tcp"));
    /// The built-in names, sorted.
    pub const BUILTIN: [&'static str; 3] = ["http", "https", "tcp"];

    /// The type named `name` (built in or registered; validation has checked which).
    pub fn new(name: &str) -> Self {
        match Self::BUILTIN.iter().find(|b| **b == name) {
            Some(b) => CheckType(Cow::Borrowed(b)),
            None => CheckType(Cow::Owned(name.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `http`, `https` or `tcp`.
    pub fn is_builtin(&self) -> bool {
        Self::BUILTIN.contains(&self.as_str())
    }
}

impl std::fmt::Display for CheckType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Read `type` from `o` when present: one of `names` (sorted), else an error listing them all.
fn check_type(o: &mut Obj<'_>, cx: &mut Cx, names: &[&str]) -> Option<CheckType> {
    let (v, p) = o.take("type")?;
    match v {
        Value::String(s) if names.contains(&s.as_str()) => Some(CheckType::new(s)),
        _ => {
            cx.err(
                &p,
                format!("must be one of {}, got {}", names.join(", "), show(v)),
            );
            None
        }
    }
}

/// Every `checks.active.type` `env` accepts: the built-ins and the registered names, sorted.
pub fn active_check_names(env: &Env) -> Vec<&str> {
    let mut names: Vec<&str> = CheckType::BUILTIN
        .iter()
        .copied()
        .chain(env.ext.check_names())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Checks {
    pub active: ActiveCheck,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveCheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveCheck {
    /// `http` (default), `https`, `tcp`, or a registered name.
    #[serde(rename = "type")]
    pub kind: CheckType,
    #[serde(serialize_with = "ser_secs")]
    pub timeout: Duration,
    pub concurrency: u32,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub http_method: Method,
    pub http_path: String,
    pub http_req_body: String,
    pub https_verify_certificate: bool,
    /// `(name, value)` pairs from `"Name: value"` items.
    pub req_headers: Vec<(String, String)>,
    pub healthy: ActiveHealthy,
    pub unhealthy: ActiveUnhealthy,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveHealthy {
    #[serde(serialize_with = "ser_secs")]
    pub interval: Duration,
    pub http_statuses: Vec<u16>,
    pub successes: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveUnhealthy {
    #[serde(serialize_with = "ser_secs")]
    pub interval: Duration,
    pub http_statuses: Vec<u16>,
    pub http_failures: u8,
    pub tcp_failures: u8,
    pub timeouts: u8,
}

/// Passive thresholds. A threshold of 0 disables that kind of report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassiveCheck {
    /// `http` (default), `https` or `tcp`: passive reports come from proxied traffic, never
    /// from a registered check, so only the built-in names are accepted.
    #[serde(rename = "type")]
    pub kind: CheckType,
    pub healthy: PassiveHealthy,
    pub unhealthy: PassiveUnhealthy,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassiveHealthy {
    pub http_statuses: Vec<u16>,
    pub successes: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassiveUnhealthy {
    pub http_statuses: Vec<u16>,
    pub http_failures: u8,
    pub tcp_failures: u8,
    pub timeouts: u8,
}

impl Default for ActiveCheck {
    fn default() -> Self {
        ActiveCheck {
            kind: CheckType::HTTP,
            timeout: Duration::from_secs(1),
            concurrency: 10,
            host: None,
            port: None,
            http_method: Method::Get,
            http_path: "/".into(),
            http_req_body: String::new(),
            https_verify_certificate: true,
            req_headers: Vec::new(),
            healthy: ActiveHealthy {
                interval: Duration::from_secs(1),
                http_statuses: vec![200, 302],
                successes: 2,
            },
            unhealthy: ActiveUnhealthy {
                interval: Duration::from_secs(1),
                http_statuses: vec![429, 404, 500, 501, 502, 503, 504, 505],
                http_failures: 5,
                tcp_failures: 2,
                timeouts: 3,
            },
        }
    }
}

impl Default for PassiveCheck {
    /// The passive defaults, which also govern reports between retries when `passive` is absent.
    fn default() -> Self {
        PassiveCheck {
            kind: CheckType::HTTP,
            healthy: PassiveHealthy {
                http_statuses: vec![
                    200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305,
                    306, 307, 308,
                ],
                successes: 5,
            },
            unhealthy: PassiveUnhealthy {
                http_statuses: vec![429, 500, 503],
                http_failures: 5,
                tcp_failures: 2,
                timeouts: 7,
            },
        }
    }
}

fn threshold(o: &mut Obj<'_>, cx: &mut Cx, k: &str, lo: u64, into: &mut u8) {
    if let Some(n) = o.uint(cx, k, lo, 254) {
        *into = n as u8;
    }
}

fn statuses(o: &mut Obj<'_>, cx: &mut Cx, into: &mut Vec<u16>) {
    if let Some((v, p)) = o.take("http_statuses") {
        if let Some(s) = reader::status_list(v, &p, cx, 200, 599, 1) {
            *into = s;
        }
    }
}

fn interval(o: &mut Obj<'_>, cx: &mut Cx, into: &mut Duration) {
    if let Some(n) = o.uint(cx, "interval", 1, u32::MAX as u64) {
        *into = Duration::from_secs(n);
    }
}

pub fn parse_checks(v: &Value, p: &Path, cx: &mut Cx, env: &Env) -> Option<Checks> {
    let mut o = Obj::of(v, p, cx)?;
    let before = cx.errors.len();
    let active = match o.take("active") {
        Some((v, ap)) => parse_active(v, &ap, cx, env),
        None => {
            cx.err(
                &p.field("active"),
                "required (passive checks need active checks to recover nodes)",
            );
            None
        }
    };
    let passive = o
        .take("passive")
        .and_then(|(v, pp)| parse_passive(v, &pp, cx));
    o.finish(cx);
    if cx.errors.len() != before {
        return None;
    }
    Some(Checks {
        active: active?,
        passive,
    })
}

fn parse_active(v: &Value, p: &Path, cx: &mut Cx, env: &Env) -> Option<ActiveCheck> {
    let mut o = Obj::of(v, p, cx)?;
    let mut a = ActiveCheck::default();
    // Every other option is read (and validated) whatever the type: a registered check
    // receives them all, as the built-ins do (tcp ignores the HTTP ones, as in APISIX).
    if let Some(t) = check_type(&mut o, cx, &active_check_names(env)) {
        a.kind = t;
    }
    if let Some(t) = o.secs(cx, "timeout", Bound::Positive) {
        a.timeout = t;
    }
    if let Some(n) = o.uint(cx, "concurrency", 1, u32::MAX as u64) {
        a.concurrency = n as u32;
    }
    if let Some((v, hp)) = o.take("host") {
        match reader::string(v, &hp, cx) {
            Some(s) if valid_host_syntax(s) => a.host = Some(s.to_owned()),
            Some(s) => cx.err(&hp, format!("invalid host {s:?}")),
            None => {}
        }
    }
    if let Some(n) = o.uint(cx, "port", 1, 65535) {
        a.port = Some(n as u16);
    }
    if let Some(m) = o.enumeration(cx, "http_method", METHODS) {
        a.http_method = m;
    }
    if let Some((v, pp)) = o.take("http_path") {
        match reader::string(v, &pp, cx) {
            Some(s) if s.starts_with('/') => a.http_path = s.to_owned(),
            Some(s) => cx.err(&pp, format!("must start with \"/\", got {s:?}")),
            None => {}
        }
    }
    if let Some(s) = o.str(cx, "http_req_body") {
        a.http_req_body = s.to_owned();
    }
    a.https_verify_certificate = o.bool(cx, "https_verify_certificate", true);
    if let Some((v, hp)) = o.take("req_headers") {
        if let Some(h) = reader::list(v, &hp, cx, 1, parse_header_line) {
            a.req_headers = h;
        }
    }
    if let Some(mut h) = o.obj(cx, "healthy") {
        interval(&mut h, cx, &mut a.healthy.interval);
        statuses(&mut h, cx, &mut a.healthy.http_statuses);
        threshold(&mut h, cx, "successes", 1, &mut a.healthy.successes);
        h.finish(cx);
    }
    if let Some(mut u) = o.obj(cx, "unhealthy") {
        interval(&mut u, cx, &mut a.unhealthy.interval);
        statuses(&mut u, cx, &mut a.unhealthy.http_statuses);
        threshold(
            &mut u,
            cx,
            "http_failures",
            1,
            &mut a.unhealthy.http_failures,
        );
        threshold(&mut u, cx, "tcp_failures", 1, &mut a.unhealthy.tcp_failures);
        threshold(&mut u, cx, "timeouts", 1, &mut a.unhealthy.timeouts);
        u.finish(cx);
    }
    o.finish(cx);
    Some(a)
}

fn parse_passive(v: &Value, p: &Path, cx: &mut Cx) -> Option<PassiveCheck> {
    let mut o = Obj::of(v, p, cx)?;
    let mut c = PassiveCheck::default();
    if let Some(t) = check_type(&mut o, cx, &CheckType::BUILTIN) {
        c.kind = t;
    }
    if let Some(mut h) = o.obj(cx, "healthy") {
        statuses(&mut h, cx, &mut c.healthy.http_statuses);
        threshold(&mut h, cx, "successes", 0, &mut c.healthy.successes);
        h.finish(cx);
    }
    if let Some(mut u) = o.obj(cx, "unhealthy") {
        statuses(&mut u, cx, &mut c.unhealthy.http_statuses);
        threshold(
            &mut u,
            cx,
            "http_failures",
            0,
            &mut c.unhealthy.http_failures,
        );
        threshold(&mut u, cx, "tcp_failures", 0, &mut c.unhealthy.tcp_failures);
        threshold(&mut u, cx, "timeouts", 0, &mut c.unhealthy.timeouts);
        u.finish(cx);
    }
    o.finish(cx);
    Some(c)
}

/// `"Name: value"` → `(Name, value)`; the name must be an HTTP token.
fn parse_header_line(v: &Value, p: &Path, cx: &mut Cx) -> Option<(String, String)> {
    let s = reader::string(v, p, cx)?;
    let parsed = s.split_once(':').and_then(|(name, value)| {
        let name = name.trim();
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        token.then(|| (name.to_owned(), value.trim().to_owned()))
    });
    if parsed.is_none() {
        cx.err(p, format!("must be \"Name: value\", got {s:?}"));
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults() {
        let mut cx = Cx::default();
        let env = Env::default();
        let c = parse_checks(&json!({"active": {}}), &Path::root(), &mut cx, &env).unwrap();
        assert_eq!(c.active, ActiveCheck::default());
        assert_eq!(c.active.unhealthy.tcp_failures, 2);
        assert!(c.passive.is_none());
        let c = parse_checks(
            &json!({"active": {}, "passive": {}}),
            &Path::root(),
            &mut cx,
            &env,
        )
        .unwrap();
        assert_eq!(c.passive, Some(PassiveCheck::default()));
        assert!(cx.errors.is_empty());
    }

    #[test]
    fn passive_only_is_rejected() {
        let mut cx = Cx::default();
        let p = Path::root().field("checks");
        assert!(parse_checks(&json!({"passive": {}}), &p, &mut cx, &Env::default()).is_none());
        assert_eq!(
            cx.errors[0].to_string(),
            "checks.active: required (passive checks need active checks to recover nodes)"
        );
    }

    #[test]
    fn ranges() {
        let mut cx = Cx::default();
        let v = json!({"active": {"healthy": {"successes": 0, "http_statuses": [200, 200]},
                       "req_headers": ["X-Probe: 1", "bad"]},
                       "passive": {"unhealthy": {"timeouts": 0, "tcp_failures": 255}}});
        parse_checks(&v, &Path::root().field("checks"), &mut cx, &Env::default());
        let msgs: Vec<String> = cx.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            [
                "checks.active.req_headers[1]: must be \"Name: value\", got \"bad\"",
                "checks.active.healthy.http_statuses[1]: duplicate item 200",
                "checks.active.healthy.successes: must be 1..254, got 0",
                "checks.passive.unhealthy.tcp_failures: must be 0..254, got 255",
            ]
        );
    }

    fn env_with(names: &[&str]) -> Env {
        Env {
            ext: names
                .iter()
                .fold(crate::Extensions::new(), |e, n| e.check(n)),
            ..Env::default()
        }
    }

    fn active_type(v: Value, env: &Env) -> Result<ActiveCheck, Vec<String>> {
        let mut cx = Cx::default();
        let p = Path::root().field("checks");
        match parse_checks(&json!({"active": v}), &p, &mut cx, env) {
            Some(c) if cx.errors.is_empty() => Ok(c.active),
            _ => Err(cx.errors.iter().map(|e| e.to_string()).collect()),
        }
    }

    #[test]
    fn registered_check_types_are_accepted_and_listed_when_a_name_is_unknown() {
        let env = env_with(&["redis", "banner"]);
        let a = active_type(json!({"type": "redis"}), &env).expect("registered");
        assert_eq!(a.kind.as_str(), "redis");
        assert!(!a.kind.is_builtin());
        // Built-ins stay built in, and the default is still http.
        let a = active_type(json!({"type": "https"}), &env).expect("built in");
        assert_eq!(a.kind, CheckType::HTTPS);
        assert_eq!(
            active_type(json!({}), &env).expect("default").kind,
            CheckType::HTTP
        );
        assert_eq!(
            active_type(json!({"type": "grpc"}), &env).unwrap_err(),
            ["checks.active.type: must be one of banner, http, https, redis, tcp, got \"grpc\""]
        );
        assert_eq!(
            active_type(json!({"type": 7}), &Env::default()).unwrap_err(),
            ["checks.active.type: must be one of http, https, tcp, got 7"]
        );
        // Registered names are not valid where no embedder registered them.
        assert!(active_type(json!({"type": "redis"}), &Env::default()).is_err());
    }

    #[test]
    fn a_custom_type_takes_and_validates_every_active_option() {
        let env = env_with(&["redis"]);
        let a = active_type(
            json!({"type": "redis", "http_path": "/db/0", "req_headers": ["Auth: x"],
                   "healthy": {"http_statuses": [200]}, "port": 6379}),
            &env,
        )
        .expect("valid");
        assert_eq!(
            (a.http_path.as_str(), a.port, a.healthy.http_statuses),
            ("/db/0", Some(6379), vec![200])
        );
        assert_eq!(
            active_type(json!({"type": "redis", "http_path": "db"}), &env).unwrap_err(),
            ["checks.active.http_path: must start with \"/\", got \"db\""]
        );
    }

    #[test]
    fn passive_types_are_the_built_ins_only() {
        let mut cx = Cx::default();
        let v = json!({"active": {"type": "redis"}, "passive": {"type": "redis"}});
        parse_checks(
            &v,
            &Path::root().field("checks"),
            &mut cx,
            &env_with(&["redis"]),
        );
        let msgs: Vec<String> = cx.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            ["checks.passive.type: must be one of http, https, tcp, got \"redis\""]
        );
    }

    #[test]
    fn the_type_serializes_as_its_name() {
        let a = ActiveCheck {
            kind: CheckType::new("redis"),
            ..ActiveCheck::default()
        };
        let v = serde_json::to_value(&a).expect("json");
        assert_eq!(v["type"], "redis");
        assert_eq!(
            serde_json::to_value(ActiveCheck::default()).expect("json")["type"],
            "http"
        );
    }
}
