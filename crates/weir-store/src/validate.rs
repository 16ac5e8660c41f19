//! Validation of a whole [`ResourceSet`] against the process settings it runs under, and
//! [`Validator::settle`]: the largest valid set reachable from a candidate, for sources that
//! must load what they can (etcd at start-up, a watch batch) instead of refusing everything.

use crate::set::{value_id, Kind, ResourceSet};
use serde_json::{Map, Value};
use weir_config::path::Seg;
use weir_config::{Config, ConfigError, ConfigErrors, Extensions, Path};

/// Validates resource sets as one configuration document: the process settings they run
/// under (`server`, `discovery`, ...) plus the resources.
#[derive(Debug, Clone, Default)]
pub struct Validator {
    settings: Map<String, Value>,
    ext: Extensions,
}

/// What [`Validator::settle`] did to one resource of the candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The resource keeps the value it had before the change.
    KeptPrevious,
    /// The resource is left out (it had no valid previous value).
    Skipped,
    /// A deletion was undone: something still depends on the resource.
    Restored,
}

/// A resource [`Validator::settle`] could not take as it was written.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub kind: Kind,
    pub id: String,
    pub outcome: Outcome,
    /// Why: errors inside the resource with paths relative to it (`uri: ...`), errors
    /// elsewhere that it caused with their document paths.
    pub errors: Vec<ConfigError>,
}

impl Rejection {
    /// The errors on one line, joined with `"; "`.
    pub fn message(&self) -> String {
        ConfigErrors(self.errors.clone()).joined()
    }
}

/// The outcome of settling a candidate: a valid set, its typed configuration, and what had to
/// be rejected on the way.
#[derive(Debug, Clone)]
pub struct Settled {
    pub set: ResourceSet,
    pub config: Config,
    pub rejected: Vec<Rejection>,
}

impl Validator {
    /// A validator for resources that run under `settings`, a configuration document's
    /// process sections. Resource sections in it are ignored, and so is `config_source`
    /// (resources from etcd are validated as if they were in the file).
    pub fn new(settings: &Value) -> Self {
        let mut m = settings.as_object().cloned().unwrap_or_default();
        for kind in Kind::ALL {
            m.remove(kind.as_str());
        }
        m.remove("config_source");
        Validator {
            settings: m,
            ..Validator::default()
        }
    }

    /// Also accept what the embedder registered (plugins, registries, algorithms, checks).
    pub fn with_extensions(mut self, ext: &Extensions) -> Self {
        self.ext = ext.clone();
        self
    }

    /// The process sections resources are validated under.
    pub fn settings(&self) -> &Map<String, Value> {
        &self.settings
    }

    /// Validate `set` as a whole: every error, each with its document path.
    pub fn check(&self, set: &ResourceSet) -> Result<Config, ConfigErrors> {
        let mut errors = id_mismatches(set);
        let doc = set.to_document(&self.settings);
        match weir_config::parse_document_ext(&doc, &self.ext) {
            Ok(loaded) if errors.is_empty() => Ok(loaded.config),
            Ok(_) => Err(ConfigErrors(errors)),
            Err(e) => {
                errors.extend(e.0);
                Err(ConfigErrors(errors))
            }
        }
    }

    /// The valid set closest to `candidate`, given that `previous` was valid: a resource
    /// whose new value is invalid keeps its previous value (or is skipped when it had none),
    /// a deletion something still depends on is undone, and a resource that only fails
    /// because of what it references goes with it. `Err` only for errors no resource can be
    /// blamed for and that undoing every change does not cure.
    pub fn settle(
        &self,
        candidate: ResourceSet,
        previous: &ResourceSet,
    ) -> Result<Settled, ConfigErrors> {
        let mut set = candidate;
        let mut rejected: Vec<Rejection> = Vec::new();
        // Each round undoes at least one difference from `previous`, or all of them.
        loop {
            let errors = match self.check(&set) {
                Ok(config) => {
                    return Ok(Settled {
                        set,
                        config,
                        rejected,
                    })
                }
                Err(e) => e,
            };
            // A reference to a resource this change deleted: the deletion is what is wrong.
            let mut undone = false;
            for (kind, id) in deletions(&set, previous) {
                let missing = format!("unknown {} {id:?}", kind.singular());
                let hits: Vec<ConfigError> = errors
                    .iter()
                    .filter(|e| e.reason == missing)
                    .cloned()
                    .collect();
                if hits.is_empty() {
                    continue;
                }
                if let Some(v) = previous.get(kind, &id) {
                    set.put(kind, &id, v.clone());
                }
                rejected.push(Rejection {
                    kind,
                    id,
                    outcome: Outcome::Restored,
                    errors: hits,
                });
                undone = true;
            }
            if undone {
                continue;
            }
            let (blamed, unattributed) = blame(&set, errors);
            for (kind, id, errs) in &blamed {
                let now = set.get(*kind, id);
                let before = previous.get(*kind, id);
                if now == before {
                    continue;
                }
                let outcome = match before {
                    Some(v) => {
                        set.put(*kind, id, v.clone());
                        Outcome::KeptPrevious
                    }
                    None => {
                        set.remove(*kind, id);
                        Outcome::Skipped
                    }
                };
                rejected.push(Rejection {
                    kind: *kind,
                    id: id.clone(),
                    outcome,
                    errors: errs.iter().map(relative).collect(),
                });
                undone = true;
            }
            if undone {
                continue;
            }
            // Only unchanged resources fail, or nothing can be blamed: a change elsewhere
            // broke them. Undo deletions first, then every change.
            let errs: Vec<ConfigError> = blamed
                .into_iter()
                .flat_map(|(_, _, e)| e)
                .chain(unattributed.0)
                .collect();
            let deleted = deletions(&set, previous);
            if !deleted.is_empty() {
                for (kind, id) in deleted {
                    if let Some(v) = previous.get(kind, &id) {
                        set.put(kind, &id, v.clone());
                    }
                    rejected.push(Rejection {
                        kind,
                        id,
                        outcome: Outcome::Restored,
                        errors: errs.clone(),
                    });
                }
                continue;
            }
            if set == *previous {
                return Err(ConfigErrors(errs));
            }
            for kind in Kind::ALL {
                for (id, v) in set.list(kind) {
                    if previous.get(kind, id) != Some(v) {
                        let outcome = if previous.get(kind, id).is_some() {
                            Outcome::KeptPrevious
                        } else {
                            Outcome::Skipped
                        };
                        rejected.push(Rejection {
                            kind,
                            id: id.clone(),
                            outcome,
                            errors: errs.clone(),
                        });
                    }
                }
            }
            set = previous.clone();
        }
    }
}

