//! Pure functions of the Kubernetes registry: request URLs, namespace filtering, list pages,
//! watch events, the Endpoints and EndpointSlice mapping and the service keys. No I/O here.
//!
//! Invariants: nothing here panics on what the API server sends (every field is read with
//! `get`/`as_*`); a body that is not the expected JSON is an `Err`; an object or address that
//! cannot be used is skipped with a warning and the rest is kept; every node list is sorted by
//! host, then port, without duplicates.

use crate::kubernetes::NamespaceSelector;
use crate::Node;
use regex::Regex;
use reqwest::Url;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// The label that ties an EndpointSlice to its Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

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

/// The identity of a Kubernetes object: namespace and name.
pub(crate) type ObjectKey = (String, String);

/// What one Endpoints or EndpointSlice object contributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Object {
    pub namespace: String,
    /// The Service: the object's name (Endpoints) or its service-name label (EndpointSlice).
    pub service: String,
    /// Port key (the port's name, or its number when unnamed) → ready nodes, sorted.
    pub ports: BTreeMap<String, Vec<Node>>,
}

/// Namespace selection: `equal`/`not_equal` are sent as a field selector (and checked again
/// here); `match`/`not_match` are full-match regular expressions applied here.
#[derive(Debug, Clone)]
pub(crate) enum NsFilter {
    All,
    Equal(String),
    NotEqual(String),
    Match(Vec<Regex>),
    NotMatch(Vec<Regex>),
}

impl NsFilter {
    /// Compile `sel`; an invalid regular expression is an error naming it.
    pub(crate) fn new(sel: Option<&NamespaceSelector>) -> Result<NsFilter, String> {
        let compile = |list: &[String]| -> Result<Vec<Regex>, String> {
            list.iter()
                .map(|p| {
                    Regex::new(&format!("^(?:{p})$"))
                        .map_err(|e| format!("namespace_selector: invalid pattern {p:?}: {e}"))
                })
                .collect()
        };
        Ok(match sel {
            None => NsFilter::All,
            Some(NamespaceSelector::Equal(n)) => NsFilter::Equal(n.clone()),
            Some(NamespaceSelector::NotEqual(n)) => NsFilter::NotEqual(n.clone()),
            Some(NamespaceSelector::Match(l)) => NsFilter::Match(compile(l)?),
            Some(NamespaceSelector::NotMatch(l)) => NsFilter::NotMatch(compile(l)?),
        })
    }

    /// The `fieldSelector` the API server filters with, if any.
    pub(crate) fn field_selector(&self) -> Option<String> {
        match self {
            NsFilter::Equal(n) => Some(format!("metadata.namespace={n}")),
            NsFilter::NotEqual(n) => Some(format!("metadata.namespace!={n}")),
            _ => None,
        }
    }

    /// Whether objects of namespace `ns` are used.
    pub(crate) fn admits(&self, ns: &str) -> bool {
        match self {
            NsFilter::All => true,
            NsFilter::Equal(n) => ns == n,
            NsFilter::NotEqual(n) => ns != n,
            NsFilter::Match(l) => l.iter().any(|r| r.is_match(ns)),
            NsFilter::NotMatch(l) => !l.iter().any(|r| r.is_match(ns)),
        }
    }
}

