//! The wire protocol of the Kubernetes registry: request URLs, list pages, watch events and
//! the splitting of a watch stream into lines, and what the watch loop does next. Pure
//! functions, no I/O; objects are mapped to nodes by [`super::mapping`].
//!
//! Invariants: nothing here panics on what the API server sends; a body or event line that is
//! not the expected JSON is an `Err` (the answer failed and changes nothing).

use super::mapping::{parse_object, Mapper, Object, ObjectKey};
use reqwest::Url;
use serde_json::Value;

/// Items per list page.
pub(crate) const PAGE_LIMIT: u32 = 120;

/// Watches in a row from one list; the next one is a fresh list.
pub(crate) const WATCHES_PER_LIST: u32 = 8;

/// The longest watch line (one event) accepted; a longer one is an error.
pub(crate) const MAX_LINE: usize = 16 << 20;

/// What a cluster lists and watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Endpoints,
    EndpointSlices,
}

impl Kind {
    pub(crate) fn path(self) -> &'static str {
        match self {
            Kind::Endpoints => "/api/v1/endpoints",
            Kind::EndpointSlices => "/apis/discovery.k8s.io/v1/endpointslices",
        }
    }
}

/// The list URL: `<base><path>?limit=120[&continue=][&labelSelector=][&fieldSelector=]`.
pub(crate) fn list_url(base: &str, m: &Mapper, cont: Option<&str>) -> Result<String, String> {
    let mut q = vec![("limit", PAGE_LIMIT.to_string())];
    if let Some(c) = cont {
        q.push(("continue", c.to_owned()));
    }
    url_with(base, m, q)
}

/// The watch URL: `<base><path>?watch=true&allowWatchBookmarks=true&timeoutSeconds=<t>`
/// `&resourceVersion=<rv>[&labelSelector=][&fieldSelector=]`.
pub(crate) fn watch_url(base: &str, m: &Mapper, rv: &str, timeout: u64) -> Result<String, String> {
    let q = vec![
        ("watch", "true".to_owned()),
        ("allowWatchBookmarks", "true".to_owned()),
        ("timeoutSeconds", timeout.to_string()),
        ("resourceVersion", rv.to_owned()),
    ];
    url_with(base, m, q)
}

/// `<base><path>?<q>` followed by the selectors, form-encoded.
fn url_with(base: &str, m: &Mapper, mut q: Vec<(&str, String)>) -> Result<String, String> {
    let bad = |why: &str| format!("invalid API server URL {base:?}: {why}");
    let mut url = Url::parse(base).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("not http(s)"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(bad("has a path"));
    }
    url.set_path(m.kind.path());
    if let Some(l) = m.label_selector.as_deref().filter(|l| !l.is_empty()) {
        q.push(("labelSelector", l.to_owned()));
    }
    if let Some(f) = m.filter.field_selector() {
        q.push(("fieldSelector", f));
    }
    url.query_pairs_mut().extend_pairs(q);
    Ok(url.into())
}

/// One page of a list answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Page {
    pub resource_version: String,
    /// `metadata.continue`: more pages remain.
    pub cont: Option<String>,
    /// The usable objects of the page (filtered out and invalid ones are left out).
    pub objects: Vec<(ObjectKey, Object)>,
}

/// Parse a list page (`EndpointsList` / `EndpointSliceList`). Not JSON, not an object, no
/// `metadata.resourceVersion` or an `items` that is not an array: an error. An item that cannot
/// be used is skipped with a warning.
pub(crate) fn parse_page(body: &[u8], m: &Mapper) -> Result<Page, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("list body is not JSON: {e}"))?;
    let meta = v
        .get("metadata")
        .ok_or("list body has no metadata (not a list)")?;
    let resource_version = meta
        .get("resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("list body has no metadata.resourceVersion")?
        .to_owned();
    let cont = meta
        .get("continue")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let items = match v.get("items") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(a)) => a.as_slice(),
        Some(_) => return Err("list body: items is not an array".into()),
    };
    let mut objects = Vec::with_capacity(items.len());
    for item in items {
        match parse_object(item, m) {
            Ok((key, Some(o))) => objects.push((key, o)),
            Ok((_, None)) => {}
            Err(e) => log::warn!("discovery kubernetes: skipping an object: {e}"),
        }
    }
    Ok(Page {
        resource_version,
        cont,
        objects,
    })
}

