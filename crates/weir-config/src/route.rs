//! Routes and services (docs/configuration.md).

use crate::common::{parse_id, Id, Meta, Method, Timeout, METHODS};
use crate::discovery::Env;
use crate::path::Path;
use crate::plugins::{parse_plugins, Plugins};
use crate::reader::{self, Cx, Obj};
use crate::upstream::{parse_upstream, Placement, Upstream};
use serde::Serialize;
use serde_json::Value;

/// A path condition: exact, or a prefix when written with a trailing `*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UriPattern {
    Exact(String),
    Prefix(String),
}

/// A host condition: exact (lower-cased) or a `*.suffix` wildcard (suffix kept with its dot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com` is stored as `.example.com`.
    Wildcard(String),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    pub id: Id,
    #[serde(flatten)]
    pub meta: Meta,
    pub uris: Vec<UriPattern>,
    /// Empty: any host.
    pub hosts: Vec<HostPattern>,
    /// `None`: any method.
    pub methods: Option<Vec<Method>>,
    pub priority: i64,
    pub service_id: Option<Id>,
    pub upstream_id: Option<Id>,
    pub upstream: Option<Box<Upstream>>,
    pub plugins: Plugins,
    pub timeout: Option<Timeout>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub id: Id,
    #[serde(flatten)]
    pub meta: Meta,
    pub upstream_id: Option<Id>,
    pub upstream: Option<Box<Upstream>>,
    pub plugins: Plugins,
}

fn parse_uri(v: &Value, p: &Path, cx: &mut Cx) -> Option<UriPattern> {
    let s = reader::string(v, p, cx)?;
    if !s.starts_with('/') {
        cx.err(p, format!("must start with \"/\", got {s:?}"));
        return None;
    }
    match s.find('*') {
        None => Some(UriPattern::Exact(s.to_owned())),
        Some(i) if i == s.len() - 1 => Some(UriPattern::Prefix(s[..i].to_owned())),
        Some(_) => {
            cx.err(
                p,
                format!("\"*\" is allowed only as the last character, got {s:?}"),
            );
            None
        }
    }
}

fn parse_host(v: &Value, p: &Path, cx: &mut Cx) -> Option<HostPattern> {
    let s = reader::string(v, p, cx)?;
    let lower = s.to_ascii_lowercase();
    let (wild, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    if name.contains('*') || !crate::common::valid_hostname(name) {
        cx.err(
            p,
            format!("must be a host name, optionally starting with \"*.\", got {s:?}"),
        );
        return None;
    }
    Some(if wild {
        HostPattern::Wildcard(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_owned())
    })
}

/// Read either `single` (one value) or `plural` (a non-empty array); `both` names the pair in
/// the error when both are set.
fn one_or_many<T>(
    o: &mut Obj<'_>,
    cx: &mut Cx,
    single: &str,
    plural: &str,
    item: fn(&Value, &Path, &mut Cx) -> Option<T>,
) -> Option<Vec<T>> {
    let one = o.take(single);
    let many = o.take(plural);
    match (one, many) {
        (Some(_), Some(_)) => {
            cx.err(
                &o.path,
                format!("{single} and {plural} are mutually exclusive"),
            );
            None
        }
        (Some((v, p)), None) => item(v, &p, cx).map(|x| vec![x]),
        (None, Some((v, p))) => reader::list(v, &p, cx, 1, item),
        (None, None) => Some(Vec::new()),
    }
}

/// Read the upstream choice shared by routes and services.
fn upstream_choice(o: &mut Obj<'_>, cx: &mut Cx, env: &Env) -> (Option<Id>, Option<Box<Upstream>>) {
    let upstream_id = o.take("upstream_id").and_then(|(v, p)| parse_id(v, &p, cx));
    let upstream = o
        .take("upstream")
        .and_then(|(v, p)| parse_upstream(v, &p, cx, env, Placement::Inline))
        .map(Box::new);
    if o.has("upstream_id") && o.has("upstream") {
        cx.err(&o.path, "upstream_id and upstream are mutually exclusive");
    }
    (upstream_id, upstream)
}

pub fn parse_route(v: &Value, p: &Path, cx: &mut Cx, env: &Env) -> Option<Route> {
    let mut o = Obj::of(v, p, cx)?;
    let before = cx.errors.len();
    let id = o.require(cx, "id").and_then(|(v, ip)| parse_id(v, &ip, cx));
    let meta = Meta::parse(&mut o, cx);
    let uris = one_or_many(&mut o, cx, "uri", "uris", parse_uri);
    if uris.as_ref().is_some_and(Vec::is_empty) {
        cx.err(&p.field("uri"), "required (uri or uris)");
    }
    let hosts = one_or_many(&mut o, cx, "host", "hosts", parse_host);
    let methods = o.take("methods").and_then(|(v, mp)| {
        reader::list(v, &mp, cx, 1, |x, xp, cx| {
            reader::enumeration(x, xp, cx, METHODS)
        })
    });
    let priority = o.int(cx, "priority", i64::MIN, i64::MAX).unwrap_or(0);
    let service_id = o
        .take("service_id")
        .and_then(|(v, sp)| parse_id(v, &sp, cx));
    let (upstream_id, upstream) = upstream_choice(&mut o, cx, env);
    let plugins = o
        .take("plugins")
        .map(|(v, pp)| parse_plugins(v, &pp, cx, env))
        .unwrap_or_default();
    let timeout = o
        .take("timeout")
        .and_then(|(v, tp)| Timeout::parse(v, &tp, cx));
    o.finish(cx);
    if cx.errors.len() != before {
        return None;
    }
    Some(Route {
        id: id?,
        meta,
        uris: uris?,
        hosts: hosts?,
        methods,
        priority,
        service_id,
        upstream_id,
        upstream,
        plugins,
        timeout,
    })
}

pub fn parse_service(v: &Value, p: &Path, cx: &mut Cx, env: &Env) -> Option<Service> {
    let mut o = Obj::of(v, p, cx)?;
    let before = cx.errors.len();
    let id = o.require(cx, "id").and_then(|(v, ip)| parse_id(v, &ip, cx));
    let meta = Meta::parse(&mut o, cx);
    let (upstream_id, upstream) = upstream_choice(&mut o, cx, env);
    let plugins = o
        .take("plugins")
        .map(|(v, pp)| parse_plugins(v, &pp, cx, env))
        .unwrap_or_default();
    o.finish(cx);
    if cx.errors.len() != before {
        return None;
    }
    Some(Service {
        id: id?,
        meta,
        upstream_id,
        upstream,
        plugins,
    })
}
