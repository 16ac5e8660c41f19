//! Pure mapping of Consul answers: the `X-Consul-Index` rules, the service list of
//! `/v1/catalog/services`, and the nodes of `/v1/health/service/<name>`. No I/O here.

use super::SortType;
use crate::Node;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

/// What a blocking query's `X-Consul-Index` says about the data it watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IndexMove {
    /// Higher (or the first answer): fetch everything.
    Changed,
    /// Equal to the stored index: the wait expired with nothing new.
    Unchanged,
    /// Lower than the stored index (a restored or re-elected cluster): restart from 0.
    Reset,
}

/// An `X-Consul-Index` value. Consul never sends 0 on purpose; an index of 0 is taken as 1,
/// as Consul advises, so that a buggy answer cannot make blocking queries return at once
/// forever.
pub(crate) fn parse_index(header: Option<&str>) -> Option<u64> {
    header
        .and_then(|h| h.trim().parse::<u64>().ok())
        .map(|i| i.max(1))
}

/// How index `got` compares with the `stored` one.
pub(crate) fn index_move(stored: u64, got: u64) -> IndexMove {
    if got < stored {
        IndexMove::Reset
    } else if got == stored && stored > 0 {
        IndexMove::Unchanged
    } else {
        IndexMove::Changed
    }
}

/// The service names of a `/v1/catalog/services` answer (`{"web": ["v1"], ...}`), in answer
/// order, without those in `skip` and without `consul`.
pub(crate) fn parse_services(body: &[u8], skip: &[String]) -> Result<Vec<String>, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("service list is not JSON: {e}"))?;
    let Value::Object(map) = v else {
        return Err("service list is not a JSON object".into());
    };
    Ok(map
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k != "consul" && !skip.contains(k))
        .collect())
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "Node")]
    node: Option<EntryNode>,
    #[serde(rename = "Service")]
    service: Option<EntryService>,
}

#[derive(Deserialize)]
struct EntryNode {
    #[serde(rename = "Address")]
    address: Option<String>,
}

#[derive(Deserialize)]
struct EntryService {
    #[serde(rename = "Address")]
    address: Option<String>,
    #[serde(rename = "Port")]
    port: Option<i64>,
    #[serde(rename = "Meta")]
    meta: Option<BTreeMap<String, Value>>,
}

/// One health entry as a node: `Service.Address`, else `Node.Address`; `Service.Port`, 80
/// when missing or 0; the configured `weight`; string `Meta` values as metadata.
fn entry_node(v: Value, weight: u32) -> Result<Node, String> {
    let e: Entry = serde_json::from_value(v).map_err(|e| format!("malformed entry: {e}"))?;
    let s = e.service.ok_or("entry without Service")?;
    let host = match s.address.filter(|a| !a.is_empty()) {
        Some(a) => a,
        None => e.node.and_then(|n| n.address).unwrap_or_default(),
    };
    let port = match s.port.unwrap_or(0) {
        0 => 80,
        p => u16::try_from(p).map_err(|_| format!("{host}: invalid port {p}"))?,
    };
    let mut node = Node::new(host, port, weight, 0);
    node.metadata = s
        .meta
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k, s)),
            _ => None,
        })
        .collect();
    node.check()?;
    Ok(node)
}

/// The nodes of a `/v1/health/service/<name>?passing=true` answer: invalid entries skipped
/// with a warning, duplicate `host:port` pairs collapsed (the first stays), then ordered by
/// `sort`. Only a body that is not a JSON array is an error.
pub(crate) fn parse_health(
    body: &[u8],
    service: &str,
    weight: u32,
    sort: SortType,
) -> Result<Vec<Node>, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("instances of {service:?} are not JSON: {e}"))?;
    let Value::Array(entries) = v else {
        return Err(format!("instances of {service:?} are not a JSON array"));
    };
    let mut seen = HashSet::new();
    let mut nodes = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        match entry_node(e, weight) {
            Ok(n) => {
                if seen.insert((n.host.clone(), n.port)) {
                    nodes.push(n);
                }
            }
            Err(why) => {
                log::warn!("discovery consul: service {service:?} entry {i} skipped: {why}")
            }
        }
    }
    sort_nodes(&mut nodes, sort);
    Ok(nodes)
}