/// What one watch event asks for.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    /// ADDED/MODIFIED: the object is now this (`None`: no longer used, e.g. its slice lost the
    /// service-name label).
    Put(ObjectKey, Option<Object>),
    /// DELETED.
    Delete(ObjectKey),
    /// BOOKMARK: only the resourceVersion moves.
    Bookmark,
    /// ERROR with code 410: the resourceVersion is too old; list again.
    Expired,
    /// Another ERROR: the watch failed.
    Failed(String),
    /// An event that cannot be used (unknown type, object without a name): skipped.
    Skip(String),
}

/// A watch event and the resourceVersion it moves to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WatchEvent {
    pub resource_version: Option<String>,
    pub event: Event,
}

/// Parse one line of a watch stream. A line that is not a JSON object with a `type` is an
/// error (the stream is broken).
pub(crate) fn parse_event(line: &[u8], m: &Mapper) -> Result<WatchEvent, String> {
    let v: Value =
        serde_json::from_slice(line).map_err(|e| format!("watch event is not JSON: {e}"))?;
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .ok_or("watch event has no type")?;
    let object = v.get("object").unwrap_or(&Value::Null);
    let resource_version = object
        .get("metadata")
        .and_then(|x| x.get("resourceVersion"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let event = match kind {
        "ADDED" | "MODIFIED" | "DELETED" => match parse_object(object, m) {
            Err(e) => Event::Skip(format!("{kind} event: {e}")),
            Ok((key, _)) if kind == "DELETED" => Event::Delete(key),
            Ok((key, o)) => Event::Put(key, o),
        },
        "BOOKMARK" => Event::Bookmark,
        "ERROR" => {
            let code = object.get("code").and_then(Value::as_u64);
            let msg = object.get("message").and_then(Value::as_str).unwrap_or("");
            match code {
                Some(410) => Event::Expired,
                Some(c) => Event::Failed(format!("watch error {c}: {msg}")),
                None => Event::Failed(format!("watch error: {msg}")),
            }
        }
        other => Event::Skip(format!("unknown watch event type {other:?}")),
    };
    Ok(WatchEvent {
        resource_version,
        event,
    })
}

/// Splits a watch stream into lines whatever the chunk boundaries: a line split across chunks
/// is joined, several lines in one chunk are separated. Blank lines are dropped.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    /// Feed a chunk; returns the lines it completed. A line longer than [`MAX_LINE`] is an
    /// error.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            self.buf.extend_from_slice(&rest[..i]);
            rest = &rest[i + 1..];
            let line = std::mem::take(&mut self.buf);
            if !line.iter().all(u8::is_ascii_whitespace) {
                out.push(line);
            }
        }
        self.buf.extend_from_slice(rest);
        if self.buf.len() > MAX_LINE {
            return Err(format!("watch event longer than {MAX_LINE} bytes"));
        }
        Ok(out)
    }

    /// At the end of the stream: the last line if it had no newline.
    pub(crate) fn finish(&mut self) -> Option<Vec<u8>> {
        let line = std::mem::take(&mut self.buf);
        (!line.iter().all(u8::is_ascii_whitespace)).then_some(line)
    }
}

/// How a watch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WatchEnd {
    /// The server (or our deadline) ended the stream normally.
    Closed,
    /// 410: the resourceVersion expired.
    Expired,
    /// An error (request failed, non-2xx, broken stream, ERROR event).
    Failed(String),
}

/// What to do after a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// Watch again from the current resourceVersion.
    Watch,
    /// List again now.
    Relist,
    /// Record the error, wait the backoff delay, then list again.
    Backoff(String),
}

