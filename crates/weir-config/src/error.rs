//! Validation errors: each names the path of the bad value and says what was expected and
//! what was found.

use crate::path::{Path, Seg};
use crate::position::{Position, Positions};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;

/// One problem found in a configuration document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub path: Path,
    pub reason: String,
    /// Where the offending key or value is written, for documents read from YAML text.
    pub at: Option<Position>,
}

impl ConfigError {
    pub fn new(path: &Path, reason: impl Into<String>) -> Self {
        ConfigError {
            path: path.clone(),
            reason: reason.into(),
            at: None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_root(), self.at) {
            (true, _) => f.write_str(&self.reason),
            (false, None) => write!(f, "{}: {}", self.path, self.reason),
            (false, Some(at)) => write!(
                f,
                "{} (line {}, column {}): {}",
                self.path, at.line, at.column, self.reason
            ),
        }
    }
}

/// Every error of a document, in document order.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn single(path: &Path, reason: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError::new(path, reason)])
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }

    /// Place every error in `text`, the YAML the document was read from: each gets the line
    /// and column of its key or value (see [`Positions`]).
    pub fn locate(&mut self, text: &str) {
        locate(&mut self.0, text);
    }

    /// The Admin API form: all errors joined with `"; "`.
    pub fn joined(&self) -> String {
        self.0
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Sort the errors into the order their values appear in `doc` (stable: errors on the same
    /// value keep the order they were found in).
    pub(crate) fn sort_by_document(&mut self, doc: &Value) {
        let mut members = MemberIndex::default();
        let mut keyed: Vec<(Vec<usize>, ConfigError)> = self
            .0
            .drain(..)
            .map(|e| (document_position(doc, &e.path, &mut members), e))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        self.0 = keyed.into_iter().map(|(_, e)| e).collect();
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Give each of `errors` the position of its path in `text` (parsed once, only when needed).
pub(crate) fn locate(errors: &mut [ConfigError], text: &str) {
    if errors.iter().all(|e| e.path.is_root()) {
        return;
    }
    let positions = Positions::of(text);
    for e in errors {
        e.at = positions.find(&e.path);
    }
}

/// The ordinal of each member of the objects met so far, by the object's address: a
/// document with many errors in one large object (thousands of unknown members sent to the
/// Admin API) is sorted in O(n log n), not O(n²). `serde_json::Map` does not expose member
/// positions, hence this index.
#[derive(Default)]
struct MemberIndex<'d> {
    objects: HashMap<*const Map<String, Value>, HashMap<&'d str, usize>>,
}

impl<'d> MemberIndex<'d> {
    fn position(&mut self, m: &'d Map<String, Value>, k: &str) -> Option<usize> {
        self.objects
            .entry(m as *const _)
            .or_insert_with(|| m.keys().enumerate().map(|(i, k)| (k.as_str(), i)).collect())
            .get(k)
            .copied()
    }
}

/// Position of `path` in `doc` as a list of member/item ordinals. Where the path leaves the
/// document (a missing required field), the position of its deepest existing prefix is used,
/// so the error sorts with its parent object.
fn document_position<'d>(doc: &'d Value, path: &Path, members: &mut MemberIndex<'d>) -> Vec<usize> {
    let mut pos = Vec::new();
    let mut cur = doc;
    for seg in path.segments() {
        let next = match (seg, cur) {
            (Seg::Field(k) | Seg::Key(k), Value::Object(m)) => members
                .position(m, k)
                .and_then(|i| m.get(k.as_str()).map(|v| (i, v))),
            (Seg::Index(i, _), Value::Array(a)) => a.get(*i).map(|v| (*i, v)),
            _ => None,
        };
        match next {
            Some((i, v)) => {
                pos.push(i);
                cur = v;
            }
            None => break,
        }
    }
    pos
}

/// Render a value the way error messages quote it: strings in double quotes, numbers as
/// written, containers abbreviated.
pub fn show(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(_) => v.to_string(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}
