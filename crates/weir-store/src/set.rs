//! [`ResourceSet`]: resources as a source stores them (JSON values by kind and id, in a stable
//! order), before validation turns them into a typed [`weir_config::Resources`].
//!
//! The raw values are what the Admin API returns and merges into, what the file write-back
//! writes and what etcd holds; validation always runs on the whole set, so references and
//! uniqueness rules are checked across resources.

use serde_json::{Map, Value};
use std::fmt;

/// The six resource kinds, in the order the file lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Routes,
    Services,
    Upstreams,
    Consumers,
    Certificates,
    CaCertificates,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Routes,
        Kind::Services,
        Kind::Upstreams,
        Kind::Consumers,
        Kind::Certificates,
        Kind::CaCertificates,
    ];

    /// The plural name used in the file, in etcd keys and in Admin API paths.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Routes => "routes",
            Kind::Services => "services",
            Kind::Upstreams => "upstreams",
            Kind::Consumers => "consumers",
            Kind::Certificates => "certificates",
            Kind::CaCertificates => "ca_certificates",
        }
    }

    /// One resource of this kind, in messages: `upstream "u1"`.
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Routes => "route",
            Kind::Services => "service",
            Kind::Upstreams => "upstream",
            Kind::Consumers => "consumer",
            Kind::Certificates => "certificate",
            Kind::CaCertificates => "ca_certificate",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The member that identifies a resource: `username` for consumers, `id` otherwise.
    pub fn id_key(self) -> &'static str {
        match self {
            Kind::Consumers => "username",
            _ => "id",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The id a resource value carries (`id`, or `username` for consumers): a string, or a
/// non-negative integer as its decimal text.
pub fn value_id(kind: Kind, v: &Value) -> Option<String> {
    match v.get(kind.id_key())? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        _ => None,
    }
}

/// The resources `v` (a resource of `kind`) refers to by id: a route's `service_id` and
/// `upstream_id`, the certificates an upstream (standalone or inline) uses.
pub fn references(kind: Kind, v: &Value) -> Vec<(Kind, String)> {
    let text = |v: Option<&Value>| match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => n.as_u64().map(|n| n.to_string()),
        _ => None,
    };
    let mut out = Vec::new();
    if matches!(kind, Kind::Routes | Kind::Services) {
        out.extend(text(v.get("upstream_id")).map(|i| (Kind::Upstreams, i)));
    }
    if kind == Kind::Routes {
        out.extend(text(v.get("service_id")).map(|i| (Kind::Services, i)));
    }
    let upstream = match kind {
        Kind::Upstreams => Some(v),
        Kind::Routes | Kind::Services => v.get("upstream"),
        _ => None,
    };
    if let Some(u) = upstream {
        out.extend(text(u.get("client_certificate")).map(|i| (Kind::Certificates, i)));
        out.extend(
            text(u.get("tls").and_then(|t| t.get("client_cert_id")))
                .map(|i| (Kind::Certificates, i)),
        );
        for c in u
            .get("ca_certificates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.extend(text(Some(c)).map(|i| (Kind::CaCertificates, i)));
        }
    }
    out
}

/// Resources by kind, each kind in a stable order (first stored first), each value carrying
/// its id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceSet {
    kinds: [Vec<(String, Value)>; 6],
}

