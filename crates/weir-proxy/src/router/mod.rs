//! Route matching (docs/configuration.md, docs/data-path.md).
//!
//! Each route is expanded into one candidate per (host condition × uri condition) pair. The
//! winner for a request is the matching candidate of the best rank: host specificity (exact
//! host, then `*.` suffixes longest first, then no host condition), then path specificity
//! (exact path, then prefixes longest first), then `priority`, then the smaller id.
//!
//! Candidates are filed by their conditions, so that a request only visits those whose host
//! and path could match, best rank first:
//!
//! - one trie of host patterns, lowercased and reversed: walking the request host from its
//!   last byte (lowercased on the fly) reaches the exact host, and passes through the `*.`
//!   suffixes it ends with; a suffix counts only when strictly shorter than the host;
//! - per host pattern (and one for "any host"), a trie of uri patterns: walking the request
//!   path reaches its exact path and passes through every prefix pattern it starts with;
//! - at each (host, uri) pattern, the candidates sorted by `priority` (higher first), then id,
//!   keeping only those that are first for at least one method: the first whose methods
//!   allow the request's wins.
//!
//! Host classes and lengths decide before paths, and path kinds and lengths before priority,
//! so the first candidate found in that visiting order is the winner of the total order. A
//! match walks the host once, then, for each host pattern the host matches (its exact host,
//! each `*.` suffix it ends with, "any host": at most two more than the host has labels) until
//! one has a candidate, walks the path once and looks at the candidates of its exact path and
//! prefixes (at most ten each: one per method a route can name). Its cost is set by the
//! lengths of the host and path, not by the number of routes; it allocates nothing, makes no
//! lowercased copy and takes no lock.

mod tree;

#[cfg(test)]
mod linear;

use std::cmp::Reverse;
use std::collections::HashMap;
use tree::{Builder, Forward, ReversedLower, Trie};
use weir_config::{HostPattern, Method, Route, UriPattern};

/// No value at a trie node.
const NONE: u32 = u32::MAX;

/// A route's (host, uri) pair at its pattern.
#[derive(Debug, Clone, Copy)]
struct Cand {
    /// Bit mask of allowed methods; `u16::MAX` for any.
    methods: u16,
    route: u32,
    /// Which (host, uri) pair of its route this is: `host_index * uris + uri_index`, the
    /// order [`Router::find_pair`] documents.
    pair: u32,
}

/// A run of `cands`; `len == 0` for none.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

const EMPTY: Span = Span { start: 0, len: 0 };

/// Matches requests to routes. `T` is whatever the caller attaches to a route.
#[derive(Debug)]
pub struct Router<T> {
    /// Host patterns, lowercased and reversed, from root 0; values are the roots of their
    /// path tries in `paths` (`exact`: the host itself; `prefix`: a `*.` suffix).
    hosts: Trie<u32>,
    /// Whether any route has a host condition (else the host is not looked at).
    has_hosts: bool,
    /// The root of the path trie of routes without a host condition, or `NONE`.
    any: u32,
    /// Every host pattern's path trie; values are runs of `cands`.
    paths: Trie<Span>,
    cands: Vec<Cand>,
    routes: Vec<T>,
}

/// The methods a request can have a bit for (any other method matches no route).
const KNOWN: [Method; 10] = [
    Method::Get,
    Method::Post,
    Method::Put,
    Method::Delete,
    Method::Patch,
    Method::Head,
    Method::Options,
    Method::Connect,
    Method::Trace,
    Method::Purge,
];

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

/// A host condition, lowercased (hosts compare case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HostKey {
    Any,
    Exact(Vec<u8>),
    /// `.example.com` for `*.example.com`.
    Suffix(Vec<u8>),
}

/// A candidate before sorting, with its order among candidates of the same pattern: higher
/// priority, then smaller id, then earlier route, then earlier pair.
struct Pending<'a> {
    priority: i64,
    id: &'a str,
    cand: Cand,
}

/// While building: the index of a (host, uri) pattern's candidates in the list of groups.
type Group = usize;