/// Everything needed to turn API objects into nodes for one cluster.
#[derive(Debug, Clone)]
pub(crate) struct Mapper {
    pub kind: Kind,
    pub weight: u32,
    pub filter: NsFilter,
    pub label_selector: Option<String>,
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

/// The catalog key of a service port: `<ns>/<name>:<port>`, or `<id>/<ns>/<name>:<port>`
/// in the multi-cluster form.
pub(crate) fn service_key(id: Option<&str>, ns: &str, service: &str, port: &str) -> String {
    match id {
        Some(id) => format!("{id}/{ns}/{service}:{port}"),
        None => format!("{ns}/{service}:{port}"),
    }
}

/// The catalog of one cluster: every object's ports under their service keys, nodes of the
/// same key merged (EndpointSlices of one Service), sorted by host then port, de-duplicated.
pub(crate) fn build_services(
    objects: &BTreeMap<ObjectKey, Object>,
    id: Option<&str>,
) -> HashMap<String, Vec<Node>> {
    let mut out: HashMap<String, Vec<Node>> = HashMap::new();
    for o in objects.values() {
        for (port, nodes) in &o.ports {
            out.entry(service_key(id, &o.namespace, &o.service, port))
                .or_default()
                .extend(nodes.iter().cloned());
        }
    }
    for nodes in out.values_mut() {
        sort_nodes(nodes);
    }
    out
}

fn sort_nodes(nodes: &mut Vec<Node>) {
    nodes.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
    nodes.dedup_by(|a, b| a.host == b.host && a.port == b.port);
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

/// An object's key, and what it contributes: `None` when it is not used (a namespace the
/// selector excludes, a slice without the service-name label). `Err` when it has no name.
pub(crate) fn parse_object(v: &Value, m: &Mapper) -> Result<(ObjectKey, Option<Object>), String> {
    let meta = v.get("metadata");
    let field = |k: &str| meta.and_then(|x| x.get(k)).and_then(Value::as_str);
    let name = field("name")
        .filter(|s| !s.is_empty())
        .ok_or("no metadata.name")?;
    let ns = field("namespace")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{name}: no metadata.namespace"))?;
    let key = (ns.to_owned(), name.to_owned());
    if !m.filter.admits(ns) {
        return Ok((key, None));
    }
    let object = match m.kind {
        Kind::Endpoints => Some(Object {
            namespace: ns.to_owned(),
            service: name.to_owned(),
            ports: endpoints_ports(v, m.weight, &format!("{ns}/{name}")),
        }),
        Kind::EndpointSlices => {
            let service = meta
                .and_then(|x| x.get("labels"))
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            service.map(|s| Object {
                namespace: ns.to_owned(),
                service: s.to_owned(),
                ports: slice_ports(v, m.weight, &format!("{ns}/{name}")),
            })
        }
    };
    Ok((key, object))
}

fn array<'a>(v: Option<&'a Value>) -> &'a [Value] {
    v.and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// A port entry's key and number; `None` (with a warning) when the number is missing or out of
/// range.
fn port_of(p: &Value, what: &str) -> Option<(String, u16)> {
    let Some(n) = p
        .get("port")
        .and_then(Value::as_u64)
        .and_then(|n| u16::try_from(n).ok())
        .filter(|&n| n > 0)
    else {
        log::warn!("discovery kubernetes: {what}: skipping a port without a valid number: {p}");
        return None;
    };
    let key = match p.get("name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => n.to_string(),
    };
    Some((key, n))
}

/// A node for `host:port`, or `None` with a warning when it cannot be used.
fn node(host: &str, port: u16, weight: u32, what: &str) -> Option<Node> {
    let n = Node::new(host, port, weight, 0);
    match n.check() {
        Ok(()) => Some(n),
        Err(e) => {
            log::warn!("discovery kubernetes: {what}: skipping an address: {e}");
            None
        }
    }
}

/// Endpoints: each `(subset, port)` adds the subset's ready `addresses` (never
/// `notReadyAddresses`) under the port's key. A port whose addresses are all not ready is kept
/// with no nodes.
fn endpoints_ports(v: &Value, weight: u32, what: &str) -> BTreeMap<String, Vec<Node>> {
    let mut out: BTreeMap<String, Vec<Node>> = BTreeMap::new();
    for subset in array(v.get("subsets")) {
        let hosts: Vec<&str> = array(subset.get("addresses"))
            .iter()
            .filter_map(|a| {
                let ip = a.get("ip").and_then(Value::as_str);
                if ip.is_none() {
                    log::warn!("discovery kubernetes: {what}: skipping an address without ip: {a}");
                }
                ip
            })
            .collect();
        for p in array(subset.get("ports")) {
            let Some((key, port)) = port_of(p, what) else {
                continue;
            };
            let nodes = out.entry(key).or_default();
            nodes.extend(hosts.iter().filter_map(|h| node(h, port, weight, what)));
        }
    }
    for nodes in out.values_mut() {
        sort_nodes(nodes);
    }
    out
}

/// EndpointSlice: every port gets the addresses of the endpoints whose `conditions.ready` is
/// true.
fn slice_ports(v: &Value, weight: u32, what: &str) -> BTreeMap<String, Vec<Node>> {
    let hosts: Vec<&str> = array(v.get("endpoints"))
        .iter()
        .filter(|e| {
            e.get("conditions")
                .and_then(|c| c.get("ready"))
                .and_then(Value::as_bool)
                == Some(true)
        })
        .flat_map(|e| array(e.get("addresses")))
        .filter_map(|a| {
            let s = a.as_str();
            if s.is_none() {
                log::warn!(
                    "discovery kubernetes: {what}: skipping an address that is not a string: {a}"
                );
            }
            s
        })
        .collect();
    let mut out: BTreeMap<String, Vec<Node>> = BTreeMap::new();
    for p in array(v.get("ports")) {
        let Some((key, port)) = port_of(p, what) else {
            continue;
        };
        let nodes = out.entry(key).or_default();
        nodes.extend(hosts.iter().filter_map(|h| node(h, port, weight, what)));
    }
    for nodes in out.values_mut() {
        sort_nodes(nodes);
    }
    out
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
    use serde_json::json;

    fn mapper(kind: Kind) -> Mapper {
        Mapper {
            kind,
            weight: 50,
            filter: NsFilter::All,
            label_selector: None,
        }
    }

    fn nodes(list: &[(&str, u16)]) -> Vec<Node> {
        list.iter().map(|&(h, p)| Node::new(h, p, 50, 0)).collect()
    }

    fn obj(ns: &str, service: &str, ports: &[(&str, &[(&str, u16)])]) -> Object {
        Object {
            namespace: ns.into(),
            service: service.into(),
            ports: ports
                .iter()
                .map(|(k, n)| (k.to_string(), nodes(n)))
                .collect(),
        }
    }

    fn key(ns: &str, name: &str) -> ObjectKey {
        (ns.into(), name.into())
    }

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
    fn namespace_filters() {
        let sel = |s: NamespaceSelector| NsFilter::new(Some(&s)).unwrap();
        let f = sel(NamespaceSelector::Match(vec![
            "shop".into(),
            "team-.*".into(),
        ]));
        assert!(f.admits("shop") && f.admits("team-a"));
        assert!(!f.admits("shop2"), "full match only");
        assert!(!f.admits("my-team-a"));
        assert_eq!(f.field_selector(), None);
        let f = sel(NamespaceSelector::NotMatch(vec!["kube-.*".into()]));
        assert!(!f.admits("kube-system") && f.admits("shop") && f.admits("a-kube-x"));
        let f = sel(NamespaceSelector::Equal("shop".into()));
        assert!(f.admits("shop") && !f.admits("other"));
        assert_eq!(
            f.field_selector().as_deref(),
            Some("metadata.namespace=shop")
        );
        let f = sel(NamespaceSelector::NotEqual("shop".into()));
        assert!(!f.admits("shop") && f.admits("other"));
        assert_eq!(
            f.field_selector().as_deref(),
            Some("metadata.namespace!=shop")
        );
        assert!(NsFilter::new(None).unwrap().admits("any"));
        let bad = NsFilter::new(Some(&NamespaceSelector::Match(vec!["(".into()])));
        assert!(bad.unwrap_err().contains("\"(\""));
    }

    #[test]
    fn service_keys() {
        assert_eq!(service_key(None, "shop", "cart", "http"), "shop/cart:http");
        assert_eq!(
            service_key(Some("east"), "shop", "cart", "8080"),
            "east/shop/cart:8080"
        );
    }

    #[test]
    fn endpoints_map_ready_addresses_per_named_or_numbered_port() {
        let v = json!({"kind": "Endpoints",
            "metadata": {"name": "cart", "namespace": "shop", "resourceVersion": "42"},
            "subsets": [
                {"addresses": [{"ip": "10.1.0.2"}, {"ip": "10.1.0.1"}],
                 "notReadyAddresses": [{"ip": "10.1.0.9"}],
                 "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                           {"port": 9090}]},
                {"addresses": [{"ip": "10.1.0.3"}, {"ip": "10.1.0.1"}],
                 "ports": [{"name": "http", "port": 8080}]},
                {"notReadyAddresses": [{"ip": "10.1.0.7"}],
                 "ports": [{"name": "admin", "port": 7000}]}]});
        let (k, o) = parse_object(&v, &mapper(Kind::Endpoints)).unwrap();
        assert_eq!(k, key("shop", "cart"));
        assert_eq!(
            o.unwrap(),
            obj(
                "shop",
                "cart",
                &[
                    ("admin", &[]),
                    (
                        "http",
                        &[("10.1.0.1", 8080), ("10.1.0.2", 8080), ("10.1.0.3", 8080)]
                    ),
                    ("9090", &[("10.1.0.1", 9090), ("10.1.0.2", 9090)]),
                ]
            )
        );
    }

    #[test]
    fn endpoints_skip_invalid_addresses_and_ports() {
        let v = json!({"metadata": {"name": "cart", "namespace": "shop"},
            "subsets": [{"addresses": [{"ip": "10.1.0.1"}, {"ip": "not an ip"}, {"hostname": "x"},
                                       {"ip": 7}, {"ip": "fd00::1"}],
                         "ports": [{"name": "http", "port": 8080}, {"name": "bad", "port": 0},
                                   {"name": "big", "port": 70000}, {"name": "str", "port": "80"}]}]});
        let (_, o) = parse_object(&v, &mapper(Kind::Endpoints)).unwrap();
        assert_eq!(
            o.unwrap().ports,
            BTreeMap::from([(
                "http".to_owned(),
                nodes(&[("10.1.0.1", 8080), ("fd00::1", 8080)])
            )])
        );
        // Empty or missing subsets: no ports at all.
        for v in [
            json!({"metadata": {"name": "a", "namespace": "n"}}),
            json!({"metadata": {"name": "a", "namespace": "n"}, "subsets": null}),
            json!({"metadata": {"name": "a", "namespace": "n"}, "subsets": "x"}),
        ] {
            let (_, o) = parse_object(&v, &mapper(Kind::Endpoints)).unwrap();
            assert!(o.unwrap().ports.is_empty(), "{v}");
        }
        assert!(parse_object(
            &json!({"metadata": {"namespace": "n"}}),
            &mapper(Kind::Endpoints)
        )
        .is_err());
        assert!(parse_object(
            &json!({"metadata": {"name": "a"}}),
            &mapper(Kind::Endpoints)
        )
        .is_err());
        assert!(parse_object(&json!([1]), &mapper(Kind::Endpoints)).is_err());
    }

    #[test]
    fn slices_use_ready_endpoints_and_the_service_label() {
        let v = json!({"kind": "EndpointSlice",
            "metadata": {"name": "cart-x1", "namespace": "shop",
                         "labels": {"kubernetes.io/service-name": "cart"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.1.0.2"], "conditions": {"ready": true}},
                {"addresses": ["10.1.0.1", "10.1.0.4"], "conditions": {"ready": true}},
                {"addresses": ["10.1.0.9"], "conditions": {"ready": false}},
                {"addresses": ["10.1.0.8"], "conditions": {}},
                {"addresses": ["10.1.0.7"]},
                {"addresses": [5, "bad host"], "conditions": {"ready": true}}],
            "ports": [{"name": "http", "port": 8080}, {"name": "", "port": 9090}, {"name": "x"}]});
        let (k, o) = parse_object(&v, &mapper(Kind::EndpointSlices)).unwrap();
        assert_eq!(k, key("shop", "cart-x1"));
        let all = [("10.1.0.1", 0), ("10.1.0.2", 0), ("10.1.0.4", 0)];
        let on = |p: u16| all.iter().map(|&(h, _)| (h, p)).collect::<Vec<_>>();
        assert_eq!(
            o.unwrap(),
            obj("shop", "cart", &[("http", &on(8080)), ("9090", &on(9090))])
        );
        // Without the label the slice is ignored.
        let v = json!({"metadata": {"name": "orphan", "namespace": "shop", "labels": {}},
                       "endpoints": [], "ports": []});
        assert_eq!(
            parse_object(&v, &mapper(Kind::EndpointSlices)).unwrap(),
            (key("shop", "orphan"), None)
        );
    }

    #[test]
    fn excluded_namespaces_are_not_used() {
        let mut m = mapper(Kind::Endpoints);
        m.filter =
            NsFilter::new(Some(&NamespaceSelector::NotMatch(vec!["kube-.*".into()]))).unwrap();
        let v = json!({"metadata": {"name": "dns", "namespace": "kube-system"}});
        assert_eq!(
            parse_object(&v, &m).unwrap(),
            (key("kube-system", "dns"), None)
        );
    }

    #[test]
    fn slices_of_one_service_merge() {
        let objects = BTreeMap::from([
            (
                key("shop", "cart-b"),
                obj(
                    "shop",
                    "cart",
                    &[("http", &[("10.0.0.2", 80), ("10.0.0.1", 80)])],
                ),
            ),
            (
                key("shop", "cart-a"),
                obj(
                    "shop",
                    "cart",
                    &[("http", &[("10.0.0.3", 80), ("10.0.0.1", 80)])],
                ),
            ),
            (
                key("shop", "web"),
                obj("shop", "web", &[("80", &[("10.0.1.1", 80)])]),
            ),
            (key("shop", "idle"), obj("shop", "idle", &[("http", &[])])),
        ]);
        let s = build_services(&objects, None);
        assert_eq!(
            s,
            HashMap::from([
                (
                    "shop/cart:http".to_owned(),
                    nodes(&[("10.0.0.1", 80), ("10.0.0.2", 80), ("10.0.0.3", 80)])
                ),
                ("shop/web:80".to_owned(), nodes(&[("10.0.1.1", 80)])),
                ("shop/idle:http".to_owned(), vec![]),
            ])
        );
        let s = build_services(&objects, Some("east"));
        let mut keys: Vec<_> = s.keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "east/shop/cart:http",
                "east/shop/idle:http",
                "east/shop/web:80"
            ]
        );
    }

    #[test]
    fn nodes_sort_by_host_then_port() {
        let mut n = nodes(&[
            ("10.0.0.2", 80),
            ("10.0.0.10", 81),
            ("10.0.0.10", 80),
            ("10.0.0.2", 80),
        ]);
        sort_nodes(&mut n);
        assert_eq!(
            n,
            nodes(&[("10.0.0.10", 80), ("10.0.0.10", 81), ("10.0.0.2", 80)])
        );
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
