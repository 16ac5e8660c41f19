//! A validating reader over a JSON value tree.
//!
//! serde's derive stops at the first error; Weir must report every error of a document at
//! once, with its path, and must not descend into a value of the wrong type. So documents are
//! first parsed into a [`serde_json::Value`] and then read by hand with these helpers, which
//! record errors in a [`Cx`] and return `None` for a bad value so the caller can go on.

use crate::error::{show, ConfigError};
use crate::path::Path;
use serde_json::{Map, Value};
use std::time::Duration;

/// Collects the errors and warnings of one validation run.
#[derive(Debug, Default)]
pub struct Cx {
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<ConfigError>,
}

impl Cx {
    pub fn err(&mut self, path: &Path, reason: impl Into<String>) {
        self.errors.push(ConfigError::new(path, reason));
    }

    pub fn warn(&mut self, path: &Path, reason: impl Into<String>) {
        self.warnings.push(ConfigError::new(path, reason));
    }
}

/// Lower bound of a duration-valued number.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    /// `> 0`
    Positive,
    /// `>= 0`
    NonNegative,
}

/// `must be >= lo` when the upper bound is the type's, else `must be lo..hi` (or `<= hi`
/// when only the lower bound is the type's).
fn range_reason<T: std::fmt::Display + PartialEq>(lo: T, hi: T, min: Option<T>, max: T) -> String {
    if hi == max {
        format!("must be >= {lo}")
    } else if min.is_some_and(|m| m == lo) {
        format!("must be <= {hi}")
    } else {
        format!("must be {lo}..{hi}")
    }
}

/// Read an integer in `lo..=hi`. Integral floats (`3.0`) are accepted.
pub fn uint(v: &Value, p: &Path, cx: &mut Cx, lo: u64, hi: u64) -> Option<u64> {
    let n = integer(v, p, cx)?;
    if n < lo as i128 || n > hi as i128 {
        // Upper bounds from u32 and beyond are implementation caps, not schema ranges: name
        // only the bound that was crossed.
        let reason = if hi >= u32::MAX as u64 && n < lo as i128 {
            format!("must be >= {lo}")
        } else if hi >= u32::MAX as u64 {
            format!("must be <= {hi}")
        } else {
            range_reason(lo, hi, None, u64::MAX)
        };
        cx.err(p, format!("{reason}, got {}", show(v)));
        return None;
    }
    u64::try_from(n).ok()
}

/// Read a signed integer in `lo..=hi`.
pub fn int(v: &Value, p: &Path, cx: &mut Cx, lo: i64, hi: i64) -> Option<i64> {
    let n = integer(v, p, cx)?;
    if n < lo as i128 || n > hi as i128 {
        cx.err(
            p,
            format!(
                "{}, got {}",
                range_reason(lo, hi, Some(i64::MIN), i64::MAX),
                show(v)
            ),
        );
        return None;
    }
    i64::try_from(n).ok()
}

fn integer(v: &Value, p: &Path, cx: &mut Cx) -> Option<i128> {
    if let Value::Number(n) = v {
        if let Some(u) = n.as_u64() {
            return Some(u as i128);
        }
        if let Some(i) = n.as_i64() {
            return Some(i as i128);
        }
        if let Some(f) = n.as_f64() {
            if f.fract() == 0.0 && f.abs() < 1e18 {
                return Some(f as i128);
            }
        }
    }
    cx.err(p, format!("must be an integer, got {}", show(v)));
    None
}

/// Read a finite number.
pub fn number(v: &Value, p: &Path, cx: &mut Cx) -> Option<f64> {
    match v.as_f64() {
        Some(f) if f.is_finite() => Some(f),
        _ => {
            cx.err(p, format!("must be a number, got {}", show(v)));
            None
        }
    }
}

/// Read a number of seconds (fractions allowed) into a [`Duration`].
pub fn secs(v: &Value, p: &Path, cx: &mut Cx, bound: Bound) -> Option<Duration> {
    let f = number(v, p, cx)?;
    let ok = match bound {
        Bound::Positive => f > 0.0,
        Bound::NonNegative => f >= 0.0,
    };
    if !ok {
        let want = match bound {
            Bound::Positive => "> 0",
            Bound::NonNegative => ">= 0",
        };
        cx.err(p, format!("must be {want}, got {}", show(v)));
        return None;
    }
    match Duration::try_from_secs_f64(f) {
        Ok(d) => Some(d),
        Err(_) => {
            cx.err(p, format!("must be a number of seconds, got {}", show(v)));
            None
        }
    }
}

pub fn boolean(v: &Value, p: &Path, cx: &mut Cx) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        _ => {
            cx.err(p, format!("must be a boolean, got {}", show(v)));
            None
        }
    }
}