/// Sort `group` into its order and keep the candidates that win for at least one method.
fn prune(mut group: Vec<Pending<'_>>, known: u16) -> impl Iterator<Item = Cand> + '_ {
    group.sort_by(|a, b| {
        (Reverse(a.priority), a.id, a.cand.route, a.cand.pair).cmp(&(
            Reverse(b.priority),
            b.id,
            b.cand.route,
            b.cand.pair,
        ))
    });
    let mut covered = 0u16;
    group.into_iter().filter_map(move |p| {
        let wins = p.cand.methods & known & !covered;
        covered |= p.cand.methods;
        (wins != 0).then_some(p.cand)
    })
}

impl<T> Router<T> {
    /// Build a router over `routes`, each paired with its attachment.
    pub fn new<'a>(routes: impl IntoIterator<Item = (&'a Route, T)>) -> Self {
        let known = KNOWN.iter().fold(0u16, |acc, m| acc | m.bit());
        let mut attached = Vec::new();
        // Per host condition (in order of first appearance), its path trie under construction
        // (values: groups).
        let mut host_index: HashMap<HostKey, usize> = HashMap::new();
        let mut by_host: Vec<(HostKey, Builder<Group>)> = Vec::new();
        let mut groups: Vec<Vec<Pending<'a>>> = Vec::new();
        for (idx, (route, t)) in routes.into_iter().enumerate() {
            attached.push(t);
            let methods = route
                .methods
                .as_ref()
                .map_or(u16::MAX, |ms| ms.iter().fold(0, |acc, m| acc | m.bit()));
            let hosts: Vec<HostKey> = if route.hosts.is_empty() {
                vec![HostKey::Any]
            } else {
                route
                    .hosts
                    .iter()
                    .map(|h| match h {
                        HostPattern::Exact(h) => HostKey::Exact(h.as_bytes().to_ascii_lowercase()),
                        HostPattern::Wildcard(s) => {
                            HostKey::Suffix(s.as_bytes().to_ascii_lowercase())
                        }
                    })
                    .collect()
            };
            for (hi, host) in hosts.into_iter().enumerate() {
                let k = *host_index.entry(host.clone()).or_insert_with(|| {
                    by_host.push((host, Builder::new()));
                    by_host.len() - 1
                });
                let Some((_, paths)) = by_host.get_mut(k) else {
                    continue;
                };
                for (ui, uri) in route.uris.iter().enumerate() {
                    let pair = (hi * route.uris.len() + ui) as u32;
                    let new_group = || {
                        groups.push(Vec::new());
                        groups.len() - 1
                    };
                    let g = *match uri {
                        UriPattern::Exact(p) => paths.exact(p.as_bytes(), new_group),
                        UriPattern::Prefix(p) => paths.prefix(p.as_bytes(), new_group),
                    };
                    if let Some(group) = groups.get_mut(g) {
                        group.push(Pending {
                            priority: route.priority,
                            id: route.id.as_str(),
                            cand: Cand {
                                methods,
                                route: idx as u32,
                                pair,
                            },
                        });
                    }
                }
            }
        }

        // Candidates, pattern by pattern, in their order.
        let mut cands = Vec::new();
        let spans: Vec<Span> = groups
            .into_iter()
            .map(|g| {
                let start = cands.len() as u32;
                cands.extend(prune(g, known));
                Span {
                    start,
                    len: cands.len() as u32 - start,
                }
            })
            .collect();
        let span = |g: Option<Group>| g.and_then(|g| spans.get(g).copied()).unwrap_or(EMPTY);

        let mut paths = Trie::new();
        let mut hosts = Builder::new();
        let mut any = NONE;
        let by_host_count = by_host.len();
        for (key, builder) in by_host {
            let root = builder.freeze(&mut paths, span);
            match key {
                HostKey::Any => any = root,
                HostKey::Exact(mut h) => {
                    h.reverse();
                    *hosts.exact(&h, || root) = root;
                }
                HostKey::Suffix(mut s) => {
                    s.reverse();
                    *hosts.prefix(&s, || root) = root;
                }
            }
        }
        let mut host_trie = Trie::new();
        hosts.freeze(&mut host_trie, |v| v.unwrap_or(NONE));
        host_trie.shrink_to_fit();
        paths.shrink_to_fit();
        cands.shrink_to_fit();
        attached.shrink_to_fit();
        Router {
            hosts: host_trie,
            has_hosts: by_host_count > usize::from(any != NONE),
            any,
            paths,
            cands,
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
        if mbit == 0 {
            return None;
        }
        let c = self.best(host.as_bytes(), path.as_bytes(), mbit)?;
        Some((self.routes.get(c.route as usize)?, c.pair as usize))
    }

    pub fn routes(&self) -> &[T] {
        &self.routes
    }

    fn best(&self, host: &[u8], path: &[u8], mbit: u16) -> Option<Cand> {
        let deepest = if self.has_hosts {
            self.hosts.deepest(0, &ReversedLower(host))
        } else {
            0
        };
        // The exact host: a node of the host's whole length.
        if let Some(n) = self.hosts.node(deepest) {
            if n.depth as usize == host.len() && n.exact != NONE {
                if let Some(c) = self.in_host(n.exact, path, mbit) {
                    return Some(c);
                }
            }
        }
        // `*.` suffixes the host ends with, longest first, strictly shorter than the host.
        for n in self.hosts.prefixes(deepest, |&v| v != NONE) {
            if (n.depth as usize) < host.len() {
                if let Some(c) = self.in_host(n.prefix, path, mbit) {
                    return Some(c);
                }
            }
        }
        if self.any != NONE {
            return self.in_host(self.any, path, mbit);
        }
        None
    }

    /// The best candidate in the path trie at `root`: the exact path, then prefixes longest
    /// first.
    fn in_host(&self, root: u32, path: &[u8], mbit: u16) -> Option<Cand> {
        let deepest = self.paths.deepest(root, &Forward(path));
        let n = self.paths.node(deepest)?;
        if n.depth as usize == path.len() {
            if let Some(c) = self.pick(n.exact, mbit) {
                return Some(c);
            }
        }
        self.paths
            .prefixes(deepest, |s| s.len != 0)
            .find_map(|n| self.pick(n.prefix, mbit))
    }

    fn pick(&self, span: Span, mbit: u16) -> Option<Cand> {
        let start = span.start as usize;
        self.cands
            .get(start..start + span.len as usize)?
            .iter()
            .find(|c| {
                tree::step();
                c.methods & mbit != 0
            })
            .copied()
    }

    /// Bytes of heap held by the matcher (the attachments excluded).
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.hosts.heap_bytes()
            + self.paths.heap_bytes()
            + self.cands.capacity() * std::mem::size_of::<Cand>()
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
mod tests;
