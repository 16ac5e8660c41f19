//! Paths into a configuration document, as they appear in error messages:
//! `upstreams[1] (id "billing").nodes["10.0.0.1:0"]`, or `keepalive_pool.size` for an
//! Admin API body.

use std::fmt;

/// One step from a value to one of its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// An object member: `.name`.
    Field(String),
    /// An array item, optionally annotated with the item's identity: `[1] (id "billing")`.
    Index(usize, Option<String>),
    /// A map key whose text is data rather than a schema name: `["10.0.0.1:80"]`.
    Key(String),
}

/// A path from the document root (the file, or an Admin API body) to a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path(Vec<Seg>);

impl Path {
    /// The document root. Renders as the empty string.
    pub fn root() -> Self {
        Path(Vec::new())
    }

    /// The path of member `name` of this object.
    pub fn field(&self, name: &str) -> Path {
        self.with(Seg::Field(name.to_owned()))
    }

    /// The path of item `i` of this array.
    pub fn index(&self, i: usize) -> Path {
        self.with(Seg::Index(i, None))
    }

    /// The path of map key `key` (rendered quoted, as data).
    pub fn key(&self, key: &str) -> Path {
        self.with(Seg::Key(key.to_owned()))
    }

    /// Annotate the last array index with the item's identity, e.g. `id "billing"`.
    pub fn annotate(mut self, note: String) -> Path {
        if let Some(Seg::Index(_, n)) = self.0.last_mut() {
            *n = Some(note);
        }
        self
    }

    /// The steps of this path.
    pub fn segments(&self) -> &[Seg] {
        &self.0
    }

    /// `rel` appended to this path (a path inside the value at this one).
    pub fn join(&self, rel: &Path) -> Path {
        let mut v = self.0.clone();
        v.extend(rel.0.iter().cloned());
        Path(v)
    }

    /// This path without its first `n` steps: an item's path made relative to the item
    /// (`upstreams[2].nodes[0].port` → `nodes[0].port` with `n = 2`).
    pub fn skip(&self, n: usize) -> Path {
        Path(self.0.get(n..).unwrap_or_default().to_vec())
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    fn with(&self, seg: Seg) -> Path {
        let mut v = Vec::with_capacity(self.0.len() + 1);
        v.extend_from_slice(&self.0);
        v.push(seg);
        Path(v)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Field(name) if i == 0 => f.write_str(name)?,
                Seg::Field(name) => write!(f, ".{name}")?,
                Seg::Index(n, None) => write!(f, "[{n}]")?,
                Seg::Index(n, Some(note)) => write!(f, "[{n}] ({note})")?,
                Seg::Key(k) => write!(f, "[{}]", serde_json::Value::String(k.clone()))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_the_docs() {
        let p = Path::root()
            .field("upstreams")
            .index(1)
            .annotate("id \"billing\"".into())
            .field("keepalive_pool")
            .field("size");
        assert_eq!(
            p.to_string(),
            "upstreams[1] (id \"billing\").keepalive_pool.size"
        );
        let k = Path::root().field("nodes").key("10.0.0.1:0");
        assert_eq!(k.to_string(), "nodes[\"10.0.0.1:0\"]");
        assert_eq!(Path::root().to_string(), "");
    }
}
