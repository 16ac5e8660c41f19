//! HTTP plumbing shared by the Consul and Nacos clients: one reqwest client per registry,
//! bounded bodies, and error texts that never carry a URL's query (where Nacos puts its
//! password and access token) or a header.

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, Url};
use std::time::Duration;

/// A registry answer larger than this is refused (a misbehaving server cannot exhaust memory).
pub(crate) const MAX_BODY: usize = 64 << 20;

/// An HTTP/1.1 client for one registry: no redirects (a 3xx is an error, and credentials are
/// never forwarded elsewhere), no environment proxy, `connect` as the connect timeout and
/// `read` (when given) as the longest silence while reading an answer.
pub(crate) fn client(connect: Duration, read: Option<Duration>) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(connect)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if let Some(r) = read {
        b = b.read_timeout(r);
    }
    b.build().map_err(describe)
}

/// A complete answer: status, headers and the whole body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// The value of header `name` when it is valid text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Send `req` and read its whole body (at most [`MAX_BODY`] bytes).
pub(crate) async fn send(req: RequestBuilder) -> Result<Reply, String> {
    let mut resp = req.send().await.map_err(describe)?;
    let status = resp.status().as_u16();
    let headers = std::mem::take(resp.headers_mut());
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(describe)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("answer larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// The text of a client error and its causes, without the request's URL.
pub(crate) fn describe(e: reqwest::Error) -> String {
    let timeout = e.is_timeout();
    let e = e.without_url();
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    if timeout && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    text
}

/// `url` as it may appear in logs and errors: scheme, authority without credentials, path.
pub(crate) fn shown(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// The first `max` characters of a body, for error texts.
pub(crate) fn snippet(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        s.push_str("...");
    }
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_urls_lose_query_and_credentials() {
        let u = Url::parse("http://u:secret@10.0.0.1:8848/nacos/v1/ns/instance/list?accessToken=t")
            .expect("url");
        assert_eq!(shown(&u), "http://10.0.0.1:8848/nacos/v1/ns/instance/list");
    }

    #[test]
    fn snippets_are_short_and_one_line() {
        assert_eq!(snippet(b"ab\ncd", 10), "ab cd");
        assert_eq!(snippet("é".repeat(5).as_bytes(), 3), "ééé...");
    }
}
