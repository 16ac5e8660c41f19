//! `checks.active` and `checks.passive` with APISIX's defaults (docs/configuration.md).

use crate::common::{ser_secs, valid_host_syntax, Method, METHODS};
use crate::path::Path;
use crate::reader::{self, Bound, Cx, Obj};
use serde::Serialize;
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckType {
    Http,
    Https,
    Tcp,
}

impl CheckType {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckType::Http => "http",
            CheckType::Https => "https",
            CheckType::Tcp => "tcp",
        }
    }
}

const CHECK_TYPES: &[(&str, CheckType)] = &[
    ("http", CheckType::Http),
    ("https", CheckType::Https),
    ("tcp", CheckType::Tcp),
];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Checks {
    pub active: ActiveCheck,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveCheck>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveCheck {
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
            kind: CheckType::Http,
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
            kind: CheckType::Http,
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

pub fn parse_checks(v: &Value, p: &Path, cx: &mut Cx) -> Option<Checks> {
    let mut o = Obj::of(v, p, cx)?;
    let before = cx.errors.len();
    let active = match o.take("active") {
        Some((v, ap)) => parse_active(v, &ap, cx),
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

fn parse_active(v: &Value, p: &Path, cx: &mut Cx) -> Option<ActiveCheck> {
    let mut o = Obj::of(v, p, cx)?;
    let mut a = ActiveCheck::default();
    if let Some(t) = o.enumeration(cx, "type", CHECK_TYPES) {
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
    if let Some(t) = o.enumeration(cx, "type", CHECK_TYPES) {
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
        let c = parse_checks(&json!({"active": {}}), &Path::root(), &mut cx).unwrap();
        assert_eq!(c.active, ActiveCheck::default());
        assert_eq!(c.active.unhealthy.tcp_failures, 2);
        assert!(c.passive.is_none());
        let c = parse_checks(
            &json!({"active": {}, "passive": {}}),
            &Path::root(),
            &mut cx,
        )
        .unwrap();
        assert_eq!(c.passive, Some(PassiveCheck::default()));
        assert!(cx.errors.is_empty());
    }

    #[test]
    fn passive_only_is_rejected() {
        let mut cx = Cx::default();
        let p = Path::root().field("checks");
        assert!(parse_checks(&json!({"passive": {}}), &p, &mut cx).is_none());
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
        parse_checks(&v, &Path::root().field("checks"), &mut cx);
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
}