impl ResourceSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// The resources of a configuration document (a file's `routes`, `upstreams`, ...).
    /// Items without a usable id are kept under their position (`#3`), so that validation
    /// still reports them.
    pub fn from_document(doc: &Value) -> Self {
        let mut set = ResourceSet::new();
        for kind in Kind::ALL {
            let Some(items) = doc.get(kind.as_str()).and_then(Value::as_array) else {
                continue;
            };
            for (i, item) in items.iter().enumerate() {
                let id = value_id(kind, item).unwrap_or_else(|| format!("#{i}"));
                set.kinds[kind.index()].push((id, item.clone()));
            }
        }
        set
    }

    /// The resource `kind`/`id`.
    pub fn get(&self, kind: Kind, id: &str) -> Option<&Value> {
        self.kinds[kind.index()]
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, v)| v)
    }

    /// Every resource of `kind`, in order.
    pub fn list(&self, kind: Kind) -> &[(String, Value)] {
        &self.kinds[kind.index()]
    }

    /// Store `value` as `kind`/`id` (in place when it exists, else last). Returns the value
    /// it replaced.
    pub fn put(&mut self, kind: Kind, id: &str, value: Value) -> Option<Value> {
        let items = &mut self.kinds[kind.index()];
        match items.iter_mut().find(|(i, _)| i == id) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                items.push((id.to_owned(), value));
                None
            }
        }
    }

    /// Remove `kind`/`id`; returns its value.
    pub fn remove(&mut self, kind: Kind, id: &str) -> Option<Value> {
        let items = &mut self.kinds[kind.index()];
        let at = items.iter().position(|(i, _)| i == id)?;
        Some(items.remove(at).1)
    }

    /// The position of `kind`/`id` in its kind's order (the index validation paths use).
    pub fn position(&self, kind: Kind, id: &str) -> Option<usize> {
        self.kinds[kind.index()].iter().position(|(i, _)| i == id)
    }

    /// The id at `index` of `kind`.
    pub fn id_at(&self, kind: Kind, index: usize) -> Option<&str> {
        self.kinds[kind.index()].get(index).map(|(i, _)| i.as_str())
    }

    /// How many resources of every kind.
    pub fn len(&self) -> usize {
        self.kinds.iter().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The resource sections of a configuration document: one array per non-empty kind, each
    /// value with its id member set (a value stored without one, as etcd allows, gets the
    /// key's). `settings` are the process sections placed before them.
    pub fn to_document(&self, settings: &Map<String, Value>) -> Value {
        let mut doc = settings.clone();
        for kind in Kind::ALL {
            let items = &self.kinds[kind.index()];
            if items.is_empty() {
                continue;
            }
            let list = items
                .iter()
                .map(|(id, v)| with_id(kind, id, v))
                .collect::<Vec<_>>();
            doc.insert(kind.as_str().to_owned(), Value::Array(list));
        }
        Value::Object(doc)
    }
}

/// `v` with its id member: kept when present (validation compares it with the key), the key's
/// id otherwise (as a string, first).
pub(crate) fn with_id(kind: Kind, id: &str, v: &Value) -> Value {
    match v {
        Value::Object(m) if !m.contains_key(kind.id_key()) && !id.starts_with('#') => {
            let mut m2 = Map::with_capacity(m.len() + 1);
            m2.insert(kind.id_key().to_owned(), Value::String(id.to_owned()));
            m2.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
            Value::Object(m2)
        }
        _ => v.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn put_replaces_in_place_and_appends_new_ids() {
        let mut s = ResourceSet::new();
        assert_eq!(
            s.put(Kind::Upstreams, "a", json!({"id": "a", "n": 1})),
            None
        );
        s.put(Kind::Upstreams, "b", json!({"id": "b"}));
        let old = s.put(Kind::Upstreams, "a", json!({"id": "a", "n": 2}));
        assert_eq!(old, Some(json!({"id": "a", "n": 1})));
        let ids: Vec<_> = s
            .list(Kind::Upstreams)
            .iter()
            .map(|(i, _)| i.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(
            s.remove(Kind::Upstreams, "a"),
            Some(json!({"id": "a", "n": 2}))
        );
        assert_eq!(s.position(Kind::Upstreams, "b"), Some(0));
    }

    #[test]
    fn documents_round_trip_and_ids_are_filled_in() {
        let doc = json!({
            "routes": [{"id": 1, "uri": "/"}],
            "consumers": [{"username": "alice"}],
            "upstreams": [{"nodes": {}}],
        });
        let s = ResourceSet::from_document(&doc);
        assert_eq!(s.id_at(Kind::Routes, 0), Some("1"));
        assert_eq!(s.id_at(Kind::Consumers, 0), Some("alice"));
        assert_eq!(s.id_at(Kind::Upstreams, 0), Some("#0"));
        let mut s2 = ResourceSet::new();
        s2.put(Kind::Services, "s1", json!({"upstream_id": "u"}));
        let d = s2.to_document(&Map::new());
        assert_eq!(d, json!({"services": [{"id": "s1", "upstream_id": "u"}]}));
    }
}
