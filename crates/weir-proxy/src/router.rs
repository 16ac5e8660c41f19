//! Route matching (docs/configuration.md).
//!
//! Each route is expanded into one entry per (host condition × uri condition) pair, and the
//! entries are sorted once by their rank: host specificity, then path specificity, then
//! `priority`, then the smaller id. The rank of a route for a request is the rank of the best
//! pair that matches it, so the first matching entry in sorted order is the winner: a linear
//! scan with no allocation, no lowercasing and no lock.

use std::cmp::Reverse;
use weir_config::{HostPattern, Method, Route, UriPattern};

/// A host condition, compared case-insensitively against the request host (port removed).
#[derive(Debug, Clone)]
enum HostCond {
    Any,
    Exact(String),
    /// `.example.com` for `*.example.com`.
    Suffix(String),
}

#[derive(Debug, Clone)]
enum PathCond {
    Exact(String),
    Prefix(String),
}

#[derive(Debug)]
struct Entry {
    host: HostCond,
    path: PathCond,
    /// Bit mask of allowed methods; `u16::MAX` for any.
    methods: u16,
    route: usize,
    /// Which (host, uri) pair of its route this is: `host_index * uris + uri_index`, the
    /// order [`Router::pair`] documents.
    pair: u32,
}

/// Matches requests to routes. `T` is whatever the caller attaches to a route.
#[derive(Debug)]
pub struct Router<T> {
    entries: Vec<Entry>,
    routes: Vec<T>,
}

/// Sort key of an entry: larger is better, except the id (smaller is better).
type Rank = (u8, usize, u8, usize, i64, Reverse<String>);

fn rank(host: &HostCond, path: &PathCond, route: &Route) -> Rank {
    let (hc, hl) = match host {
        HostCond::Exact(h) => (3, h.len()),
        HostCond::Suffix(s) => (2, s.len()),
        HostCond::Any => (1, 0),
    };
    let (pc, pl) = match path {
        PathCond::Exact(p) => (2, p.len()),
        PathCond::Prefix(p) => (1, p.len()),
    };
    (hc, hl, pc, pl, route.priority, Reverse(route.id.0.clone()))
}

fn method_bit(m: &http::Method) -> u16 {
    let known = match *m {
        http::Method::GET => Method::Get,
        http::Method::POST => Method::Post,
        http::Method::PUT => Method::Put,
        http::Method::DELETE => Method::Delete,
        http::Method::PATCH => Method::Patch,
        http::Method::HEAD => Method::Head,
        http::Method::OPTIONS => Method::Options,
        http::Method::CONNECT => Method::Connect,
        http::Method::TRACE => Method::Trace,
        _ if m.as_str() == "PURGE" => Method::Purge,
        _ => return 0,
    };
    known.bit()
}

impl<T> Router<T> {
    /// Build a router over `routes`, each paired with its attachment.
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a Route, T)>) -> Self {
        let mut ranked: Vec<(Rank, Entry)> = Vec::new();
        let mut attached = Vec::new();
        for (idx, (route, t)) in routes.into_iter().enumerate() {
            attached.push(t);
            let methods = route
                .methods
                .as_ref()
                .map_or(u16::MAX, |ms| ms.iter().fold(0, |acc, m| acc | m.bit()));
            let hosts: Vec<HostCond> = if route.hosts.is_empty() {
                vec![HostCond::Any]
            } else {
                route
                    .hosts
                    .iter()
                    .map(|h| match h {
                        HostPattern::Exact(h) => HostCond::Exact(h.clone()),
                        HostPattern::Wildcard(s) => HostCond::Suffix(s.clone()),
                    })
                    .collect()
            };
            let mut pair = 0u32;
            for host in &hosts {
                for uri in &route.uris {
                    let path = match uri {
                        UriPattern::Exact(p) => PathCond::Exact(p.clone()),
                        UriPattern::Prefix(p) => PathCond::Prefix(p.clone()),
                    };
                    let entry = Entry {
                        host: host.clone(),
                        path,
                        methods,
                        route: idx,
                        pair,
                    };
                    pair += 1;
                    ranked.push((rank(&entry.host, &entry.path, route), entry));
                }
            }
        }
        ranked.sort_by(|a, b| b.0.cmp(&a.0));
        Router {
            entries: ranked.into_iter().map(|(_, e)| e).collect(),
            routes: attached,
        }
    }

    /// The best route for a request. `host` is the request host with any port removed (any
    /// case); `path` is the request target up to the first `?`.
    pub fn find(&self, host: &str, path: &str, method: &http::Method) -> Option<&T> {
        self.find_pair(host, path, method).map(|(t, _)| t)
    }

    /// As [`find`](Self::find), with the index of the (host, uri) pair of the route that
    /// matched: for a route with hosts `h0..hn` (or none: one "any host") and uris `u0..um`,
    /// pair `i * (m + 1) + j` is `(hi, uj)`.
    pub fn find_pair(&self, host: &str, path: &str, method: &http::Method) -> Option<(&T, usize)> {
        let mbit = method_bit(method);
        self.entries
            .iter()
            .find(|e| {
                e.methods & mbit != 0
                    && match &e.path {
                        PathCond::Exact(p) => path == p,
                        PathCond::Prefix(p) => path.starts_with(p.as_str()),
                    }
                    && match &e.host {
                        HostCond::Any => true,
                        HostCond::Exact(h) => host.eq_ignore_ascii_case(h),
                        HostCond::Suffix(s) => {
                            host.len() > s.len()
                                && host.as_bytes()[host.len() - s.len()..]
                                    .eq_ignore_ascii_case(s.as_bytes())
                        }
                    }
            })
            .map(|e| (&self.routes[e.route], e.pair as usize))
    }

    pub fn routes(&self) -> &[T] {
        &self.routes
    }
}