/// Order nodes by `sort` (a stable sort: equal keys keep the answer's order).
pub(crate) fn sort_nodes(nodes: &mut [Node], sort: SortType) {
    match sort {
        SortType::Origin => {}
        SortType::HostSort => nodes.sort_by(|a, b| a.host.cmp(&b.host)),
        SortType::PortSort => nodes.sort_by_key(|n| n.port),
        SortType::CombineSort => nodes.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(nodes: &[Node]) -> Vec<(String, u16, u32)> {
        nodes
            .iter()
            .map(|n| (n.host.clone(), n.port, n.weight))
            .collect()
    }

    #[test]
    fn index_rules() {
        assert_eq!(parse_index(Some("42")), Some(42));
        assert_eq!(parse_index(Some(" 7 ")), Some(7));
        assert_eq!(parse_index(Some("0")), Some(1));
        assert_eq!(parse_index(Some("-3")), None);
        assert_eq!(parse_index(Some("x")), None);
        assert_eq!(parse_index(None), None);
        assert_eq!(index_move(0, 1), IndexMove::Changed);
        assert_eq!(index_move(5, 9), IndexMove::Changed);
        assert_eq!(index_move(9, 9), IndexMove::Unchanged);
        assert_eq!(index_move(9, 3), IndexMove::Reset);
    }

    #[test]
    fn service_list_skips_consul_and_configured_names() {
        let body = br#"{"consul": [], "web": ["v1"], "vault": [], "billing": []}"#;
        let skip = vec!["vault".to_owned()];
        assert_eq!(
            parse_services(body, &skip).expect("list"),
            ["web", "billing"]
        );
        assert!(parse_services(b"[]", &skip).is_err());
        assert!(parse_services(b"{\"web\": [", &skip).is_err());
        assert!(parse_services(b"", &skip).is_err());
    }

    #[test]
    fn maps_the_documented_answer() {
        let body = br#"[
          {"Node": {"Node": "n1", "Address": "10.0.0.5"}, "Checks": [],
           "Service": {"ID": "web-1", "Service": "web", "Address": "10.0.1.1", "Port": 8080,
                       "Meta": {"version": "4", "n": 1}, "Weights": {"Passing": 10, "Warning": 1}}},
          {"Node": {"Node": "n2", "Address": "10.0.0.6"}, "Checks": [],
           "Service": {"ID": "web-2", "Service": "web", "Address": "10.0.1.2", "Port": 8080}}]"#;
        let nodes = parse_health(body, "web", 3, SortType::Origin).expect("nodes");
        assert_eq!(
            hp(&nodes),
            [
                ("10.0.1.1".to_owned(), 8080, 3),
                ("10.0.1.2".to_owned(), 8080, 3)
            ]
        );
        assert_eq!(
            nodes[0].metadata,
            BTreeMap::from([("version".to_owned(), "4".to_owned())])
        );
        assert_eq!(nodes[0].priority, 0);
    }

    #[test]
    fn node_address_and_port_80_fallbacks() {
        let body = br#"[
          {"Node": {"Address": "10.0.0.5"}, "Service": {"Address": "", "Port": 0}},
          {"Node": {"Address": "10.0.0.6"}, "Service": {"Port": 9000}},
          {"Node": {"Address": "10.0.0.7"}, "Service": {"Address": "10.0.1.7"}}]"#;
        let nodes = parse_health(body, "web", 1, SortType::Origin).expect("nodes");
        assert_eq!(
            hp(&nodes),
            [
                ("10.0.0.5".to_owned(), 80, 1),
                ("10.0.0.6".to_owned(), 9000, 1),
                ("10.0.1.7".to_owned(), 80, 1)
            ]
        );
    }

    #[test]
    fn invalid_entries_are_skipped_and_duplicates_collapse() {
        let body = br#"[
          {"Node": {"Address": "10.0.0.5"}},
          {"Node": {"Address": "10.0.0.5"}, "Service": null},
          {"Node": {"Address": "10.0.0.5"}, "Service": {"Address": "10.0.1.1", "Port": 70000}},
          {"Node": {"Address": "10.0.0.5"}, "Service": {"Address": "10.0.1.1", "Port": -1}},
          {"Node": {"Address": "10.0.0.5"}, "Service": {"Address": "10.0.1.1", "Port": "80"}},
          {"Node": {"Address": "10.0.0.5"}, "Service": {"Address": "not a host", "Port": 80}},
          {"Node": {}, "Service": {"Port": 80}},
          "garbage", 17, null,
          {"Node": {"Address": "10.0.0.5"}, "Service": {"Address": "10.0.1.1", "Port": 81}},
          {"Node": {"Address": "10.0.0.6"}, "Service": {"Address": "10.0.1.1", "Port": 81}},
          {"Service": {"Address": "10.0.1.2", "Port": 81}}]"#;
        let nodes = parse_health(body, "web", 1, SortType::Origin).expect("nodes");
        assert_eq!(
            hp(&nodes),
            [
                ("10.0.1.1".to_owned(), 81, 1),
                ("10.0.1.2".to_owned(), 81, 1)
            ]
        );
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for body in [&b"{}"[..], b"[", b"", b"null", b"<html>"] {
            assert!(
                parse_health(body, "web", 1, SortType::Origin).is_err(),
                "{body:?}"
            );
        }
        assert_eq!(
            parse_health(b"[]", "web", 1, SortType::Origin).expect("empty"),
            []
        );
    }

    #[test]
    fn sort_types_are_stable() {
        let mk = |h: &str, p: u16, w: u32| Node::new(h, p, w, 0);
        let input = vec![
            mk("10.0.0.2", 80, 1),
            mk("10.0.0.1", 90, 2),
            mk("10.0.0.1", 80, 3),
            mk("10.0.0.2", 70, 4),
        ];
        let weights = |s: SortType| {
            let mut v = input.clone();
            sort_nodes(&mut v, s);
            v.iter().map(|n| n.weight).collect::<Vec<_>>()
        };
        assert_eq!(weights(SortType::Origin), [1, 2, 3, 4]);
        assert_eq!(weights(SortType::HostSort), [2, 3, 1, 4]);
        assert_eq!(weights(SortType::PortSort), [4, 1, 3, 2]);
        assert_eq!(weights(SortType::CombineSort), [3, 2, 4, 1]);
    }
}