/// After the `watches`-th watch since the last list ended with `end`.
pub(crate) fn next_step(end: &WatchEnd, watches: u32) -> Next {
    match end {
        WatchEnd::Failed(e) => Next::Backoff(e.clone()),
        WatchEnd::Expired => Next::Relist,
        WatchEnd::Closed if watches >= WATCHES_PER_LIST => Next::Relist,
        WatchEnd::Closed => Next::Watch,
    }
}

/// The watch's `timeoutSeconds` for a random `jitter` in 9..=999.
pub(crate) fn watch_timeout(jitter: u64) -> u64 {
    1800 + jitter.clamp(9, 999)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::mapping::tests::{key, mapper, obj};
    use crate::kubernetes::mapping::NsFilter;

    #[test]
    fn list_and_watch_urls() {
        let mut m = mapper(Kind::Endpoints);
        assert_eq!(
            list_url("https://10.96.0.1:443", &m, None).unwrap(),
            "https://10.96.0.1/api/v1/endpoints?limit=120"
        );
        m.label_selector = Some("app=cart,tier!=db".into());
        m.filter = NsFilter::Equal("shop".into());
        assert_eq!(
            list_url("http://k:8080/", &m, Some("abc=")).unwrap(),
            "http://k:8080/api/v1/endpoints?limit=120&continue=abc%3D\
             &labelSelector=app%3Dcart%2Ctier%21%3Ddb&fieldSelector=metadata.namespace%3Dshop"
        );
        m.kind = Kind::EndpointSlices;
        m.label_selector = None;
        m.filter = NsFilter::NotEqual("kube-system".into());
        assert_eq!(
            watch_url("http://k:8080", &m, "42", 1809).unwrap(),
            "http://k:8080/apis/discovery.k8s.io/v1/endpointslices?watch=true\
             &allowWatchBookmarks=true&timeoutSeconds=1809&resourceVersion=42\
             &fieldSelector=metadata.namespace%21%3Dkube-system"
        );
        assert!(list_url("k:8080", &m, None).is_err());
        assert!(list_url("ftp://k", &m, None).is_err());
        assert!(list_url("http://", &m, None).is_err());
        assert!(list_url("http://k/api", &m, None).is_err());
    }

    #[test]
    fn list_pages() {
        let body = br#"{"kind": "EndpointsList", "apiVersion": "v1",
            "metadata": {"resourceVersion": "100", "continue": "next-1"},
            "items": [
              {"metadata": {"name": "cart", "namespace": "shop"},
               "subsets": [{"addresses": [{"ip": "10.1.0.1"}], "ports": [{"name": "http", "port": 8080}]}]},
              {"metadata": {"namespace": "shop"}},
              {"metadata": {"name": "web", "namespace": "shop"}}]}"#;
        let p = parse_page(body, &mapper(Kind::Endpoints)).unwrap();
        assert_eq!(p.resource_version, "100");
        assert_eq!(p.cont.as_deref(), Some("next-1"));
        assert_eq!(
            p.objects,
            vec![
                (
                    key("shop", "cart"),
                    obj("shop", "cart", &[("http", &[("10.1.0.1", 8080)])])
                ),
                (key("shop", "web"), obj("shop", "web", &[])),
            ]
        );
        let last = br#"{"metadata": {"resourceVersion": "100", "continue": ""}, "items": null}"#;
        let p = parse_page(last, &mapper(Kind::Endpoints)).unwrap();
        assert_eq!((p.cont, p.objects.len()), (None, 0));
        for bad in [
            &b"{not json"[..],
            b"[]",
            b"{}",
            br#"{"metadata": {}, "items": []}"#,
            br#"{"metadata": {"resourceVersion": ""}, "items": []}"#,
            br#"{"metadata": {"resourceVersion": "1"}, "items": {}}"#,
        ] {
            assert!(
                parse_page(bad, &mapper(Kind::Endpoints)).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn watch_events() {
        let m = mapper(Kind::Endpoints);
        let e = parse_event(
            br#"{"type": "ADDED", "object": {"kind": "Endpoints", "metadata": {"name": "cart",
                "namespace": "shop", "resourceVersion": "43"},
                "subsets": [{"addresses": [{"ip": "10.1.0.1"}], "ports": [{"port": 80}]}]}}"#,
            &m,
        )
        .unwrap();
        assert_eq!(
            e,
            WatchEvent {
                resource_version: Some("43".into()),
                event: Event::Put(
                    key("shop", "cart"),
                    Some(obj("shop", "cart", &[("80", &[("10.1.0.1", 80)])]))
                ),
            }
        );
        let e = parse_event(
            br#"{"type": "DELETED", "object": {"metadata": {"name": "cart", "namespace": "shop",
                "resourceVersion": "44"}}}"#,
            &m,
        )
        .unwrap();
        assert_eq!(e.event, Event::Delete(key("shop", "cart")));
        assert_eq!(e.resource_version.as_deref(), Some("44"));
        let e = parse_event(
            br#"{"type": "BOOKMARK", "object": {"kind": "Endpoints", "metadata": {"resourceVersion": "50"}}}"#,
            &m,
        )
        .unwrap();
        assert_eq!(
            e,
            WatchEvent {
                resource_version: Some("50".into()),
                event: Event::Bookmark
            }
        );
        let e = parse_event(
            br#"{"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": "too old resource version: 1 (50)",
                "reason": "Expired", "code": 410}}"#,
            &m,
        )
        .unwrap();
        assert_eq!(e.event, Event::Expired);
        assert_eq!(e.resource_version, None);
        let e = parse_event(
            br#"{"type": "ERROR", "object": {"kind": "Status", "message": "boom", "code": 500}}"#,
            &m,
        )
        .unwrap();
        assert_eq!(e.event, Event::Failed("watch error 500: boom".into()));
        let e = parse_event(br#"{"type": "ADDED", "object": {"metadata": {}}}"#, &m).unwrap();
        assert!(matches!(e.event, Event::Skip(_)));
        let e = parse_event(br#"{"type": "WHATEVER", "object": {}}"#, &m).unwrap();
        assert!(matches!(e.event, Event::Skip(_)));
        for bad in [&b"garbage"[..], b"{}", br#"{"type": 1}"#, b"[1,2]"] {
            assert!(
                parse_event(bad, &m).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn lines_are_joined_across_chunks() {
        let mut l = Lines::default();
        assert_eq!(l.push(b"{\"a\":").unwrap(), Vec::<Vec<u8>>::new());
        assert_eq!(l.push(b"1}\n{\"b\"").unwrap(), vec![b"{\"a\":1}".to_vec()]);
        assert_eq!(
            l.push(b":2}\n\n  \n{\"c\":3}\n{\"d\"").unwrap(),
            vec![b"{\"b\":2}".to_vec(), b"{\"c\":3}".to_vec()]
        );
        assert_eq!(l.finish(), Some(b"{\"d\"".to_vec()));
        assert_eq!(l.finish(), None);
        let mut l = Lines::default();
        assert!(l.push(&vec![b'x'; MAX_LINE + 1]).is_err());
    }

    #[test]
    fn watch_loop_steps() {
        assert_eq!(next_step(&WatchEnd::Closed, 1), Next::Watch);
        assert_eq!(next_step(&WatchEnd::Closed, 7), Next::Watch);
        assert_eq!(next_step(&WatchEnd::Closed, 8), Next::Relist);
        assert_eq!(next_step(&WatchEnd::Expired, 1), Next::Relist);
        assert_eq!(
            next_step(&WatchEnd::Failed("x".into()), 3),
            Next::Backoff("x".into())
        );
        assert_eq!(watch_timeout(9), 1809);
        assert_eq!(watch_timeout(999), 2799);
        assert_eq!(watch_timeout(5000), 2799);
    }
}

/// Property tests: whatever an API server (or something posing as one) sends, list pages,
/// watch events and the line splitter return `Ok` or `Err`, never panic and answer in
/// bounded time; every node they accept is valid. `PROPTEST_CASES` sets the number of cases
/// (256 by default).
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzz::{edits, json, mutate, replace_somewhere, timed};
    use crate::kubernetes::mapping::tests::mapper;
    use proptest::prelude::*;
    use serde_json::json;

    fn valid_page() -> Value {
        json!({"kind": "EndpointsList", "apiVersion": "v1",
               "metadata": {"resourceVersion": "100", "continue": "next-1"},
               "items": [
                 {"metadata": {"name": "cart", "namespace": "shop"},
                  "subsets": [{"addresses": [{"ip": "10.1.0.1"}], "notReadyAddresses": [{"ip": "10.1.0.9"}],
                               "ports": [{"name": "http", "port": 8080}, {"port": 9090}]}]}]})
    }

    fn valid_slice_event() -> Value {
        json!({"type": "MODIFIED", "object": {"kind": "EndpointSlice", "addressType": "IPv4",
               "metadata": {"name": "cart-abc", "namespace": "shop", "resourceVersion": "43",
                            "labels": {"kubernetes.io/service-name": "cart"}},
               "endpoints": [{"addresses": ["10.1.0.1"], "conditions": {"ready": true}},
                             {"addresses": ["10.1.0.2"], "conditions": {"ready": false}}],
               "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}})
    }

    fn check_object(o: &Object) {
        for nodes in o.ports.values() {
            for n in nodes {
                assert!(n.check().is_ok(), "accepted an invalid node {n:?}");
            }
        }
    }

    fn check_all(body: &[u8]) {
        for kind in [Kind::Endpoints, Kind::EndpointSlices] {
            let m = mapper(kind);
            if let Ok(p) = timed("parse_page", || parse_page(body, &m)) {
                assert!(!p.resource_version.is_empty());
                p.objects.iter().for_each(|(_, o)| check_object(o));
            }
            if let Ok(e) = timed("parse_event", || parse_event(body, &m)) {
                if let Event::Put(_, Some(o)) = &e.event {
                    check_object(o);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_json(v in json()) {
            check_all(v.to_string().as_bytes());
        }

        #[test]
        fn arbitrary_bytes(b in prop::collection::vec(any::<u8>(), 0..512)) {
            check_all(&b);
        }

        #[test]
        fn mutated_bytes(e in edits()) {
            check_all(&mutate(valid_page().to_string().as_bytes(), &e));
            check_all(&mutate(valid_slice_event().to_string().as_bytes(), &e));
        }

        #[test]
        fn mutated_structure(pick in any::<usize>(), with in json()) {
            check_all(replace_somewhere(&valid_page(), pick, with.clone()).to_string().as_bytes());
            check_all(replace_somewhere(&valid_slice_event(), pick, with).to_string().as_bytes());
        }

        /// Whatever the chunk boundaries, the lines come out the same: the non-blank lines
        /// of the whole stream.
        #[test]
        fn lines_whatever_the_chunks(
            stream in prop::collection::vec(prop_oneof![Just(b'\n'), Just(b' '), any::<u8>()], 0..400),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut l = Lines::default();
            let mut got = Vec::new();
            let mut from = 0;
            for c in cuts.into_iter().chain([stream.len()]) {
                got.extend(l.push(&stream[from..c]).map_err(TestCaseError::fail)?);
                from = c;
            }
            got.extend(l.finish());
            let want: Vec<Vec<u8>> = stream
                .split(|&b| b == b'\n')
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .map(<[u8]>::to_vec)
                .collect();
            prop_assert_eq!(got, want);
        }

        /// `continue` tokens and resource versions come from the server: any text makes a
        /// URL or an error.
        #[test]
        fn urls_from_server_text(cont in "\\PC{0,40}", rv in "\\PC{0,40}", t in any::<u64>()) {
            let m = mapper(Kind::EndpointSlices);
            let _ = timed("list_url", || list_url("https://10.96.0.1:443", &m, Some(&cont)));
            let _ = timed("watch_url", || watch_url("https://10.96.0.1:443", &m, &rv, t));
        }
    }
}
