//! Pieces shared by several resource kinds: ids, metadata, host syntax, methods, timeouts.

use crate::error::show;
use crate::path::Path;
use crate::reader::{self, Bound, Cx, Obj};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// A resource id: a string of 1..64 characters from `[a-zA-Z0-9-_.]`, or an integer ≥ 1
/// (kept in its string form; ids compare as strings).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Id(pub String);

impl Id {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id(s.to_owned())
    }
}

/// Read an id value.
pub fn parse_id(v: &Value, p: &Path, cx: &mut Cx) -> Option<Id> {
    match v {
        Value::String(s) => {
            let ok_chars = s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if s.is_empty() || s.len() > 64 || !ok_chars {
                cx.err(
                    p,
                    format!(
                        "must be 1..64 characters of [a-zA-Z0-9-_.] or an integer >= 1, got {}",
                        show(v)
                    ),
                );
                return None;
            }
            Some(Id(s.clone()))
        }
        Value::Number(_) => reader::uint(v, p, cx, 1, u64::MAX).map(|n| Id(n.to_string())),
        _ => {
            cx.err(
                p,
                format!("must be a string or an integer, got {}", show(v)),
            );
            None
        }
    }
}

/// `name`, `desc`, `labels`, `create_time`, `update_time`: accepted on every resource,
/// stored, and ignored by the data path.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Meta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Meta {
    pub fn parse(o: &mut Obj<'_>, cx: &mut Cx) -> Meta {
        let mut m = Meta::default();
        if let Some((v, p)) = o.take("name") {
            m.name = reader::string_len(v, &p, cx, 1, 256).map(str::to_owned);
        }
        if let Some((v, p)) = o.take("desc") {
            m.desc = reader::string_len(v, &p, cx, 0, 256).map(str::to_owned);
        }
        if let Some(mut labels) = o.obj(cx, "labels") {
            for (k, v, p) in labels.entries() {
                if let Some(s) = reader::string(v, &p, cx) {
                    m.labels.insert(k.to_owned(), s.to_owned());
                }
            }
        }
        for t in ["create_time", "update_time"] {
            if let Some((v, p)) = o.take(t) {
                reader::uint(v, &p, cx, 0, u64::MAX);
            }
        }
        m
    }
}

/// Host syntax of `upstream_host` and `checks.active.host`: `[0-9a-zA-Z-._[]:]`, optionally
/// with a leading `*`.
pub fn valid_host_syntax(s: &str) -> bool {
    let body = s.strip_prefix('*').unwrap_or(s);
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
}

/// A DNS host name: labels of `[a-zA-Z0-9-_]`, 1..63 bytes each, 253 bytes at most.
pub fn valid_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// HTTP methods a route or a probe may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Method {
    #[serde(rename = "GET")]
    Get,
    #[serde(rename = "POST")]
    Post,
    #[serde(rename = "PUT")]
    Put,
    #[serde(rename = "DELETE")]
    Delete,
    #[serde(rename = "PATCH")]
    Patch,
    #[serde(rename = "HEAD")]
    Head,
    #[serde(rename = "OPTIONS")]
    Options,
    #[serde(rename = "CONNECT")]
    Connect,
    #[serde(rename = "TRACE")]
    Trace,
    #[serde(rename = "PURGE")]
    Purge,
}

pub const METHODS: &[(&str, Method)] = &[
    ("GET", Method::Get),
    ("POST", Method::Post),
    ("PUT", Method::Put),
    ("DELETE", Method::Delete),
    ("PATCH", Method::Patch),
    ("HEAD", Method::Head),
    ("OPTIONS", Method::Options),
    ("CONNECT", Method::Connect),
    ("TRACE", Method::Trace),
    ("PURGE", Method::Purge),
];

impl Method {
    pub fn as_str(self) -> &'static str {
        METHODS
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(n, _)| *n)
            .unwrap_or("GET")
    }

    /// Bit of this method in a method mask.
    pub fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// `{connect, send, read}` in seconds: all three required, each > 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timeout {
    #[serde(serialize_with = "ser_secs")]
    pub connect: Duration,
    #[serde(serialize_with = "ser_secs")]
    pub send: Duration,
    #[serde(serialize_with = "ser_secs")]
    pub read: Duration,
}

impl Default for Timeout {
    /// 60 s each, APISIX's defaults.
    fn default() -> Self {
        let d = Duration::from_secs(60);
        Timeout {
            connect: d,
            send: d,
            read: d,
        }
    }
}

impl Timeout {
    pub fn parse(v: &Value, p: &Path, cx: &mut Cx) -> Option<Timeout> {
        let mut o = Obj::of(v, p, cx)?;
        let connect = o.require(cx, "connect");
        let connect = connect.and_then(|(v, p)| reader::secs(v, &p, cx, Bound::Positive));
        let send = o.require(cx, "send");
        let send = send.and_then(|(v, p)| reader::secs(v, &p, cx, Bound::Positive));
        let read = o.require(cx, "read");
        let read = read.and_then(|(v, p)| reader::secs(v, &p, cx, Bound::Positive));
        o.finish(cx);
        Some(Timeout {
            connect: connect?,
            send: send?,
            read: read?,
        })
    }
}

/// Serialize a duration as (fractional) seconds, the unit of the configuration.
pub fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids() {
        let mut cx = Cx::default();
        let p = Path::root().field("id");
        assert_eq!(
            parse_id(&json!("u-1.x_y"), &p, &mut cx),
            Some(Id::from("u-1.x_y"))
        );
        assert_eq!(parse_id(&json!(7), &p, &mut cx), Some(Id::from("7")));
        assert_eq!(parse_id(&json!(0), &p, &mut cx), None);
        assert_eq!(parse_id(&json!("a b"), &p, &mut cx), None);
        assert_eq!(parse_id(&json!(""), &p, &mut cx), None);
        assert_eq!(cx.errors.len(), 3);
    }

    #[test]
    fn hosts() {
        assert!(valid_host_syntax("*.example.com"));
        assert!(valid_host_syntax("[::1]:8080"));
        assert!(!valid_host_syntax("a b"));
        assert!(valid_hostname("api-1.example.com"));
        assert!(!valid_hostname("a..b"));
    }

    #[test]
    fn timeout_needs_all_three() {
        let mut cx = Cx::default();
        let p = Path::root().field("timeout");
        assert!(Timeout::parse(&json!({"connect": 1, "send": 0}), &p, &mut cx).is_none());
        let msgs: Vec<String> = cx.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            ["timeout.send: must be > 0, got 0", "timeout.read: required"]
        );
        let t = Timeout::parse(&json!({"connect": 0.5, "send": 2, "read": 3}), &p, &mut cx);
        assert_eq!(t.map(|t| t.connect), Some(Duration::from_millis(500)));
    }
}