pub fn string<'v>(v: &'v Value, p: &Path, cx: &mut Cx) -> Option<&'v str> {
    match v {
        Value::String(s) => Some(s.as_str()),
        _ => {
            cx.err(p, format!("must be a string, got {}", show(v)));
            None
        }
    }
}

/// Read a string of `lo..=hi` characters.
pub fn string_len<'v>(
    v: &'v Value,
    p: &Path,
    cx: &mut Cx,
    lo: usize,
    hi: usize,
) -> Option<&'v str> {
    let s = string(v, p, cx)?;
    let n = s.chars().count();
    if n < lo || n > hi {
        let bound = if lo == 0 {
            format!("at most {hi}")
        } else {
            format!("{lo}..{hi}")
        };
        cx.err(p, format!("must be {bound} characters long, got {n}"));
        return None;
    }
    Some(s)
}

/// Read one of a fixed set of names.
pub fn enumeration<T: Copy>(v: &Value, p: &Path, cx: &mut Cx, choices: &[(&str, T)]) -> Option<T> {
    if let Value::String(s) = v {
        if let Some((_, t)) = choices.iter().find(|(name, _)| name == s) {
            return Some(*t);
        }
    }
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    cx.err(
        p,
        format!("must be one of {}, got {}", names.join(", "), show(v)),
    );
    None
}

pub fn array<'v>(v: &'v Value, p: &Path, cx: &mut Cx) -> Option<&'v [Value]> {
    match v {
        Value::Array(a) => Some(a.as_slice()),
        _ => {
            cx.err(p, format!("must be an array, got {}", show(v)));
            None
        }
    }
}

/// Read an array of at least `min` items, each converted by `item`; items that fail are left
/// out (their errors are recorded).
pub fn list<'v, T>(
    v: &'v Value,
    p: &Path,
    cx: &mut Cx,
    min: usize,
    mut item: impl FnMut(&'v Value, &Path, &mut Cx) -> Option<T>,
) -> Option<Vec<T>> {
    let a = array(v, p, cx)?;
    if a.len() < min {
        cx.err(
            p,
            format!(
                "must have at least {min} item{}",
                if min == 1 { "" } else { "s" }
            ),
        );
        return None;
    }
    let mut out = Vec::with_capacity(a.len());
    let before = cx.errors.len();
    for (i, x) in a.iter().enumerate() {
        if let Some(t) = item(x, &p.index(i), cx) {
            out.push(t);
        }
    }
    (cx.errors.len() == before).then_some(out)
}

/// Read a list of HTTP statuses in `lo..=hi`, without duplicates.
pub fn status_list(
    v: &Value,
    p: &Path,
    cx: &mut Cx,
    lo: u16,
    hi: u16,
    min: usize,
) -> Option<Vec<u16>> {
    let items = list(v, p, cx, min, |x, ip, cx| {
        uint(x, ip, cx, lo as u64, hi as u64).map(|n| n as u16)
    })?;
    let mut seen = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, s) in items.iter().enumerate() {
        if seen.contains(s) {
            cx.err(&p.index(i), format!("duplicate item {s}"));
            ok = false;
        }
        seen.push(*s);
    }
    ok.then_some(items)
}

/// An object being read. Every member taken is marked; [`Obj::finish`] reports the rest as
/// unknown fields (a typo in an upstream is a silent outage otherwise).
pub struct Obj<'v> {
    map: &'v Map<String, Value>,
    pub path: Path,
    used: Vec<bool>,
}

impl<'v> Obj<'v> {
    /// View `v` as an object, or record `must be an object`.
    pub fn of(v: &'v Value, path: &Path, cx: &mut Cx) -> Option<Self> {
        match v {
            Value::Object(map) => Some(Obj {
                map,
                path: path.clone(),
                used: vec![false; map.len()],
            }),
            _ => {
                cx.err(path, format!("must be an object, got {}", show(v)));
                None
            }
        }
    }

    /// Whether member `k` is present and not null.
    pub fn has(&self, k: &str) -> bool {
        self.map.get(k).is_some_and(|v| !v.is_null())
    }

