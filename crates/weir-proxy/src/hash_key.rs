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

/// Property tests: chash keys from whatever a client sends (request target, query, headers,
/// cookies) under any `hash_on` a configuration can hold (every variable, header and cookie
/// names, arbitrary `vars_combinations` templates). Deriving a key never panics, takes
/// bounded time and is deterministic. `PROPTEST_CASES` sets the number of cases (256 by
/// default).
#[cfg(test)]
mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    use weir_config::upstream::Template;

    /// CPU time this thread has run so far (Linux: `/proc/thread-self/schedstat`, 0
    /// elsewhere): the per-input bound is on CPU time, so a loaded machine does not trip it.
    fn thread_cpu() -> Duration {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .map_or(Duration::ZERO, Duration::from_nanos)
    }

    /// A session that has read `head` (a request head the client sent), or `None` when
    /// Pingora refuses it.
    async fn session(head: &[u8]) -> Option<Session> {
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut s = Session::new_h1(Box::new(server));
        let mut client = client;
        client.write_all(head).await.ok()?;
        client.shutdown().await.ok()?;
        let read = tokio::time::timeout(Duration::from_secs(5), s.read_request()).await;
        match read {
            Ok(Ok(true)) => Some(s),
            _ => None,
        }
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(&["user", "x-id", "X_Id", "sid", "a", "", "é", "a b"][..])
                .prop_map(str::to_owned),
            "[a-zA-Z0-9_-]{1,8}",
        ]
    }

    fn hash_on() -> impl Strategy<Value = HashOn> {
        let var = prop_oneof![
            prop::sample::select(
                &[
                    "uri",
                    "request_uri",
                    "query_string",
                    "host",
                    "hostname",
                    "remote_addr",
                    "remote_port",
                    "server_addr",
                    "server_name",
                ][..]
            )
            .prop_map(str::to_owned),
            token().prop_map(|t| format!("arg_{t}")),
            token().prop_map(|t| format!("cookie_{t}")),
            token().prop_map(|t| format!("http_{t}")),
        ];
        let template = prop::collection::vec(
            prop_oneof![
                var.clone().prop_map(|v| format!("${{{v}}}")),
                var.clone().prop_map(|v| format!("${{{v} ?? dflt}}")),
                "[^$\\\\]{0,6}",
            ],
            0..6,
        )
        .prop_map(|p| p.concat());
        prop_oneof![
            var.prop_filter_map("a variable", |v| Var::parse(&v).map(HashOn::Vars)),
            token().prop_map(HashOn::Header),
            token().prop_map(HashOn::Cookie),
            Just(HashOn::Consumer),
            template.prop_filter_map("a template", |t| Template::parse(&t)
                .ok()
                .map(HashOn::VarsCombinations)),
        ]
    }

    /// Request heads: a target with an arbitrary query, arbitrary header and cookie lines.
    fn head() -> impl Strategy<Value = Vec<u8>> {
        (
            "/[a-zA-Z0-9/._~%-]{0,24}",
            prop::option::of(prop::collection::vec(
                prop_oneof![
                    (token(), prop::option::of("[a-zA-Z0-9%+=_.-]{0,12}")).prop_map(
                        |(k, v)| match v {
                            Some(v) => format!("{k}={v}"),
                            None => k,
                        }
                    ),
                    "[a-zA-Z0-9%=&;+]{0,12}",
                ],
                0..6,
            )),
            prop::collection::vec(
                (
                    prop_oneof![
                        "[a-zA-Z0-9_-]{1,8}",
                        Just("Cookie".to_owned()),
                        Just("Host".to_owned())
                    ],
                    prop_oneof![
                        4 => "[ -~]{0,24}".prop_map(String::into_bytes),
                        1 => prop::collection::vec(
                            any::<u8>()
                                .prop_filter("not a line end", |b| *b != b'\r' && *b != b'\n'),
                            0..24,
                        ),
                    ],
                ),
                0..6,
            ),
        )
            .prop_map(|(path, query, headers)| {
                let mut h = b"GET ".to_vec();
                h.extend_from_slice(path.as_bytes());
                if let Some(q) = query {
                    h.push(b'?');
                    h.extend_from_slice(q.join("&").as_bytes());
                }
                h.extend_from_slice(b" HTTP/1.1\r\n");
                for (k, v) in headers {
                    h.extend_from_slice(k.as_bytes());
                    h.extend_from_slice(b": ");
                    h.extend_from_slice(&v);
                    h.extend_from_slice(b"\r\n");
                }
                h.extend_from_slice(b"\r\n");
                h
            })
    }

    /// The harness reads a request and derives keys from it (the properties below are not
    /// vacuous).
    #[test]
    fn the_harness_reads_requests() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let s = rt
            .block_on(session(
                b"GET /a?user=bob HTTP/1.1\r\nHost: Example.COM:8080\r\nCookie: sid=42\r\n\r\n",
            ))
            .expect("session");
        let mut out = Vec::new();
        hash_key(&s, &HashOn::Vars(Var::Arg("user".into())), None, &mut out);
        assert_eq!(out, b"bob");
        hash_key(&s, &HashOn::Cookie("sid".into()), None, &mut out);
        assert_eq!(out, b"42");
        let t = Template::parse("${host}-${http_x_none ?? anon}").expect("template");
        hash_key(&s, &HashOn::VarsCombinations(t), None, &mut out);
        assert_eq!(out, b"example.com-anon");
    }

    proptest! {
        #[test]
        fn keys_of_arbitrary_requests(head in head(), on in hash_on(), consumer in prop::option::of(token())) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let Some(s) = rt.block_on(session(&head)) else {
                // Pingora refused the head: no key is derived for it.
                return Ok(());
            };
            let t = thread_cpu();
            let mut a = Vec::new();
            let mut b = vec![1, 2, 3];
            hash_key(&s, &on, consumer.as_deref(), &mut a);
            hash_key(&s, &on, consumer.as_deref(), &mut b);
            let took = thread_cpu().saturating_sub(t);
            prop_assert!(took < Duration::from_secs(2), "{took:?} of CPU time");
            prop_assert_eq!(a, b);
        }

        #[test]
        fn query_arguments_of_any_bytes(q in prop::collection::vec(any::<u8>(), 0..200), name in prop::collection::vec(any::<u8>(), 0..8)) {
            let mut out = Vec::new();
            if !arg(Some(&q), &name, &mut out) {
                prop_assert!(out.is_empty());
            }
        }
    }
}
