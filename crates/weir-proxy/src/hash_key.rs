//! The chash key of a request (docs/algorithms.md, key derivation): variables, headers,
//! cookies, the consumer, templates; a missing key falls back to `remote_addr`.

use crate::router::strip_port;
use once_cell::sync::Lazy;
use pingora::proxy::Session;
use std::io::Write;
use weir_config::upstream::{HashOn, Part, Var};

/// The machine's host name (`hostname` variable), read once.
static HOSTNAME: Lazy<String> = Lazy::new(|| {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_default()
});

/// Write the key for `hash_on` into `out` (cleared first).
pub fn hash_key(session: &Session, hash_on: &HashOn, consumer: Option<&str>, out: &mut Vec<u8>) {
    out.clear();
    let found = match hash_on {
        HashOn::Vars(v) => var(session, v, out),
        HashOn::Header(name) => header(session, name, out),
        HashOn::Cookie(name) => cookie(session, name, out),
        HashOn::Consumer => match consumer {
            Some(c) => {
                out.extend_from_slice(c.as_bytes());
                true
            }
            None => false,
        },
        HashOn::VarsCombinations(t) => {
            let mut resolved = 0;
            for part in &t.parts {
                match part {
                    Part::Lit(s) => out.extend_from_slice(s.as_bytes()),
                    Part::Var { var: v, default } => {
                        let before = out.len();
                        if var(session, v, out) {
                            resolved += 1;
                        } else {
                            out.truncate(before);
                            if let Some(d) = default {
                                out.extend_from_slice(d.as_bytes());
                            }
                        }
                    }
                }
            }
            resolved > 0
        }
    };
    if !found {
        out.clear();
        var(session, &Var::RemoteAddr, out);
    }
}

/// Append the value of `v`; false when the variable is missing.
fn var(session: &Session, v: &Var, out: &mut Vec<u8>) -> bool {
    let req = session.req_header();
    let raw = req.raw_path();
    let (path, query) = match raw.iter().position(|&b| b == b'?') {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    match v {
        Var::Uri => out.extend_from_slice(path),
        Var::RequestUri => out.extend_from_slice(raw),
        Var::QueryString => match query {
            Some(q) => out.extend_from_slice(q),
            None => return false,
        },
        Var::Host => {
            let host = req
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| req.uri.authority().map(|a| a.as_str()))
                .map(strip_port)
                .unwrap_or("");
            out.extend(host.bytes().map(|b| b.to_ascii_lowercase()));
        }
        Var::Hostname => out.extend_from_slice(HOSTNAME.as_bytes()),
        Var::RemoteAddr => match session.client_addr().and_then(|a| a.as_inet()) {
            Some(a) => {
                let _ = write!(out, "{}", a.ip());
            }
            None => return false,
        },
        Var::RemotePort => match session.client_addr().and_then(|a| a.as_inet()) {
            Some(a) => {
                let _ = write!(out, "{}", a.port());
            }
            None => return false,
        },
        Var::ServerAddr => match session.server_addr().and_then(|a| a.as_inet()) {
            Some(a) => {
                let _ = write!(out, "{}", a.ip());
            }
            None => return false,
        },
        Var::ServerName => out.push(b'_'),
        Var::Arg(name) => return arg(query, name.as_bytes(), out),
        Var::Cookie(name) => return cookie(session, name, out),
        Var::Http(name) => return header(session, name, out),
    }
    true
}

/// First value of query argument `name`, percent-decoded; `?name` alone gives `true`.
fn arg(query: Option<&[u8]>, name: &[u8], out: &mut Vec<u8>) -> bool {
    let Some(q) = query else { return false };
    for pair in q.split(|&b| b == b'&') {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], Some(&pair[i + 1..])),
            None => (pair, None),
        };
        if k == name {
            match v {
                Some(v) => out.extend(percent_encoding::percent_decode(v)),
                None => out.extend_from_slice(b"true"),
            }
            return true;
        }
    }
    false
}

/// Header `name`, case-insensitive, `-` ≡ `_`, first occurrence.
fn header(session: &Session, name: &str, out: &mut Vec<u8>) -> bool {
    let norm = |b: u8| {
        if b == b'_' {
            b'-'
        } else {
            b.to_ascii_lowercase()
        }
    };
    let same = |h: &str| {
        h.len() == name.len() && h.bytes().zip(name.bytes()).all(|(a, b)| norm(a) == norm(b))
    };
    match session
        .req_header()
        .headers
        .iter()
        .find(|(k, _)| same(k.as_str()))
    {
        Some((_, v)) => {
            out.extend_from_slice(v.as_bytes());
            true
        }
        None => false,
    }
}

/// Cookie `name` (case-sensitive) from the `Cookie` headers.
fn cookie(session: &Session, name: &str, out: &mut Vec<u8>) -> bool {
    for h in session.req_header().headers.get_all(http::header::COOKIE) {
        for c in h.as_bytes().split(|&b| b == b';') {
            let c = c.trim_ascii();
            if let Some(i) = c.iter().position(|&b| b == b'=') {
                if &c[..i] == name.as_bytes() {
                    out.extend_from_slice(&c[i + 1..]);
                    return true;
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_arguments() {
        let mut out = Vec::new();
        assert!(arg(Some(b"a=1&user=al%20ice&user=bob"), b"user", &mut out));
        assert_eq!(out, b"al ice");
        out.clear();
        assert!(arg(Some(b"flag&x=1"), b"flag", &mut out));
        assert_eq!(out, b"true");
        out.clear();
        assert!(!arg(Some(b"User=1"), b"user", &mut out));
        assert!(!arg(None, b"user", &mut out));
    }
}
