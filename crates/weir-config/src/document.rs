//! The whole configuration document: process settings plus the six resource kinds, with the
//! rules that span resources (unique ids, references, unique consumer keys).

use crate::cert::{parse_ca_certificate, parse_certificate, CaCertificate, Certificate};
use crate::common::Id;
use crate::discovery::{parse_discovery, DiscoveryConfig, Env};
use crate::error::{ConfigError, ConfigErrors};
use crate::extensions::Extensions;
use crate::path::Path;
use crate::plugins::{parse_consumer, Consumer};
use crate::reader::{self, Cx, Obj};
use crate::route::{parse_route, parse_service, Route, Service};
use crate::server::{
    parse_admin, parse_config_source, parse_control, parse_server, AdminConfig, ConfigSource,
    ControlConfig, ServerConfig,
};
use crate::upstream::{parse_upstream, ClientCert, Placement, Upstream};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;

/// The six resource kinds, as in the file, in etcd (`<prefix>/<kind>/<id>`) and in Admin API
/// paths.
pub const RESOURCE_KINDS: &[&str] = &[
    "routes",
    "services",
    "upstreams",
    "consumers",
    "certificates",
    "ca_certificates",
];

/// Routes, services, upstreams, consumers and certificates: what reloads live.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Resources {
    pub routes: Vec<Route>,
    pub services: Vec<Service>,
    pub upstreams: Vec<Upstream>,
    pub consumers: Vec<Consumer>,
    pub certificates: Vec<Certificate>,
    pub ca_certificates: Vec<CaCertificate>,
}

/// A validated configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: Option<AdminConfig>,
    pub control: Option<ControlConfig>,
    pub config_source: ConfigSource,
    pub discovery: DiscoveryConfig,
    #[serde(flatten)]
    pub resources: Resources,
}

/// A configuration that passed validation, with the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<ConfigError>,
}

/// The annotation of a resource item in paths: `id "billing"`, `id 7`, `username "alice"`.
fn item_note(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        s @ Value::String(_) => Some(format!("{key} {s}")),
        n @ Value::Number(_) => Some(format!("{key} {n}")),
        _ => None,
    }
}

/// The id an item was written with, read without judging it: a string, or an integer as its
/// decimal text (the form references use).
fn written_id(item: &Value, key: &str) -> Option<String> {
    match item.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        _ => None,
    }
}

/// Read a resource array; each item's path carries its id. Returns the valid items with their
/// paths, and the ids of the items that are present but invalid (their errors are already
/// reported; a reference to one of them is not an unknown reference).
fn resource_list<T>(
    o: &mut Obj<'_>,
    cx: &mut Cx,
    kind: &str,
    id_key: &str,
    mut parse: impl FnMut(&Value, &Path, &mut Cx) -> Option<T>,
) -> (Vec<(T, Path)>, Vec<String>) {
    let Some((v, p)) = o.take(kind) else {
        return (Vec::new(), Vec::new());
    };
    let Some(items) = reader::array(v, &p, cx) else {
        return (Vec::new(), Vec::new());
    };
    let mut out = Vec::with_capacity(items.len());
    let mut invalid = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let mut ip = p.index(i);
        if let Some(note) = item_note(item, id_key) {
            ip = ip.annotate(note);
        }
        match parse(item, &ip, cx) {
            Some(t) => out.push((t, ip)),
            None => invalid.extend(written_id(item, id_key)),
        }
    }
    (out, invalid)
}

/// Ids of resources that are in the document but failed validation, by kind.
#[derive(Debug, Default)]
pub struct InvalidIds {
    pub services: Vec<String>,
    pub upstreams: Vec<String>,
    pub certificates: Vec<String>,
    pub ca_certificates: Vec<String>,
}

fn listed(ids: &[String], id: &Id) -> bool {
    ids.iter().any(|i| i == id.as_str())
}

fn check_unique<'a>(cx: &mut Cx, key: &str, items: impl Iterator<Item = (&'a str, &'a Path)>) {
    let mut seen: HashMap<&str, &Path> = HashMap::new();
    for (id, p) in items {
        if let Some(first) = seen.get(id) {
            cx.err(
                &p.field(key),
                format!("duplicate {key} {id:?} (first at {first})"),
            );
        } else {
            seen.insert(id, p);
        }
    }
}

/// Where each resource came from, for cross-reference errors, and which ids belong to
/// resources that are present but invalid.
#[derive(Debug, Default)]
pub struct ResourcePaths {
    pub routes: Vec<Path>,
    pub services: Vec<Path>,
    pub upstreams: Vec<Path>,
    pub consumers: Vec<Path>,
    pub invalid: InvalidIds,
}

