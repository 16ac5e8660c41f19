//! The `plugins:` blocks of routes, services and consumers. Plugin names are checked: an
//! unknown name is an error, so a typo never silently disables authentication.

use crate::cert::Secret;
use crate::extensions::{Extensions, Typed};
use crate::path::Path;
use crate::reader::{self, Cx, Obj};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// `key-auth` on a route or service (docs/configuration.md): the configuration type of the
/// built-in key-auth plugin, registered like any plugin's (see [`builtin_extensions`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeyAuth {
    #[serde(deserialize_with = "null_as_default")]
    pub header: String,
    #[serde(deserialize_with = "null_as_default")]
    pub query: String,
    #[serde(deserialize_with = "null_as_default")]
    pub hide_credentials: bool,
}

/// A member written as `null` is absent (as everywhere in the configuration): the default.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// key-auth's validation: the same rules and messages as every other block of the
/// configuration (every error at once, `null` as absent).
struct KeyAuthSchema;

impl crate::extensions::Schema for KeyAuthSchema {
    fn check(&self, value: &Value) -> Vec<(Path, String)> {
        let mut cx = Cx::default();
        let root = Path::root();
        if let Some(mut ko) = Obj::of(value, &root, &mut cx) {
            ko.str(&mut cx, "header");
            ko.str(&mut cx, "query");
            ko.bool(&mut cx, "hide_credentials", false);
            ko.finish(&mut cx);
        }
        cx.errors.into_iter().map(|e| (e.path, e.reason)).collect()
    }
}

impl Default for KeyAuth {
    fn default() -> Self {
        KeyAuth {
            header: "apikey".into(),
            query: "apikey".into(),
            hide_credentials: false,
        }
    }
}

/// `request-id` on a route or service (APISIX's): a request without `header_name` gets a new
/// UUID v4, sent upstream and, with `include_in_response`, returned to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestId {
    #[serde(deserialize_with = "null_as_default_or")]
    pub header_name: String,
    pub include_in_response: bool,
    /// How ids are made: `uuid` (APISIX's default; its `nanoid` and `range_id` are not
    /// offered).
    pub algorithm: RequestIdAlgorithm,
}

/// The id generators of `request-id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestIdAlgorithm {
    #[default]
    Uuid,
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId {
            header_name: "X-Request-Id".into(),
            include_in_response: true,
            algorithm: RequestIdAlgorithm::Uuid,
        }
    }
}

/// `header_name: null` is the default name.
fn null_as_default_or<'de, D>(d: D) -> Result<String, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<String>::deserialize(d)?.unwrap_or_else(|| RequestId::default().header_name))
}

/// Plugins enabled on a route or service: name → configuration as written (each validated
/// by its plugin's schema when the configuration loaded).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plugins {
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, Value>,
}

impl Plugins {
    pub fn is_empty(&self) -> bool {
        self.other.is_empty()
    }

    /// Whether the plugin `name` is enabled.
    pub fn enabled(&self, name: &str) -> bool {
        self.other.contains_key(name)
    }

    /// Merge a service's plugins under a route's: for the same name, the route's config wins.
    pub fn merged_over(&self, service: &Plugins) -> Plugins {
        let mut other = service.other.clone();
        other.extend(self.other.iter().map(|(k, v)| (k.clone(), v.clone())));
        Plugins { other }
    }
}

/// The plugins Weir itself registers, the same way an embedder registers theirs: `key-auth`
/// and `request-id`.
pub fn builtin_extensions() -> Extensions {
    Extensions::new()
        .plugin_with("key-auth", Arc::new(KeyAuthSchema))
        .plugin_with("request-id", Arc::new(Typed::<RequestId>::new()))
}

/// Names of the built-in plugins (an embedder cannot register a plugin under one).
pub const BUILTIN_PLUGINS: &[&str] = &["key-auth", "request-id"];

fn unknown_plugin(cx: &mut Cx, p: &Path, name: &str, env: &crate::Env) {
    let known: Vec<&str> = env.ext.plugin_names().collect();
    cx.err(
        p,
        format!("unknown plugin {name:?} (known: {})", known.join(", ")),
    );
}

pub fn parse_plugins(v: &Value, p: &Path, cx: &mut Cx, env: &crate::Env) -> Plugins {
    let mut out = Plugins::default();
    let Some(mut o) = Obj::of(v, p, cx) else {
        return out;
    };
    for (name, pv, pp) in o.entries() {
        let Some(schema) = env.ext.plugin_schema(name) else {
            unknown_plugin(cx, &pp, name, env);
            continue;
        };
        if !pv.is_object() {
            cx.err(
                &pp,
                format!("must be an object, got {}", crate::error::show(pv)),
            );
            continue;
        }
        // The plugin's configuration is validated now, once, with paths.
        let errors = schema.map(|s| s.check(pv)).unwrap_or_default();
        if errors.is_empty() {
            out.other.insert(name.to_owned(), pv.clone());
        }
        for (rel, reason) in errors {
            cx.err(&pp.join(&rel), reason);
        }
    }
    out
}

/// A consumer (docs/configuration.md): identified by `username`, with a key-auth credential.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Consumer {
    pub username: String,
    #[serde(flatten)]
    pub meta: crate::common::Meta,
    /// The key-auth credential.
    pub key: Option<Secret>,
}

pub fn parse_consumer(v: &Value, p: &Path, cx: &mut Cx) -> Option<Consumer> {
    let mut o = Obj::of(v, p, cx)?;
    let before = cx.errors.len();
    let username = o.require(cx, "username").and_then(|(v, up)| {
        let s = reader::string(v, &up, cx)?;
        let ok = (1..=100).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            cx.err(
                &up,
                format!("must be 1..100 characters of [a-zA-Z0-9_-], got {s:?}"),
            );
            return None;
        }
        Some(s.to_owned())
    });
    let meta = crate::common::Meta::parse(&mut o, cx);
    let mut key = None;
    if let Some(mut po) = o.obj(cx, "plugins") {
        for (name, pv, pp) in po.entries() {
            match name {
                "key-auth" => {
                    let Some(mut ko) = Obj::of(pv, &pp, cx) else {
                        continue;
                    };
                    key = match ko.require(cx, "key") {
                        // Never echo the credential in an error.
                        Some((Value::String(s), _)) if !s.is_empty() => {
                            Some(Secret::new(s.clone()))
                        }
                        Some((_, kp)) => {
                            cx.err(&kp, "must be a non-empty string");
                            None
                        }
                        None => None,
                    };
                    ko.finish(cx);
                }
                _ => cx.err(&pp, format!("unknown plugin {name:?} (known: key-auth)")),
            }
        }
    }
    o.finish(cx);
    if cx.errors.len() != before {
        return None;
    }
    Some(Consumer {
        username: username?,
        meta,
        key,
    })
}