/// An error inside a resource with its path relative to the resource.
fn relative(e: &ConfigError) -> ConfigError {
    ConfigError {
        path: e.path.skip(2),
        reason: e.reason.clone(),
        at: None,
    }
}

/// Resources in `previous` that `set` no longer has.
fn deletions(set: &ResourceSet, previous: &ResourceSet) -> Vec<(Kind, String)> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        for (id, _) in previous.list(kind) {
            if set.get(kind, id).is_none() {
                out.push((kind, id.clone()));
            }
        }
    }
    out
}

/// A value whose own id differs from the id it is stored under (an etcd key, an Admin API
/// path).
fn id_mismatches(set: &ResourceSet) -> Vec<ConfigError> {
    let mut out = Vec::new();
    for kind in Kind::ALL {
        for (i, (id, v)) in set.list(kind).iter().enumerate() {
            if id.starts_with('#') {
                continue;
            }
            if let Some(inner) = value_id(kind, v) {
                if &inner != id {
                    let p = Path::root()
                        .field(kind.as_str())
                        .index(i)
                        .field(kind.id_key());
                    out.push(ConfigError::new(
                        &p,
                        format!("must equal the id it is stored under ({id:?}), got {inner:?}"),
                    ));
                }
            }
        }
    }
    out
}

/// The resource an error's path points into: `(kind, index)` from `kind[index]...`.
pub fn located(set: &ResourceSet, path: &Path) -> Option<(Kind, String)> {
    match path.segments() {
        [Seg::Field(k), Seg::Index(i, _), ..] => {
            let kind = Kind::parse(k)?;
            Some((kind, set.id_at(kind, *i)?.to_owned()))
        }
        _ => None,
    }
}

type Blamed = Vec<(Kind, String, Vec<ConfigError>)>;

