//! The first matcher, kept as the reference the tries are checked against: each route
//! expanded into (host × uri) entries sorted once by rank, the first matching entry wins.

use super::method_bit;
use std::cmp::Reverse;
use weir_config::{HostPattern, Route, UriPattern};

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
    /// order [`super::Router::find_pair`] documents.
    pair: u32,
}

/// Matches requests to routes. `T` is whatever the caller attaches to a route.
#[derive(Debug)]
pub(super) struct Router<T> {
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

impl<T> Router<T> {
    /// Build a router over `routes`, each paired with its attachment.
    pub(super) fn new<'a>(routes: impl IntoIterator<Item = (&'a Route, T)>) -> Self {
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

    /// The best route for a request and the index of its matched (host, uri) pair, as
    /// [`super::Router::find_pair`].
    pub(super) fn find_pair(
        &self,
        host: &str,
        path: &str,
        method: &http::Method,
    ) -> Option<(&T, usize)> {
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
}