impl Resources {
    /// Check the rules that span resources: unique ids per kind, references that must exist,
    /// unique consumer keys. A reference to a resource that is present but invalid is not
    /// reported: that resource's own errors say what is wrong.
    pub fn check_references(&self, paths: &ResourcePaths, cx: &mut Cx) {
        let bad = &paths.invalid;
        for (r, p) in self.routes.iter().zip(&paths.routes) {
            if let Some(s) = &r.service_id {
                if !self.services.iter().any(|x| &x.id == s) && !listed(&bad.services, s) {
                    cx.err(&p.field("service_id"), format!("unknown service {:?}", s.0));
                }
            }
            if let Some(u) = &r.upstream_id {
                self.check_upstream_ref(u, &p.field("upstream_id"), bad, cx);
            }
            if let Some(u) = &r.upstream {
                self.check_upstream_tls(u, &p.field("upstream"), bad, cx);
            }
        }
        for (s, p) in self.services.iter().zip(&paths.services) {
            if let Some(u) = &s.upstream_id {
                self.check_upstream_ref(u, &p.field("upstream_id"), bad, cx);
            }
            if let Some(u) = &s.upstream {
                self.check_upstream_tls(u, &p.field("upstream"), bad, cx);
            }
        }
        for (u, p) in self.upstreams.iter().zip(&paths.upstreams) {
            self.check_upstream_tls(u, p, bad, cx);
        }
        // Keys must be unique across consumers; never quote the key itself.
        let mut owners: HashMap<&str, &str> = HashMap::new();
        for (c, p) in self.consumers.iter().zip(&paths.consumers) {
            if let Some(k) = &c.key {
                if let Some(first) = owners.insert(k.expose(), &c.username) {
                    cx.err(
                        &p.field("plugins").field("key-auth").field("key"),
                        format!("duplicate key (already used by consumer {first:?})"),
                    );
                }
            }
        }
    }

    fn check_upstream_ref(&self, id: &Id, p: &Path, bad: &InvalidIds, cx: &mut Cx) {
        if !self.upstreams.iter().any(|u| u.id.as_ref() == Some(id)) && !listed(&bad.upstreams, id)
        {
            cx.err(p, format!("unknown upstream {:?}", id.0));
        }
    }

    fn check_upstream_tls(&self, u: &Upstream, p: &Path, bad: &InvalidIds, cx: &mut Cx) {
        for (i, ca) in u.tls.ca_certificates.iter().enumerate() {
            if !self.ca_certificates.iter().any(|c| &c.id == ca)
                && !listed(&bad.ca_certificates, ca)
            {
                cx.err(
                    &p.field("ca_certificates").index(i),
                    format!("unknown ca_certificate {:?}", ca.0),
                );
            }
        }
        if let Some(ClientCert::Ref(id)) = &u.tls.client_cert {
            if !self.certificates.iter().any(|c| &c.id == id) && !listed(&bad.certificates, id) {
                cx.err(
                    &p.field("client_certificate"),
                    format!("unknown certificate {:?}", id.0),
                );
            }
        }
    }

    /// The certificate with this id.
    pub fn certificate(&self, id: &Id) -> Option<&Certificate> {
        self.certificates.iter().find(|c| &c.id == id)
    }
}

/// Valid but almost always a mistake: a file that routes nothing, an upstream nothing uses.
/// Not said when resources arrive another way (etcd, the Admin API).
fn usage_warnings(config: &Config, paths: &ResourcePaths, cx: &mut Cx) {
    if matches!(config.config_source, ConfigSource::Etcd(_)) || config.admin.is_some() {
        return;
    }
    let r = &config.resources;
    if r.routes.is_empty() {
        cx.warn(&Path::root(), "no routes: every request will get 404");
    }
    for (u, p) in r.upstreams.iter().zip(&paths.upstreams) {
        let Some(id) = &u.id else { continue };
        let used = r.routes.iter().any(|x| x.upstream_id.as_ref() == Some(id))
            || r.services
                .iter()
                .any(|x| x.upstream_id.as_ref() == Some(id));
        if !used {
            cx.warn(p, "not used by any route or service");
        }
    }
}

/// Validate a whole document (already parsed from YAML or JSON).
pub fn parse_document(doc: &Value) -> Result<Loaded, ConfigErrors> {
    parse_document_with(doc, &[])
}

/// Validate a document, also accepting the plugin names in `plugins` (registered by an
/// embedder) in `plugins:` blocks.
pub fn parse_document_with(doc: &Value, plugins: &[&str]) -> Result<Loaded, ConfigErrors> {
    let ext = plugins
        .iter()
        .fold(Extensions::new(), |e, name| e.plugin(name));
    parse_document_ext(doc, &ext)
}

