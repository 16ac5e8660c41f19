//! The Admin API's requests and answers, independent of the HTTP server that carries them:
//! paths and verbs of APISIX 3 (`/apisix/admin/{kind}[/{id}[/{member path}]]`), answers in
//! its shapes (`{"key", "value"}`, `{"total", "list"}`), errors as `{"error_msg"}`.

use super::mask::{masked, unmask};
use super::merge::{merge_patch, replace_at};
use super::AdminApi;
use crate::set::{value_id, Kind, ResourceSet};
use crate::source::{Base, Change, StoreError};
use crate::validate::located;
use serde_json::{json, Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};
use weir_config::{ConfigError, ConfigErrors};

/// The path every Admin API resource lives under.
pub const PREFIX: &str = "/apisix/admin/";

/// An Admin API request, after the gate (address and key) and with its whole body.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a http::Method,
    /// The URI path, `/apisix/admin/upstreams/u1`.
    pub path: &'a str,
    /// The query string without `?`.
    pub query: Option<&'a str>,
    pub body: &'a [u8],
}

/// An Admin API answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// The store refused the write because it changed meanwhile: the request may be redone.
    conflict: bool,
}

impl Reply {
    pub fn new(status: u16, body: Value) -> Self {
        Reply {
            status,
            body,
            conflict: false,
        }
    }

    pub fn error(status: u16, msg: impl Into<String>) -> Self {
        Reply::new(status, json!({ "error_msg": msg.into() }))
    }
}

/// How often a write refused by a concurrent change is redone on the fresh state before the
/// 409 reaches the client.
const CONFLICT_RETRIES: usize = 3;

/// The key APISIX shows for a resource: `/apisix/upstreams/u1`.
pub fn resource_key(kind: Kind, id: &str) -> String {
    format!("/apisix/{}/{id}", kind.as_str())
}

fn item(kind: Kind, id: &str, value: &Value) -> Value {
    json!({"key": resource_key(kind, id), "value": masked(kind, value)})
}

/// The deepest member path a sub-path PATCH may name. No resource nests deeper; a longer
/// path would only build a deep tree of objects (and deep recursion to drop it).
const MAX_MEMBER_DEPTH: usize = 16;

/// What a path names.
enum Target<'p> {
    Collection(Kind),
    One(Kind, &'p str),
    Member(Kind, &'p str, Vec<&'p str>),
}

