//! The route set and requests the router benches share.
//!
//! The route set mixes 40% exact uris, 40% prefix uris and 20% routes with a host (half
//! exact, half `*.` wildcards); 30% of routes name methods; priorities cycle 0, 1, 2; the
//! last route is a catch-all `/*`. Routes use `upstreams` upstreams in turn.

#![allow(dead_code)]

use weir_config::Method;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Exact,
    Prefix,
    Host,
    Wildcard,
}

/// 40% exact, 40% prefix, 10% exact host, 10% wildcard host; every kind among the first 9.
pub fn kind(i: usize) -> Kind {
    use Kind::*;
    [
        Exact, Prefix, Host, Exact, Prefix, Wildcard, Exact, Prefix, Exact, Prefix,
    ][i % 10]
}

/// `n` routes (the last one the catch-all) over `upstreams` upstreams, as configuration YAML.
pub fn yaml(n: usize, upstreams: usize) -> String {
    let mut y = String::from("routes:\n");
    for i in 0..n.saturating_sub(1) {
        let (svc, v) = (i % 50, i % 4);
        let cond = match kind(i) {
            Kind::Exact => format!("uri: /svc{svc}/v{v}/item{i}"),
            Kind::Prefix => format!("uri: /svc{svc}/v{v}/res{i}/*"),
            Kind::Host => format!("uri: /app/*, host: h{i}.example.com"),
            Kind::Wildcard => format!("uri: /*, host: \"*.t{i}.example.com\""),
        };
        let methods = match i % 10 {
            1 => ", methods: [GET]",
            5 => ", methods: [GET, POST]",
            8 => ", methods: [GET, PUT]",
            _ => "",
        };
        y += &format!(
            "  - {{id: r{i:05}, {cond}{methods}, priority: {}, upstream_id: u{}}}\n",
            i % 3,
            i % upstreams
        );
    }
    y += "  - {id: zz-catchall, uri: /*, upstream_id: u0}\nupstreams:\n";
    for j in 0..upstreams {
        y += &format!(
            "  - {{id: u{j}, type: roundrobin, nodes: {{\"127.0.0.{}:{}\": 1}}}}\n",
            1 + j / 1000,
            8000 + j % 1000
        );
    }
    y
}

/// Parse and validate.
pub fn resources(yaml: &str) -> weir_config::Resources {
    match weir_config::parse_yaml(yaml) {
        Ok(l) => l.config.resources,
        Err(e) => panic!("{e}"),
    }
}

pub struct Request {
    pub host: String,
    pub path: String,
    pub method: http::Method,
    pub expect: String,
    /// What the request hits: `exact`, `prefix`, `host`, `wildcard` or `catch_all`.
    pub what: &'static str,
}

/// 64 requests spread over the route set of `n` routes: hits of every kind, and one in 8 a
/// miss that falls to the catch-all.
pub fn requests(n: usize) -> Vec<Request> {
    let real = n.saturating_sub(1);
    (0..64usize)
        .map(|k| {
            let i = (k * 157) % real.max(1);
            let (svc, v) = (i % 50, i % 4);
            if k % 8 == 7 {
                return Request {
                    host: "api.example.org".into(),
                    path: format!("/nothing/{k}"),
                    method: http::Method::GET,
                    expect: "zz-catchall".into(),
                    what: "catch_all",
                };
            }
            let (host, path, what) = match kind(i) {
                Kind::Exact => (
                    "api.example.org".into(),
                    format!("/svc{svc}/v{v}/item{i}"),
                    "exact",
                ),
                Kind::Prefix => (
                    "api.example.org".into(),
                    format!("/svc{svc}/v{v}/res{i}/orders/42"),
                    "prefix",
                ),
                Kind::Host => (format!("H{i}.Example.com"), "/app/login".into(), "host"),
                Kind::Wildcard => (
                    format!("www.t{i}.example.com"),
                    "/static/app.js".into(),
                    "wildcard",
                ),
            };
            Request {
                host,
                path,
                method: http::Method::GET,
                expect: format!("r{i:05}"),
                what,
            }
        })
        .collect()
}

/// A copy of the router's (private) method bits, for the linear matcher the benches compare
/// with (`src/router/linear.rs`, included by path).
pub fn method_bit(m: &http::Method) -> u16 {
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
