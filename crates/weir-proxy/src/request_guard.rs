//! Request checks Pingora's HTTP/1 parser leaves to the application, made before anything is
//! sent to an upstream: a request that fails one is answered `400` and the connection is
//! closed, as nginx does for the same requests.
//!
//! Pingora already rejects conflicting framing (`Content-Length` values that differ, a final
//! `Transfer-Encoding` other than `chunked`, `Transfer-Encoding` in HTTP/1.0), two `Host`
//! fields, userinfo in `Host` and absolute-form targets whose authority differs from `Host`.
//! What it accepts and forwards as received, and this module rejects:
//!
//! - `Content-Length` sent twice or as a list (`5, 5`): Pingora checks that the values agree
//!   but forwards every line unchanged, so a backend that reads such a value differently (a
//!   list it concatenates, the first or the last line) is handed an ambiguous length. RFC 9110
//!   section 8.6 lets a recipient either reject it or replace it with one value before
//!   forwarding; like nginx, Weir rejects it.
//! - An HTTP/1.1 request without `Host` (RFC 9112 section 3.2: "MUST respond with a 400"),
//!   and a `Host` value that is not a URI authority (`x y`, an empty value).
//! - A request target that is neither origin-form (`/path`), absolute-form (`http://...`),
//!   nor `OPTIONS *`: `GET x:80`, or the `%20/a` Pingora makes of `GET  /a` (two spaces).
//!   `CONNECT` is left to the proxy, which refuses it.
//!
//! Hand-written rather than parsed with `http::uri::Authority`: that parser accepts `@`, and
//! the check has to be a byte scan with no allocation on every request anyway.

use pingora::http::RequestHeader;

/// Why a request is refused: the status to answer and a reason for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: &'static str,
}

const fn bad(reason: &'static str) -> Rejection {
    Rejection {
        status: 400,
        reason,
    }
}

/// Check a request head Pingora has parsed. `Ok(())`: forward it; `Err`: answer
/// `rejection.status`, log `rejection.reason`, and close the connection.
pub fn check(req: &RequestHeader) -> Result<(), Rejection> {
    check_target(req)?;
    check_host(req)?;
    check_content_length(req)
}

fn check_target(req: &RequestHeader) -> Result<(), Rejection> {
    let target = req.raw_path();
    if req.method == http::Method::CONNECT
        || target.first() == Some(&b'/')
        || (req.method == http::Method::OPTIONS && target == b"*")
        || starts_with_ignore_case(target, b"http://")
        || starts_with_ignore_case(target, b"https://")
    {
        return Ok(());
    }
    Err(bad("request target is not in origin form"))
}

fn starts_with_ignore_case(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn check_host(req: &RequestHeader) -> Result<(), Rejection> {
    let mut hosts = req.headers.get_all(http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if req.version == http::Version::HTTP_11 => Err(bad("no Host header")),
        (None, _) => Ok(()),
        (Some(_), Some(_)) => Err(bad("more than one Host header")),
        (Some(h), None) if is_authority(h.as_bytes()) => Ok(()),
        (Some(_), None) => Err(bad("invalid Host header")),
    }
}

/// `host [ ":" port ]` of RFC 3986 without userinfo: reg-name characters (unreserved,
/// pct-encoded, sub-delims), an IP literal in brackets, and a port.
fn is_authority(h: &[u8]) -> bool {
    !h.is_empty()
        && h.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(b))
}

fn check_content_length(req: &RequestHeader) -> Result<(), Rejection> {
    // With Transfer-Encoding, Pingora has already removed Content-Length.
    let mut values = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    match (values.next(), values.next()) {
        (Some(_), Some(_)) => Err(bad("more than one Content-Length header")),
        (Some(v), None) if v.as_bytes().contains(&b',') => Err(bad("Content-Length list")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, target.as_bytes(), None).expect("request");
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).expect("header");
        }
        r
    }

    fn reason(r: &RequestHeader) -> Option<&'static str> {
        check(r).err().map(|e| e.reason)
    }

    #[test]
    fn well_formed_requests_pass() {
        for r in [
            req("GET", "/a?b=c", &[("Host", "example.com")]),
            req("GET", "/", &[("Host", "127.0.0.1:8080")]),
            req("GET", "/", &[("Host", "[::1]:80")]),
            req("GET", "http://x/a", &[("Host", "x")]),
            req("OPTIONS", "*", &[("Host", "x")]),
            req("CONNECT", "x:443", &[("Host", "x:443")]),
            req("POST", "/", &[("Host", "x"), ("Content-Length", "5")]),
        ] {
            assert_eq!(check(&r), Ok(()), "{r:?}");
        }
        let mut old = req("GET", "/", &[]);
        old.set_version(http::Version::HTTP_10);
        assert_eq!(check(&old), Ok(()), "HTTP/1.0 needs no Host");
    }

    #[test]
    fn ambiguous_requests_are_refused() {
        let cases = [
            (
                req("GET", "x:80", &[("Host", "x")]),
                "request target is not in origin form",
            ),
            (
                req("GET", "%20/a", &[("Host", "x")]),
                "request target is not in origin form",
            ),
            (
                req("GET", "*", &[("Host", "x")]),
                "request target is not in origin form",
            ),
            (req("GET", "/", &[]), "no Host header"),
            (req("GET", "/", &[("Host", "x y")]), "invalid Host header"),
            (req("GET", "/", &[("Host", "")]), "invalid Host header"),
            (req("GET", "/", &[("Host", "u@x")]), "invalid Host header"),
            (
                req("GET", "/", &[("Host", "x"), ("Host", "x")]),
                "more than one Host header",
            ),
            (
                req(
                    "POST",
                    "/",
                    &[
                        ("Host", "x"),
                        ("Content-Length", "5"),
                        ("Content-Length", "5"),
                    ],
                ),
                "more than one Content-Length header",
            ),
            (
                req("POST", "/", &[("Host", "x"), ("Content-Length", "5, 5")]),
                "Content-Length list",
            ),
        ];
        for (r, why) in cases {
            assert_eq!(reason(&r), Some(why), "{r:?}");
            assert_eq!(check(&r).map_err(|e| e.status), Err(400));
        }
    }
}