/// The request host from a `Host` header or `:authority` value: port removed, IPv6 brackets
/// kept.
pub fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(i) => &authority[..=i],
            None => authority,
        };
    }
    match authority.rfind(':') {
        Some(i) => &authority[..i],
        None => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(yaml: &str) -> Vec<Route> {
        weir_config::parse_yaml(yaml)
            .unwrap()
            .config
            .resources
            .routes
    }

    fn find<'a>(r: &'a Router<&'a str>, host: &str, path: &str) -> Option<&'a str> {
        r.find(host, path, &http::Method::GET).copied()
    }

    #[test]
    fn specificity_order() {
        let rs = routes(
            r#"
routes:
  - {id: any-prefix, uri: /*}
  - {id: api-prefix, uri: /api/*}
  - {id: api-v1, uri: /api/v1/*}
  - {id: exact, uri: /api/v1/x}
  - {id: wild, uri: /*, host: "*.example.com"}
  - {id: wild-long, uri: /*, host: "*.a.example.com"}
  - {id: exact-host, uri: /*, host: "a.example.com"}
  - {id: prio-low, uri: /p/*, priority: 1}
  - {id: prio-high, uri: /p/*, priority: 5}
  - {id: b, uri: /tie}
  - {id: a, uri: /tie}
"#,
        );
        let r = Router::new(rs.iter().map(|r| (r, r.id.as_str())));
        assert_eq!(find(&r, "x.org", "/other"), Some("any-prefix"));
        assert_eq!(find(&r, "x.org", "/api"), Some("any-prefix"));
        assert_eq!(find(&r, "x.org", "/api/"), Some("api-prefix"));
        assert_eq!(find(&r, "x.org", "/api/v1/y"), Some("api-v1"));
        assert_eq!(find(&r, "x.org", "/api/v1/x"), Some("exact"));
        assert_eq!(find(&r, "b.example.com", "/api/v1/x"), Some("wild"));
        assert_eq!(find(&r, "z.a.example.com", "/"), Some("wild-long"));
        assert_eq!(find(&r, "A.Example.COM", "/"), Some("exact-host"));
        assert_eq!(find(&r, "example.com", "/"), Some("any-prefix"));
        assert_eq!(find(&r, "x.org", "/p/1"), Some("prio-high"));
        assert_eq!(find(&r, "x.org", "/tie"), Some("a"));
    }

    #[test]
    fn methods_filter() {
        let rs = routes("routes:\n  - {id: r, uri: /m, methods: [POST]}\n");
        let r = Router::new(rs.iter().map(|r| (r, r.id.as_str())));
        assert_eq!(r.find("h", "/m", &http::Method::GET), None);
        assert_eq!(r.find("h", "/m", &http::Method::POST), Some(&"r"));
    }

    #[test]
    fn the_matched_pair_is_reported() {
        let rs = routes("routes:\n  - {id: r, uris: [/a, /b/*], hosts: [x.org, \"*.y.org\"]}\n");
        let r = Router::new(rs.iter().map(|r| (r, r.id.as_str())));
        let pair = |h: &str, p: &str| r.find_pair(h, p, &http::Method::GET).map(|(_, i)| i);
        assert_eq!(pair("x.org", "/a"), Some(0));
        assert_eq!(pair("x.org", "/b/c"), Some(1));
        assert_eq!(pair("a.y.org", "/a"), Some(2));
        assert_eq!(pair("a.y.org", "/b/"), Some(3));
    }

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("foo.com:9080"), "foo.com");
        assert_eq!(strip_port("foo.com"), "foo.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