/// Property tests: whatever a Consul agent (or something posing as one) answers, the parsers
/// return `Ok` or `Err`, never panic, answer in bounded time, and every node they accept is
/// valid. `PROPTEST_CASES` sets the number of cases (256 by default).
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzz::{edits, json, mutate, replace_somewhere, timed};
    use proptest::prelude::*;
    use serde_json::json;

    fn valid_health() -> Value {
        json!([
            {"Node": {"Node": "n1", "Address": "10.0.0.1"},
             "Service": {"ID": "web-1", "Service": "web", "Address": "10.0.0.2", "Port": 8080,
                         "Meta": {"zone": "a", "n": 1}},
             "Checks": [{"Status": "passing"}]},
            {"Node": {"Address": "10.0.0.3"}, "Service": {"Address": "", "Port": 0}}
        ])
    }

    fn check_all(body: &[u8]) {
        for sort in [
            SortType::Origin,
            SortType::HostSort,
            SortType::PortSort,
            SortType::CombineSort,
        ] {
            if let Ok(nodes) = timed("parse_health", || parse_health(body, "web", 1, sort)) {
                for n in &nodes {
                    assert!(n.check().is_ok(), "accepted an invalid node {n:?}");
                }
            }
        }
        let _ = timed("parse_services", || {
            parse_services(body, &["skip".to_owned()])
        });
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
            check_all(&mutate(valid_health().to_string().as_bytes(), &e));
            check_all(&mutate(br#"{"consul": [], "web": ["v1"], "skip": []}"#, &e));
        }

        #[test]
        fn mutated_structure(pick in any::<usize>(), with in json()) {
            check_all(replace_somewhere(&valid_health(), pick, with).to_string().as_bytes());
        }

        #[test]
        fn index_header(h in "\\PC{0,24}") {
            if let Some(i) = parse_index(Some(&h)) {
                prop_assert!(i >= 1);
            }
        }
    }
}
