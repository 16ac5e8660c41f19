//! chash keys: `hash_on` + `key`, the variables they may name, and `vars_combinations`
//! templates (docs/configuration.md).

use crate::path::Path;
use crate::reader::{self, Cx};
use serde::Serialize;
use serde_json::Value;

/// A request variable usable under `hash_on: vars` and in templates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Var {
    Uri,
    RequestUri,
    QueryString,
    Host,
    Hostname,
    RemoteAddr,
    RemotePort,
    ServerAddr,
    ServerName,
    /// `arg_<name>`: first value of a query argument.
    Arg(String),
    /// `cookie_<name>`.
    Cookie(String),
    /// `http_<name>`: a request header.
    Http(String),
}

fn valid_var_suffix(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Var {
    /// Parse a variable name, or `None` if Weir does not know it.
    pub fn parse(name: &str) -> Option<Var> {
        let v = match name {
            "uri" => Var::Uri,
            "request_uri" => Var::RequestUri,
            "query_string" => Var::QueryString,
            "host" => Var::Host,
            "hostname" => Var::Hostname,
            "remote_addr" => Var::RemoteAddr,
            "remote_port" => Var::RemotePort,
            "server_addr" => Var::ServerAddr,
            "server_name" => Var::ServerName,
            _ => {
                let (ctor, rest): (fn(String) -> Var, &str) =
                    if let Some(r) = name.strip_prefix("arg_") {
                        (Var::Arg, r)
                    } else if let Some(r) = name.strip_prefix("cookie_") {
                        (Var::Cookie, r)
                    } else if let Some(r) = name.strip_prefix("http_") {
                        (Var::Http, r)
                    } else {
                        return None;
                    };
                if !valid_var_suffix(rest) {
                    return None;
                }
                ctor(rest.to_owned())
            }
        };
        Some(v)
    }
}

/// One piece of an expanded template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Part {
    Lit(String),
    Var { var: Var, default: Option<String> },
}

/// A `vars_combinations` template such as `$remote_addr-${http_x_user ?? anon}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Template {
    pub parts: Vec<Part>,
}

impl Template {
    /// Parse a template. Errors name the first unknown variable or the unclosed `${`.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'\\' if b.get(i + 1) == Some(&b'$') => {
                    lit.push('$');
                    i += 2;
                }
                b'$' if b.get(i + 1) == Some(&b'{') => {
                    let rest = &s[i + 2..];
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("unclosed \"${{\" at byte {i}"))?;
                    let inner = &rest[..end];
                    let (name, default) = match inner.split_once("??") {
                        Some((n, d)) => (n.trim(), Some(d.trim().to_owned())),
                        None => (inner.trim(), None),
                    };
                    let var = Var::parse(name)
                        .ok_or_else(|| format!("unknown variable \"{name}\" in template"))?;
                    flush(&mut parts, &mut lit);
                    parts.push(Part::Var { var, default });
                    i += 2 + end + 1;
                }
                b'$' => {
                    let n = b[i + 1..]
                        .iter()
                        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                        .count();
                    if n == 0 {
                        lit.push('$');
                        i += 1;
                        continue;
                    }
                    let name = &s[i + 1..i + 1 + n];
                    let var = Var::parse(name)
                        .ok_or_else(|| format!("unknown variable \"{name}\" in template"))?;
                    flush(&mut parts, &mut lit);
                    parts.push(Part::Var { var, default: None });
                    i += 1 + n;
                }
                _ => {
                    // Copy one UTF-8 character.
                    let ch_len = s[i..].chars().next().map_or(1, char::len_utf8);
                    lit.push_str(&s[i..i + ch_len]);
                    i += ch_len;
                }
            }
        }
        flush(&mut parts, &mut lit);
        Ok(Template { parts })
    }
}

fn flush(parts: &mut Vec<Part>, lit: &mut String) {
    if !lit.is_empty() {
        parts.push(Part::Lit(std::mem::take(lit)));
    }
}

/// Where the chash key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    Vars(Var),
    /// Header name as configured; matched case-insensitively with `-` ≡ `_`.
    Header(String),
    /// Cookie name, case-sensitive.
    Cookie(String),
    Consumer,
    VarsCombinations(Template),
}

const HASH_ON: &[(&str, u8)] = &[
    ("vars", 0),
    ("header", 1),
    ("cookie", 2),
    ("consumer", 3),
    ("vars_combinations", 4),
];

/// Read `hash_on` and `key` of a chash upstream. `key_val` is `key`'s value and path if set.
pub fn parse_hash_on(
    hash_on: Option<(&Value, Path)>,
    key_val: Option<(&Value, Path)>,
    obj_path: &Path,
    cx: &mut Cx,
) -> Option<HashOn> {
    let kind = match hash_on {
        Some((v, p)) => reader::enumeration(v, &p, cx, HASH_ON)?,
        None => 0,
    };
    if kind == 3 {
        return Some(HashOn::Consumer);
    }
    let Some((kv, kp)) = key_val else {
        cx.err(&obj_path.field("key"), "required when type is chash");
        return None;
    };
    let key = reader::string(kv, &kp, cx)?;
    match kind {
        0 => match Var::parse(key) {
            Some(v) => Some(HashOn::Vars(v)),
            None => {
                cx.err(
                    &kp,
                    format!(
                        "must be one of uri, request_uri, query_string, host, hostname, remote_addr, \
                         remote_port, server_addr, server_name, arg_<name>, cookie_<name>, http_<name>, \
                         got \"{key}\""
                    ),
                );
                None
            }
        },
        1 | 2 => {
            let ok = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                cx.err(&kp, format!("must match ^[a-zA-Z0-9-_]+$, got \"{key}\""));
                return None;
            }
            Some(if kind == 1 {
                HashOn::Header(key.to_owned())
            } else {
                HashOn::Cookie(key.to_owned())
            })
        }
        _ => match Template::parse(key) {
            Ok(t) => Some(HashOn::VarsCombinations(t)),
            Err(e) => {
                cx.err(&kp, e);
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vars() {
        assert_eq!(Var::parse("arg_user"), Some(Var::Arg("user".into())));
        assert_eq!(Var::parse("http_x-id"), Some(Var::Http("x-id".into())));
        assert_eq!(Var::parse("cookie_sid"), Some(Var::Cookie("sid".into())));
        assert_eq!(Var::parse("arg_"), None);
        assert_eq!(Var::parse("remote_user"), None);
    }

    #[test]
    fn templates() {
        let t = Template::parse("$remote_addr-${http_x_user ?? anon}\\$x$ $").unwrap();
        assert_eq!(
            t.parts,
            vec![
                Part::Var {
                    var: Var::RemoteAddr,
                    default: None
                },
                Part::Lit("-".into()),
                Part::Var {
                    var: Var::Http("x_user".into()),
                    default: Some("anon".into())
                },
                Part::Lit("$x$ $".into()),
            ]
        );
        assert!(Template::parse("${uri").is_err());
        assert_eq!(
            Template::parse("$foo").unwrap_err(),
            "unknown variable \"foo\" in template"
        );
        assert!(Template::parse("plain").is_ok());
    }
}
