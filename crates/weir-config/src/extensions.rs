//! [`Extensions`]: what an embedder registered next to the built-ins (plugins, discovery
//! registries, selection algorithms, health checks), which a configuration may then name; and
//! [`Schema`]: how an extension's own configuration block is validated when the configuration
//! loads, with paths in its errors.

use crate::path::Path;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

/// Validates an extension's configuration block (a plugin's `plugins.<name>` object, an
/// algorithm's parameters).
pub trait Schema: Send + Sync {
    /// Every error of `value`, each with its path relative to the block and its reason.
    fn check(&self, value: &Value) -> Vec<(Path, String)>;
}

/// The [`Schema`] of a serde type: the block must deserialize into `T` (use
/// `#[serde(deny_unknown_fields)]` to refuse unknown members). Errors read like the rest of
/// validation: `header: missing field`, `ttl: invalid type: string "x", expected u64`.
pub struct Typed<T>(PhantomData<fn() -> T>);

impl<T> Typed<T> {
    pub fn new() -> Self {
        Typed(PhantomData)
    }
}

impl<T> Default for Typed<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: DeserializeOwned> Schema for Typed<T> {
    fn check(&self, value: &Value) -> Vec<(Path, String)> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(_) => Vec::new(),
            Err(e) => vec![serde_error(e)],
        }
    }
}

/// A serde error as a path and a reason. serde names a missing or unknown member in the
/// message of the object that holds it; the path here names the member itself.
fn serde_error(e: serde_path_to_error::Error<serde_json::Error>) -> (Path, String) {
    let mut path = Path::root();
    for seg in e.path().iter() {
        use serde_path_to_error::Segment;
        path = match seg {
            Segment::Seq { index } => path.index(*index),
            // Struct members and map keys look the same to serde: a name is shown as a field.
            Segment::Map { key }
                if !key.is_empty()
                    && key
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                path.field(key)
            }
            Segment::Map { key } => path.key(key),
            Segment::Enum { variant } => path.field(variant),
            Segment::Unknown => path,
        };
    }
    let msg = e.inner().to_string();
    // serde_json appends " at line L column C", meaningless for a value tree.
    let msg = match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg,
    };
    for (prefix, reason) in [
        ("missing field `", "missing field"),
        ("unknown field `", "unknown field"),
    ] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            if let Some(end) = rest.find('`') {
                let member = &rest[..end];
                // An unknown member is already the last step of serde's path.
                let already = path.to_string().rsplit('.').next() == Some(member);
                let path = if already { path } else { path.field(member) };
                return (path, reason.to_owned());
            }
        }
    }
    (path, msg)
}

/// The names an embedder registered next to the built-ins. Validation accepts them and lists
/// them when a name is unknown.
#[derive(Clone, Default)]
pub struct Extensions {
    plugins: BTreeMap<String, Option<Arc<dyn Schema>>>,
    discovery: BTreeSet<String>,
    algorithms: BTreeMap<String, Option<Arc<dyn Schema>>>,
    checks: BTreeSet<String>,
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions")
            .field("plugins", &self.plugins.keys().collect::<Vec<_>>())
            .field("discovery", &self.discovery)
            .field("algorithms", &self.algorithms.keys().collect::<Vec<_>>())
            .field("checks", &self.checks)
            .finish()
    }
}

impl Extensions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Accept the plugin `name`, with any JSON object as its configuration.
    pub fn plugin(mut self, name: &str) -> Self {
        self.plugins.insert(name.to_owned(), None);
        self
    }

    /// Accept the plugin `name`, its configuration validated by `schema`.
    pub fn plugin_with(mut self, name: &str, schema: Arc<dyn Schema>) -> Self {
        self.plugins.insert(name.to_owned(), Some(schema));
        self
    }

    /// Accept `name` as a `discovery_type`.
    pub fn discovery(mut self, name: &str) -> Self {
        self.discovery.insert(name.to_owned());
        self
    }

    /// Accept `name` as an upstream `type`; its parameters (the upstream's `<name>` block)
    /// validated by `schema` when given.
    pub fn algorithm(mut self, name: &str, schema: Option<Arc<dyn Schema>>) -> Self {
        self.algorithms.insert(name.to_owned(), schema);
        self
    }

    /// Accept `name` as a `checks.active.type`.
    pub fn check(mut self, name: &str) -> Self {
        self.checks.insert(name.to_owned());
        self
    }

    /// Accept everything `other` accepts too.
    pub fn merge(mut self, other: &Extensions) -> Self {
        self.plugins
            .extend(other.plugins.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.discovery.extend(other.discovery.iter().cloned());
        self.algorithms
            .extend(other.algorithms.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.checks.extend(other.checks.iter().cloned());
        self
    }

    /// Whether the plugin `name` is registered, and its schema.
    pub fn plugin_schema(&self, name: &str) -> Option<Option<&Arc<dyn Schema>>> {
        self.plugins.get(name).map(Option::as_ref)
    }

    /// The registered plugin names, sorted.
    pub fn plugin_names(&self) -> impl Iterator<Item = &str> {
        self.plugins.keys().map(String::as_str)
    }

    /// The registered discovery registry names, sorted.
    pub fn discovery_names(&self) -> impl Iterator<Item = &str> {
        self.discovery.iter().map(String::as_str)
    }

    /// Whether the algorithm `name` is registered, and its schema.
    pub fn algorithm_schema(&self, name: &str) -> Option<Option<&Arc<dyn Schema>>> {
        self.algorithms.get(name).map(Option::as_ref)
    }

    /// The registered algorithm names, sorted.
    pub fn algorithm_names(&self) -> impl Iterator<Item = &str> {
        self.algorithms.keys().map(String::as_str)
    }

    /// The registered health check names, sorted.
    pub fn check_names(&self) -> impl Iterator<Item = &str> {
        self.checks.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct AddHeader {
        header: String,
        #[serde(default)]
        values: Vec<u32>,
    }

    fn errors(v: Value) -> Vec<String> {
        Typed::<AddHeader>::new()
            .check(&v)
            .into_iter()
            .map(|(p, r)| format!("{p}: {r}"))
            .collect()
    }

    #[test]
    fn typed_schemas_name_the_member() {
        assert!(errors(json!({"header": "x"})).is_empty());
        assert_eq!(errors(json!({})), ["header: missing field"]);
        assert_eq!(
            errors(json!({"header": "x", "hedaer": 1})),
            ["hedaer: unknown field"]
        );
        assert_eq!(
            errors(json!({"header": "x", "values": [1, "two"]})),
            ["values[1]: invalid type: string \"two\", expected u32"]
        );
    }
}