fn target(path: &str) -> Option<Target<'_>> {
    let rest = path.strip_prefix(PREFIX)?.trim_end_matches('/');
    let mut segs = rest.split('/');
    let kind = Kind::parse(segs.next()?)?;
    let Some(id) = segs.next() else {
        return Some(Target::Collection(kind));
    };
    if id.is_empty() {
        return None;
    }
    let member: Vec<&str> = segs.collect();
    if member.len() > MAX_MEMBER_DEPTH {
        return None;
    }
    if member.is_empty() {
        Some(Target::One(kind, id))
    } else if member.iter().any(|s| s.is_empty()) {
        None
    } else {
        Some(Target::Member(kind, id, member))
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Validation errors as `error_msg`: errors inside the written resource get paths relative
/// to the body (`nodes[0].port: ...`), others keep their document path.
fn error_msg(errors: &ConfigErrors, set: &ResourceSet, kind: Kind, id: &str) -> String {
    errors
        .iter()
        .map(|e| match located(set, &e.path) {
            Some((k, i)) if k == kind && i == id => ConfigError {
                path: e.path.skip(2),
                reason: e.reason.clone(),
                at: None,
            }
            .to_string(),
            _ => e.to_string(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn store_error(e: &StoreError) -> Reply {
    match e {
        StoreError::Invalid(_) => Reply::error(409, e.to_string()),
        StoreError::Unavailable(_) => Reply::error(503, e.to_string()),
        StoreError::Conflict(_) => Reply {
            conflict: true,
            ..Reply::error(409, e.to_string())
        },
    }
}

/// The id text of a reference value (`"u1"` or `7`).
fn ref_id(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        _ => None,
    }
}

/// The upstream objects of a resource: a standalone upstream, or a route's or service's
/// inline one.
fn upstreams_of(kind: Kind, v: &Value) -> Option<&Value> {
    match kind {
        Kind::Upstreams => Some(v),
        Kind::Routes | Kind::Services => v.get("upstream"),
        _ => None,
    }
}

/// Who refers to `kind`/`id`: `route "r1"`, `server.tls_listen[0]`.
fn referrers(base: &Base, kind: Kind, id: &str) -> Vec<String> {
    let mut out = Vec::new();
    let is = |v: Option<&Value>| ref_id(v).as_deref() == Some(id);
    for k in [Kind::Routes, Kind::Services, Kind::Upstreams] {
        for (rid, v) in base.set.list(k) {
            let refers = match kind {
                Kind::Upstreams => k != Kind::Upstreams && is(v.get("upstream_id")),
                Kind::Services => k == Kind::Routes && is(v.get("service_id")),
                Kind::Certificates => upstreams_of(k, v).is_some_and(|u| {
                    is(u.get("client_certificate"))
                        || is(u.get("tls").and_then(|t| t.get("client_cert_id")))
                }),
                Kind::CaCertificates => upstreams_of(k, v).is_some_and(|u| {
                    u.get("ca_certificates")
                        .and_then(Value::as_array)
                        .is_some_and(|a| a.iter().any(|c| is(Some(c))))
                }),
                Kind::Routes | Kind::Consumers => false,
            };
            if refers {
                out.push(format!("{} {rid:?}", k.singular()));
            }
        }
    }
    if kind == Kind::Certificates {
        let listeners = base
            .validator
            .settings()
            .get("server")
            .and_then(|s| s.get("tls_listen"))
            .and_then(Value::as_array);
        for (i, l) in listeners.into_iter().flatten().enumerate() {
            if is(l.get("certificate")) {
                out.push(format!("server.tls_listen[{i}]"));
            }
        }
    }
    out
}

fn parse_body(body: &[u8]) -> Result<Value, Reply> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Reply::error(
            400,
            "request body is empty; a JSON object is required",
        ));
    }
    serde_json::from_slice::<Value>(body)
        .map_err(|e| Reply::error(400, format!("invalid JSON in request body: {e}")))
}

fn page_of<'a>(query: Option<&str>, items: &'a [(String, Value)]) -> &'a [(String, Value)] {
    let mut page = None;
    let mut size = None;
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "page" => page = v.parse::<usize>().ok().filter(|p| *p >= 1),
            "page_size" => size = v.parse::<usize>().ok().filter(|s| *s >= 1),
            _ => {}
        }
    }
    match (page, size) {
        (None, None) => items,
        (p, s) => {
            let size = s.unwrap_or(10);
            let start = (p.unwrap_or(1) - 1).saturating_mul(size).min(items.len());
            let end = start.saturating_add(size).min(items.len());
            &items[start..end]
        }
    }
}

impl AdminApi {
    /// Answer one request (after [`AdminApi::gate`]). A write refused because the store
    /// changed meanwhile (another instance wrote) is redone from the fresh state, a few times.
    pub async fn handle(&self, req: Request<'_>) -> Reply {
        let mut reply = self.handle_once(req).await;
        for _ in 1..CONFLICT_RETRIES {
            if !reply.conflict {
                break;
            }
            reply = self.handle_once(req).await;
        }
        reply
    }

