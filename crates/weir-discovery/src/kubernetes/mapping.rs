//! From API objects to nodes: namespace selection, the Endpoints and EndpointSlice mapping, the
//! service keys and the merged catalog of a cluster. Pure functions, no I/O.
//!
//! Invariants: nothing here panics on what the API server sends (every field is read with
//! `get`/`as_*`); an object, port or address that cannot be used is skipped with a warning and
//! the rest is kept; every node list is sorted by host, then port, without duplicates.

use super::parse::Kind;
use crate::kubernetes::NamespaceSelector;
use crate::Node;
use regex::Regex;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// The label that ties an EndpointSlice to its Service.
pub(crate) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

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

fn array(v: Option<&Value>) -> &[Value] {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn mapper(kind: Kind) -> Mapper {
        Mapper {
            kind,
            weight: 50,
            filter: NsFilter::All,
            label_selector: None,
        }
    }

    pub(crate) fn nodes(list: &[(&str, u16)]) -> Vec<Node> {
        list.iter().map(|&(h, p)| Node::new(h, p, 50, 0)).collect()
    }

    pub(crate) fn obj(ns: &str, service: &str, ports: &[(&str, &[(&str, u16)])]) -> Object {
        Object {
            namespace: ns.into(),
            service: service.into(),
            ports: ports
                .iter()
                .map(|(k, n)| (k.to_string(), nodes(n)))
                .collect(),
        }
    }

    pub(crate) fn key(ns: &str, name: &str) -> ObjectKey {
        (ns.into(), name.into())
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
}
