//! Upstream nodes in APISIX's two forms: `[{host, port, weight, priority, metadata}]` and
//! `{"host[:port]": weight}` (docs/configuration.md).

use crate::common::valid_hostname;
use crate::error::show;
use crate::path::Path;
use crate::reader::{self, Cx, Obj};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One upstream node. Its identity for per-node state is `(host, port)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    /// The host as written: IPv4, a host name, or a bracketed IPv6 address.
    pub host: String,
    /// The address when `host` is an IP literal; `None` for names (resolved at run time).
    #[serde(skip)]
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub weight: u32,
    pub priority: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl Node {
    /// `host:port` as written (`[::1]:8080` for IPv6).
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

const IPV6_BRACKETS: &str = "IPv6 address must be enclosed with '[' and ']'";

/// Parse a node host: IPv4, host name, or `[IPv6]`.
pub fn parse_host(s: &str) -> Result<Option<IpAddr>, String> {
    if let Some(inner) = s.strip_prefix('[') {
        return match inner.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            Some(Ok(ip)) => Ok(Some(IpAddr::V6(ip))),
            _ => Err(format!("invalid IPv6 address {s:?}")),
        };
    }
    if s.contains(':') {
        return Err(if s.parse::<Ipv6Addr>().is_ok() {
            IPV6_BRACKETS.to_owned()
        } else {
            format!("invalid host {s:?}")
        });
    }
    if let Ok(ip) = s.parse::<Ipv4Addr>() {
        return Ok(Some(IpAddr::V4(ip)));
    }
    // A dotted-quad that did not parse as IPv4 is a typo, not a host name.
    if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') || !valid_hostname(s) {
        return Err(format!("invalid host {s:?}"));
    }
    Ok(None)
}

/// Split a map-form key `host[:port]` (port after the last `:`, or after `]` for IPv6).
fn split_host_port(key: &str) -> Result<(&str, Option<&str>), String> {
    if key.starts_with('[') {
        let close = key
            .find(']')
            .ok_or_else(|| format!("invalid host {key:?}"))?;
        let (host, rest) = key.split_at(close + 1);
        return match rest {
            "" => Ok((host, None)),
            _ => match rest.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!("invalid host {key:?}")),
            },
        };
    }
    match key.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => Err(IPV6_BRACKETS.to_owned()),
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((key, None)),
    }
}

fn weight(v: &Value, p: &Path, cx: &mut Cx) -> Option<u32> {
    reader::uint(v, p, cx, 0, u32::MAX as u64).map(|w| w as u32)
}

/// Read `nodes` in either form. `default_port` follows the scheme.
pub fn parse_nodes(v: &Value, p: &Path, cx: &mut Cx, default_port: u16) -> Option<Vec<Node>> {
    let before = cx.errors.len();
    let mut nodes: Vec<(Node, Path)> = Vec::new();
    match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if let Some(n) = parse_node_object(item, &p.index(i), cx, default_port) {
                    nodes.push((n, p.index(i)));
                }
            }
        }
        Value::Object(map) => {
            for (key, w) in map {
                let kp = p.key(key);
                let parsed = split_host_port(key).and_then(|(host, port)| {
                    let ip = parse_host(host)?;
                    let port = match port {
                        None => default_port,
                        Some(s) => match s.parse::<u32>() {
                            Ok(n @ 1..=65535) => n as u16,
                            _ => return Err(format!("invalid port {s}")),
                        },
                    };
                    Ok((host, ip, port))
                });
                match parsed {
                    Err(e) => cx.err(&kp, e),
                    Ok((host, ip, port)) => {
                        if let Some(weight) = weight(w, &kp, cx) {
                            let node = Node {
                                host: host.to_owned(),
                                ip,
                                port,
                                weight,
                                priority: 0,
                                metadata: None,
                            };
                            nodes.push((node, kp));
                        }
                    }
                }
            }
        }
        _ => {
            cx.err(p, format!("must be an array or an object, got {}", show(v)));
            return None;
        }
    }
    // The same (host, port) twice in one priority level is an error.
    let mut seen = HashSet::new();
    for (n, np) in &nodes {
        if !seen.insert((n.host.to_ascii_lowercase(), n.port, n.priority)) {
            cx.err(
                np,
                format!("duplicate node {} at priority {}", n.addr(), n.priority),
            );
        }
    }
    (cx.errors.len() == before).then(|| nodes.into_iter().map(|(n, _)| n).collect())
}

fn parse_node_object(v: &Value, p: &Path, cx: &mut Cx, default_port: u16) -> Option<Node> {
    let mut o = Obj::of(v, p, cx)?;
    let host = o.require(cx, "host").and_then(|(v, hp)| {
        let s = reader::string(v, &hp, cx)?;
        match parse_host(s) {
            Ok(ip) => Some((s.to_owned(), ip)),
            Err(e) => {
                cx.err(&hp, e);
                None
            }
        }
    });
    let port = match o.take("port") {
        Some((v, pp)) => reader::uint(v, &pp, cx, 1, 65535).map(|n| n as u16),
        None => Some(default_port),
    };
    let w = o
        .require(cx, "weight")
        .and_then(|(v, wp)| weight(v, &wp, cx));
    let priority = match o.take("priority") {
        Some((v, pp)) => reader::int(v, &pp, cx, i64::MIN, i64::MAX),
        None => Some(0),
    };
    let metadata = match o.take("metadata") {
        Some((v @ Value::Object(_), _)) => Some(v.clone()),
        Some((v, mp)) => {
            cx.err(&mp, format!("must be an object, got {}", show(v)));
            None
        }
        None => None,
    };
    o.finish(cx);
    let (host, ip) = host?;
    Some(Node {
        host,
        ip,
        port: port?,
        weight: w?,
        priority: priority?,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errs(v: Value) -> Vec<String> {
        let mut cx = Cx::default();
        parse_nodes(&v, &Path::root().field("nodes"), &mut cx, 80);
        cx.errors.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn map_form_keeps_document_order_and_defaults_port() {
        let mut cx = Cx::default();
        let v: Value =
            serde_json::from_str(r#"{"10.0.0.2:81": 1, "10.0.0.1": 2, "[::1]:8080": 0}"#).unwrap();
        let n = parse_nodes(&v, &Path::root(), &mut cx, 443).unwrap();
        let addrs: Vec<String> = n.iter().map(Node::addr).collect();
        assert_eq!(addrs, ["10.0.0.2:81", "10.0.0.1:443", "[::1]:8080"]);
        assert_eq!(n[2].weight, 0);
        assert!(cx.errors.is_empty());
    }

    #[test]
    fn bad_nodes() {
        assert_eq!(
            errs(json!({"10.0.0.1:65536": 1, "10.0.0.1:x": 1})),
            [
                "nodes[\"10.0.0.1:65536\"]: invalid port 65536",
                "nodes[\"10.0.0.1:x\"]: invalid port x"
            ]
        );
        assert_eq!(
            errs(json!([{"host": "::1", "port": 80, "weight": 1}])),
            ["nodes[0].host: IPv6 address must be enclosed with '[' and ']'"]
        );
        assert_eq!(
            errs(json!([{"host": "a", "weight": -1}, {"host": "b", "weight": "1"}])),
            [
                "nodes[0].weight: must be >= 0, got -1",
                "nodes[1].weight: must be an integer, got \"1\""
            ]
        );
        assert_eq!(
            errs(json!([{"host": "a", "weight": 1}, {"host": "a", "port": 80, "weight": 2}])),
            ["nodes[1]: duplicate node a:80 at priority 0"]
        );
        assert!(errs(
            json!([{"host": "a", "weight": 1}, {"host": "a", "weight": 2, "priority": -1}])
        )
        .is_empty());
        assert_eq!(
            errs(json!([{"port": 80}])),
            ["nodes[0].host: required", "nodes[0].weight: required"]
        );
    }
}