/// Group errors by the resource they are in; the rest are returned apart.
fn blame(set: &ResourceSet, errors: ConfigErrors) -> (Blamed, ConfigErrors) {
    let mut blamed: Blamed = Vec::new();
    let mut rest = Vec::new();
    for e in errors.0 {
        match located(set, &e.path) {
            Some((kind, id)) => match blamed.iter_mut().find(|(k, i, _)| *k == kind && *i == id) {
                Some((_, _, v)) => v.push(e),
                None => blamed.push((kind, id, vec![e])),
            },
            None => rest.push(e),
        }
    }
    (blamed, ConfigErrors(rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(doc: Value) -> ResourceSet {
        ResourceSet::from_document(&doc)
    }

    fn ids(s: &ResourceSet, kind: Kind) -> Vec<&str> {
        s.list(kind).iter().map(|(i, _)| i.as_str()).collect()
    }

    #[test]
    fn invalid_resources_and_their_dependents_are_skipped_the_rest_loads() {
        let v = Validator::new(&json!({}));
        let cand = set(json!({
            "upstreams": [
                {"id": "good", "nodes": {"127.0.0.1:1": 1}},
                {"id": "bad", "nodes": {"127.0.0.1:0": 1}},
            ],
            "services": [{"id": "s", "upstream_id": "bad"}],
            "routes": [
                {"id": "r1", "uri": "/a", "upstream_id": "good"},
                {"id": "r2", "uri": "/b", "service_id": "s"},
                {"id": "r3", "uri": 7, "upstream_id": "good"},
            ],
        }));
        let s = v.settle(cand, &ResourceSet::new()).unwrap();
        assert_eq!(ids(&s.set, Kind::Upstreams), ["good"]);
        assert_eq!(ids(&s.set, Kind::Routes), ["r1"]);
        assert!(ids(&s.set, Kind::Services).is_empty());
        let mut rejected: Vec<_> = s.rejected.iter().map(|r| r.id.as_str()).collect();
        rejected.sort();
        assert_eq!(rejected, ["bad", "r2", "r3", "s"]);
        assert!(s.rejected.iter().all(|r| r.outcome == Outcome::Skipped));
    }

    #[test]
    fn an_invalid_change_keeps_the_previous_value() {
        let v = Validator::new(&json!({}));
        let prev = set(json!({"upstreams": [{"id": "u", "nodes": {"127.0.0.1:1": 1}}]}));
        let mut cand = prev.clone();
        cand.put(
            Kind::Upstreams,
            "u",
            json!({"id": "u", "nodes": {"127.0.0.1:1": -1}}),
        );
        cand.put(
            Kind::Upstreams,
            "w",
            json!({"id": "w", "nodes": {"127.0.0.1:2": 1}}),
        );
        let s = v.settle(cand, &prev).unwrap();
        assert_eq!(
            s.set.get(Kind::Upstreams, "u"),
            prev.get(Kind::Upstreams, "u")
        );
        assert!(s.set.get(Kind::Upstreams, "w").is_some());
        assert_eq!(s.rejected.len(), 1);
        assert_eq!(s.rejected[0].outcome, Outcome::KeptPrevious);
        assert_eq!(
            s.rejected[0].message(),
            "nodes[\"127.0.0.1:1\"]: must be >= 0, got -1"
        );
    }

    #[test]
    fn deleting_a_referenced_upstream_is_undone() {
        let v = Validator::new(&json!({}));
        let prev = set(json!({
            "upstreams": [{"id": "u", "nodes": {"127.0.0.1:1": 1}}],
            "routes": [{"id": "r", "uri": "/", "upstream_id": "u"}],
        }));
        let mut cand = prev.clone();
        cand.remove(Kind::Upstreams, "u");
        let s = v.settle(cand, &prev).unwrap();
        assert_eq!(s.set, prev);
        assert_eq!(s.rejected[0].outcome, Outcome::Restored);
        assert!(s.rejected[0].errors[0]
            .to_string()
            .contains("unknown upstream"));
    }

    #[test]
    fn a_deletion_is_undone_before_what_references_it_is_blamed() {
        let v = Validator::new(&json!({}));
        let prev = set(json!({
            "upstreams": [
                {"id": "u", "nodes": {"127.0.0.1:1": 1}},
                {"id": "spare", "nodes": {"127.0.0.1:2": 1}},
            ],
            "routes": [{"id": "r", "uri": "/", "upstream_id": "u"}],
        }));
        let mut cand = prev.clone();
        cand.remove(Kind::Upstreams, "u");
        cand.remove(Kind::Upstreams, "spare");
        cand.put(
            Kind::Routes,
            "new",
            json!({"id": "new", "uri": "/n", "upstream_id": "u"}),
        );
        let s = v.settle(cand, &prev).unwrap();
        // `u` stays (referenced), the new route loads, the unreferenced deletion holds.
        assert!(s.set.get(Kind::Upstreams, "u").is_some());
        assert!(s.set.get(Kind::Routes, "new").is_some());
        assert!(s.set.get(Kind::Upstreams, "spare").is_none());
        assert_eq!(s.rejected.len(), 1);
        assert_eq!(
            (s.rejected[0].id.as_str(), &s.rejected[0].outcome),
            ("u", &Outcome::Restored)
        );
    }

    #[test]
    fn a_stored_id_must_match_its_key() {
        let v = Validator::new(&json!({}));
        let mut cand = ResourceSet::new();
        cand.put(
            Kind::Upstreams,
            "a",
            json!({"id": "b", "nodes": {"127.0.0.1:1": 1}}),
        );
        let e = v.check(&cand).unwrap_err();
        assert_eq!(
            e.0[0].to_string(),
            "upstreams[0].id: must equal the id it is stored under (\"a\"), got \"b\""
        );
        // Ids may be integers in the value and strings in the key.
        let mut ok = ResourceSet::new();
        ok.put(
            Kind::Upstreams,
            "7",
            json!({"id": 7, "nodes": {"127.0.0.1:1": 1}}),
        );
        assert!(v.check(&ok).is_ok());
    }

    #[test]
    fn errors_nobody_can_be_blamed_for_undo_the_change() {
        // The listener's certificate must exist: deleting it breaks `server`, not a resource.
        let pki = include_str!("../testdata/cert.pem");
        let key = include_str!("../testdata/key.pem");
        let v = Validator::new(&json!({
            "server": {"tls_listen": [{"addr": "127.0.0.1:9443", "certificate": "c"}]},
        }));
        let prev = set(json!({"certificates": [{"id": "c", "cert": pki, "key": key}]}));
        let mut cand = prev.clone();
        cand.remove(Kind::Certificates, "c");
        let s = v.settle(cand, &prev).unwrap();
        assert_eq!(s.set, prev);
        assert!(v.settle(ResourceSet::new(), &ResourceSet::new()).is_err());
    }
}