    /// The raw value of member `k` without marking it.
    pub fn peek(&self, k: &str) -> Option<&'v Value> {
        self.map.get(k).filter(|v| !v.is_null())
    }

    /// Take member `k`. A null member counts as absent (YAML's `key:` with nothing after it).
    pub fn take(&mut self, k: &str) -> Option<(&'v Value, Path)> {
        let (i, _, v) = self.map.get_full_compat(k)?;
        self.used[i] = true;
        if v.is_null() {
            return None;
        }
        Some((v, self.path.field(k)))
    }

    /// Take a member that must be present.
    pub fn require(&mut self, cx: &mut Cx, k: &str) -> Option<(&'v Value, Path)> {
        let r = self.take(k);
        if r.is_none() {
            cx.err(&self.path.field(k), "required");
        }
        r
    }

    pub fn str(&mut self, cx: &mut Cx, k: &str) -> Option<&'v str> {
        let (v, p) = self.take(k)?;
        string(v, &p, cx)
    }

    pub fn bool(&mut self, cx: &mut Cx, k: &str, default: bool) -> bool {
        self.take(k)
            .and_then(|(v, p)| boolean(v, &p, cx))
            .unwrap_or(default)
    }

    pub fn uint(&mut self, cx: &mut Cx, k: &str, lo: u64, hi: u64) -> Option<u64> {
        let (v, p) = self.take(k)?;
        uint(v, &p, cx, lo, hi)
    }

    pub fn int(&mut self, cx: &mut Cx, k: &str, lo: i64, hi: i64) -> Option<i64> {
        let (v, p) = self.take(k)?;
        int(v, &p, cx, lo, hi)
    }

    pub fn secs(&mut self, cx: &mut Cx, k: &str, bound: Bound) -> Option<Duration> {
        let (v, p) = self.take(k)?;
        secs(v, &p, cx, bound)
    }

    pub fn enumeration<T: Copy>(
        &mut self,
        cx: &mut Cx,
        k: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let (v, p) = self.take(k)?;
        enumeration(v, &p, cx, choices)
    }

    pub fn obj(&mut self, cx: &mut Cx, k: &str) -> Option<Obj<'v>> {
        let (v, p) = self.take(k)?;
        Obj::of(v, &p, cx)
    }

    /// Iterate over all members, marking them used (for maps whose keys are data).
    pub fn entries(&mut self) -> impl Iterator<Item = (&'v str, &'v Value, Path)> + '_ {
        self.used.iter_mut().for_each(|u| *u = true);
        let path = self.path.clone();
        self.map
            .iter()
            .map(move |(k, v)| (k.as_str(), v, path.field(k)))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Report every member that was not taken as `unknown field`.
    pub fn finish(self, cx: &mut Cx) {
        for ((k, _), used) in self.map.iter().zip(self.used) {
            if !used {
                cx.err(&self.path.field(k), "unknown field");
            }
        }
    }
}

/// `serde_json::Map` does not expose member positions; find it by iteration (objects in a
/// configuration are small).
trait GetFull {
    fn get_full_compat(&self, k: &str) -> Option<(usize, &String, &Value)>;
}

impl GetFull for Map<String, Value> {
    fn get_full_compat(&self, k: &str) -> Option<(usize, &String, &Value)> {
        self.iter()
            .enumerate()
            .find(|(_, (name, _))| name.as_str() == k)
            .map(|(i, (name, v))| (i, name, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integer_messages() {
        let mut cx = Cx::default();
        let p = Path::root().field("size");
        assert_eq!(uint(&json!(0), &p, &mut cx, 1, u64::MAX), None);
        assert_eq!(uint(&json!(1.5), &p, &mut cx, 1, 10), None);
        assert_eq!(uint(&json!("1"), &p, &mut cx, 0, 10), None);
        assert_eq!(uint(&json!(300), &p, &mut cx, 1, 254), None);
        assert_eq!(uint(&json!(3.0), &p, &mut cx, 1, 254), Some(3));
        let msgs: Vec<String> = cx.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            [
                "size: must be >= 1, got 0",
                "size: must be an integer, got 1.5",
                "size: must be an integer, got \"1\"",
                "size: must be 1..254, got 300",
            ]
        );
    }

    #[test]
    fn unknown_fields_and_nulls() {
        let mut cx = Cx::default();
        let v = json!({"a": 1, "typo": 2, "n": null});
        let mut o = Obj::of(&v, &Path::root(), &mut cx).unwrap();
        assert!(o.take("a").is_some());
        assert!(o.take("n").is_none());
        o.finish(&mut cx);
        assert_eq!(cx.errors.len(), 1);
        assert_eq!(cx.errors[0].to_string(), "typo: unknown field");
    }

    #[test]
    fn status_lists() {
        let mut cx = Cx::default();
        let p = Path::root().field("s");
        assert!(status_list(&json!([500, 500]), &p, &mut cx, 500, 599, 0).is_none());
        assert!(status_list(&json!([]), &p, &mut cx, 200, 599, 1).is_none());
        let msgs: Vec<String> = cx.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            msgs,
            ["s[1]: duplicate item 500", "s: must have at least 1 item"]
        );
    }
}