    async fn handle_once(&self, req: Request<'_>) -> Reply {
        let Some(t) = target(req.path) else {
            return Reply::error(404, format!("not found: {}", req.path));
        };
        use http::Method as M;
        match (req.method, t) {
            (&M::GET, Target::Collection(kind)) => {
                let set = self.backend.current();
                let items = set.list(kind);
                let list: Vec<Value> = page_of(req.query, items)
                    .iter()
                    .map(|(id, v)| item(kind, id, v))
                    .collect();
                Reply::new(200, json!({"total": items.len(), "list": list}))
            }
            (&M::GET, Target::One(kind, id)) => match self.backend.current().get(kind, id) {
                Some(v) => Reply::new(200, item(kind, id, v)),
                None => not_found(kind, id),
            },
            (&M::PUT, Target::Collection(kind)) => {
                let body = match parse_body(req.body) {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                match value_id(kind, &body) {
                    Some(id) => self.put(kind, &id, body, false).await,
                    None => Reply::error(400, format!("{}: required", kind.id_key())),
                }
            }
            (&M::PUT, Target::One(kind, id)) => match parse_body(req.body) {
                Ok(body) => self.put(kind, id, body, false).await,
                Err(r) => r,
            },
            (&M::POST, Target::Collection(kind)) => match parse_body(req.body) {
                Ok(body) => self.post(kind, body).await,
                Err(r) => r,
            },
            (&M::PATCH, Target::One(kind, id)) => match parse_body(req.body) {
                Ok(body) => self.patch(kind, id, &[], body).await,
                Err(r) => r,
            },
            (&M::PATCH, Target::Member(kind, id, member)) => {
                // A member's new value may be any JSON, including a bare string.
                match serde_json::from_slice::<Value>(req.body) {
                    Ok(body) => self.patch(kind, id, &member, body).await,
                    Err(e) => Reply::error(400, format!("invalid JSON in request body: {e}")),
                }
            }
            (&M::DELETE, Target::One(kind, id)) => self.delete(kind, id).await,
            (_, Target::Collection(_)) => Reply::error(
                405,
                format!("{} is not allowed on a collection", req.method),
            ),
            (_, Target::One(..)) => {
                Reply::error(405, format!("{} is not allowed on a resource", req.method))
            }
            (_, Target::Member(..)) => {
                Reply::error(405, "only PATCH is allowed on a member of a resource")
            }
        }
    }

    /// Store `value` as `kind`/`id`: 201 when it is new, 200 when it replaced a resource.
    async fn put(&self, kind: Kind, id: &str, body: Value, created_only: bool) -> Reply {
        let Value::Object(mut obj) = body else {
            return Reply::error(400, "must be an object");
        };
        if let Some(inner) = value_id(kind, &Value::Object(obj.clone())) {
            if inner != id {
                return Reply::error(
                    400,
                    format!(
                        "{}: must equal the id in the path ({id:?}), got {inner:?}",
                        kind.id_key()
                    ),
                );
            }
        } else if obj.contains_key(kind.id_key()) {
            // Not a usable id: let validation say what is wrong with it.
        } else {
            // The id first, as a reader of the file or of etcd expects it.
            let mut with_id = Map::with_capacity(obj.len() + 1);
            with_id.insert(kind.id_key().to_owned(), Value::String(id.to_owned()));
            with_id.extend(obj);
            obj = with_id;
        }
        let _serial = self.writes.lock().await;
        let base = match self.backend.base().await {
            Ok(b) => b,
            Err(e) => return store_error(&e),
        };
        let existing = base.set.get(kind, id);
        if created_only && existing.is_some() {
            return Reply::error(409, format!("{} {id:?} already exists", kind.singular()));
        }
        stamp(&mut obj, existing);
        let status = if existing.is_some() { 200 } else { 201 };
        let mut value = Value::Object(obj);
        if let Err(e) = unmask(kind, &mut value, existing) {
            return Reply::error(400, e);
        }
        let change = Change::Put {
            kind,
            id: id.to_owned(),
            value: value.clone(),
        };
        match self.write(&base, &change).await {
            Ok(()) => Reply::new(status, item(kind, id, &value)),
            Err(r) => r,
        }
    }

    /// Create a resource with a generated id (201).
    async fn post(&self, kind: Kind, body: Value) -> Reply {
        if kind == Kind::Consumers {
            return Reply::error(
                400,
                "POST is not supported for consumers: PUT /apisix/admin/consumers with a username",
            );
        }
        if body.get(kind.id_key()).is_some() {
            return Reply::error(
                400,
                format!(
                    "{}: not allowed with POST (PUT to a path with the id instead)",
                    kind.id_key()
                ),
            );
        }
        let id = self.next_id();
        self.put(kind, &id, body, true).await
    }

    /// Merge `body` into the stored resource (RFC 7396), or replace the member at `member`.
    async fn patch(&self, kind: Kind, id: &str, member: &[&str], body: Value) -> Reply {
        if member.is_empty() && !body.is_object() {
            return Reply::error(400, "must be an object (a JSON merge patch)");
        }
        let _serial = self.writes.lock().await;
        let base = match self.backend.base().await {
            Ok(b) => b,
            Err(e) => return store_error(&e),
        };
        let Some(existing) = base.set.get(kind, id) else {
            return not_found(kind, id);
        };
        let mut value = existing.clone();
        if member.is_empty() {
            merge_patch(&mut value, &body);
        } else if let Err(e) = replace_at(&mut value, member, body) {
            return Reply::error(400, e);
        }
        if value_id(kind, &value).as_deref() != Some(id) {
            return Reply::error(
                400,
                format!("{}: cannot be changed by PATCH", kind.id_key()),
            );
        }
        if let Value::Object(obj) = &mut value {
            stamp(obj, Some(existing));
        }
        if let Err(e) = unmask(kind, &mut value, Some(existing)) {
            return Reply::error(400, e);
        }
        let change = Change::Put {
            kind,
            id: id.to_owned(),
            value: value.clone(),
        };
        match self.write(&base, &change).await {
            Ok(()) => Reply::new(200, item(kind, id, &value)),
            Err(r) => r,
        }
    }

    async fn delete(&self, kind: Kind, id: &str) -> Reply {
        let _serial = self.writes.lock().await;
        let base = match self.backend.base().await {
            Ok(b) => b,
            Err(e) => return store_error(&e),
        };
        if base.set.get(kind, id).is_none() {
            return not_found(kind, id);
        }
        let users = referrers(&base, kind, id);
        if !users.is_empty() {
            return Reply::error(
                400,
                format!(
                    "cannot delete {} {id:?}: still referenced by {}",
                    kind.singular(),
                    users.join(", ")
                ),
            );
        }
        let change = Change::Delete {
            kind,
            id: id.to_owned(),
        };
        match self.write(&base, &change).await {
            Ok(()) => Reply::new(200, json!({"deleted": "1", "key": resource_key(kind, id)})),
            Err(r) => r,
        }
    }

    /// Validate `change` against the whole resulting configuration, then store it.
    async fn write(&self, base: &Base, change: &Change) -> Result<(), Reply> {
        let resulting = change.applied_to(&base.set);
        if let Err(errors) = base.validator.check(&resulting) {
            let msg = error_msg(&errors, &resulting, change.kind(), change.id());
            return Err(Reply::error(400, msg));
        }
        self.backend
            .commit(base, change, &resulting)
            .await
            .map_err(|e| store_error(&e))
    }

    /// A fresh id for POST: 20 digits, increasing, like APISIX's.
    fn next_id(&self) -> String {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut last = self.last_id.lock().unwrap_or_else(|p| p.into_inner());
        *last = (*last + 1).max(micros);
        format!("{:020}", *last)
    }
}

fn not_found(kind: Kind, id: &str) -> Reply {
    Reply::error(404, format!("{} {id:?} not found", kind.singular()))
}

/// APISIX's timestamps: `create_time` kept from the stored resource (or now), `update_time`
/// now.
fn stamp(obj: &mut Map<String, Value>, existing: Option<&Value>) {
    let t = now();
    let created = existing
        .and_then(|e| e.get("create_time"))
        .cloned()
        .or_else(|| obj.get("create_time").cloned())
        .unwrap_or_else(|| json!(t));
    obj.insert("create_time".into(), created);
    obj.insert("update_time".into(), json!(t));
}