/// Validate a document that may use the names in `ext`.
pub fn parse_document_ext(doc: &Value, ext: &Extensions) -> Result<Loaded, ConfigErrors> {
    let empty = Value::Object(Default::default());
    let doc = if doc.is_null() { &empty } else { doc };
    let mut cx = Cx::default();
    let root = Path::root();
    let Some(mut o) = Obj::of(doc, &root, &mut cx) else {
        return Err(ConfigErrors(cx.errors));
    };
    let mut config = Config::default();
    // Registries first: upstreams are checked against them.
    if let Some((v, p)) = o.take("discovery") {
        config.discovery = parse_discovery(v, &p, &mut cx);
    }
    let env = Env {
        discovery: config.discovery.clone(),
        // The built-ins win: an embedder's entry cannot replace key-auth's schema.
        ext: ext.clone().merge(&crate::plugins::builtin_extensions()),
    };
    if let Some((v, p)) = o.take("server") {
        config.server = parse_server(v, &p, &mut cx);
    }
    config.admin = o
        .take("admin")
        .and_then(|(v, p)| parse_admin(v, &p, &mut cx));
    config.control = o
        .take("control")
        .and_then(|(v, p)| parse_control(v, &p, &mut cx));
    if let Some((v, p)) = o.take("config_source") {
        config.config_source = parse_config_source(v, &p, &mut cx);
    }
    if matches!(config.config_source, ConfigSource::Etcd(_)) {
        for kind in RESOURCE_KINDS {
            if o.has(kind) {
                cx.err(
                    &root.field(kind),
                    "not allowed with config_source.etcd (resources live in etcd)",
                );
            }
        }
    }

    let (routes, _) = resource_list(&mut o, &mut cx, "routes", "id", |v, p, cx| {
        parse_route(v, p, cx, &env)
    });
    let (services, bad_services) = resource_list(&mut o, &mut cx, "services", "id", |v, p, cx| {
        parse_service(v, p, cx, &env)
    });
    let (upstreams, bad_upstreams) =
        resource_list(&mut o, &mut cx, "upstreams", "id", |v, p, cx| {
            parse_upstream(v, p, cx, &env, Placement::Standalone)
        });
    let (consumers, _) = resource_list(&mut o, &mut cx, "consumers", "username", parse_consumer);
    let (certificates, bad_certificates) =
        resource_list(&mut o, &mut cx, "certificates", "id", parse_certificate);
    let (cas, bad_cas) = resource_list(
        &mut o,
        &mut cx,
        "ca_certificates",
        "id",
        parse_ca_certificate,
    );
    o.finish(&mut cx);

    check_unique(
        &mut cx,
        "id",
        routes.iter().map(|(r, p)| (r.id.as_str(), p)),
    );
    check_unique(
        &mut cx,
        "id",
        services.iter().map(|(s, p)| (s.id.as_str(), p)),
    );
    check_unique(
        &mut cx,
        "id",
        upstreams
            .iter()
            .filter_map(|(u, p)| u.id.as_ref().map(|id| (id.as_str(), p))),
    );
    check_unique(
        &mut cx,
        "username",
        consumers.iter().map(|(c, p)| (c.username.as_str(), p)),
    );
    check_unique(
        &mut cx,
        "id",
        certificates.iter().map(|(c, p)| (c.id.as_str(), p)),
    );
    check_unique(&mut cx, "id", cas.iter().map(|(c, p)| (c.id.as_str(), p)));

    let (routes, route_paths): (Vec<_>, Vec<_>) = routes.into_iter().unzip();
    let (services, service_paths): (Vec<_>, Vec<_>) = services.into_iter().unzip();
    let (upstreams, upstream_paths): (Vec<_>, Vec<_>) = upstreams.into_iter().unzip();
    let (consumers, consumer_paths): (Vec<_>, Vec<_>) = consumers.into_iter().unzip();
    config.resources = Resources {
        routes,
        services,
        upstreams,
        consumers,
        certificates: certificates.into_iter().map(|(c, _)| c).collect(),
        ca_certificates: cas.into_iter().map(|(c, _)| c).collect(),
    };
    let paths = ResourcePaths {
        routes: route_paths,
        services: service_paths,
        upstreams: upstream_paths,
        consumers: consumer_paths,
        invalid: InvalidIds {
            services: bad_services,
            upstreams: bad_upstreams,
            certificates: bad_certificates,
            ca_certificates: bad_cas,
        },
    };
    config.resources.check_references(&paths, &mut cx);
    for (i, t) in config.server.tls_listen.iter().enumerate() {
        if config.resources.certificate(&t.certificate).is_none()
            && !listed(&paths.invalid.certificates, &t.certificate)
        {
            cx.err(
                &root
                    .field("server")
                    .field("tls_listen")
                    .index(i)
                    .field("certificate"),
                format!("unknown certificate {:?}", t.certificate.0),
            );
        }
    }

    usage_warnings(&config, &paths, &mut cx);

    let mut warnings = ConfigErrors(cx.warnings);
    warnings.sort_by_document(doc);
    if cx.errors.is_empty() {
        Ok(Loaded {
            config,
            warnings: warnings.0,
        })
    } else {
        let mut errors = ConfigErrors(cx.errors);
        errors.sort_by_document(doc);
        Err(errors)
    }
}
