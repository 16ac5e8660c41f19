//! Pure parts of the Nacos client: which service an upstream means ([`Target`]), the nodes of
//! an `ns/instance/list` answer, the login answer, and request signing. No I/O here.

use crate::{Node, ServiceRef};
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// The namespace when `discovery_args` has no `namespace_id`.
pub const DEFAULT_NAMESPACE: &str = "public";
/// The group when `discovery_args` has no `group_name`.
pub const DEFAULT_GROUP: &str = "DEFAULT_GROUP";
/// The longest a login token is reused, whatever `tokenTtl` says.
const MAX_TOKEN_TTL_SECS: u64 = 86_400;

/// Nacos's own default token lifetime, for a login answer without `tokenTtl`.
const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(18000);

/// One Nacos service as fetched: namespace, group, name, and whether the upstream speaks
/// gRPC (then an instance's `metadata.gRPC_port` is its port).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    pub namespace: String,
    pub group: String,
    pub name: String,
    pub grpc: bool,
}

impl Target {
    /// The service an upstream names: `service_name` plus the `namespace_id` and
    /// `group_name` arguments.
    pub fn of(s: &ServiceRef) -> Target {
        Target {
            namespace: s.arg("namespace_id", DEFAULT_NAMESPACE).to_owned(),
            group: s.arg("group_name", DEFAULT_GROUP).to_owned(),
            name: s.name.clone(),
            grpc: s.grpc,
        }
    }

    /// The catalog key: `<namespace>/<group>/<name>`, with ` (grpc)` appended for gRPC
    /// upstreams (their ports may differ).
    pub fn key(&self) -> String {
        let mut k = format!("{}/{}/{}", self.namespace, self.group, self.name);
        if self.grpc {
            k.push_str(" (grpc)");
        }
        k
    }
}

#[derive(Deserialize)]
struct Instance {
    ip: Option<String>,
    port: Option<i64>,
    weight: Option<f64>,
    healthy: Option<bool>,
    enabled: Option<bool>,
    metadata: Option<BTreeMap<String, Value>>,
}

/// A Nacos weight as a node weight: rounded to the nearest integer, a positive weight never
/// to 0; `default` when missing. Negative, non-finite or huge weights are invalid.
pub(crate) fn weight(w: Option<f64>, default: u32) -> Result<u32, String> {
    let Some(w) = w else { return Ok(default) };
    if !w.is_finite() || w < 0.0 || w.round() > f64::from(u32::MAX) {
        return Err(format!("invalid weight {w}"));
    }
    if w == 0.0 {
        return Ok(0);
    }
    Ok((w.round() as u32).max(1))
}

/// `metadata.gRPC_port` (a string or a number), if present.
fn grpc_port(meta: &BTreeMap<String, Value>) -> Result<Option<u16>, String> {
    let bad = |v: &Value| format!("invalid metadata.gRPC_port {v}");
    match meta.get("gRPC_port") {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::String(s)) => s.trim().parse::<u16>().map(Some).map_err(|_| bad(v)),
        Some(v @ Value::Number(n)) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .map(Some)
            .ok_or_else(|| bad(v)),
        Some(v) => Err(bad(v)),
    }
}

/// Why an instance is not used: skipped on purpose (`Ok(None)`) or invalid (`Err`).
fn instance_node(v: Value, grpc: bool, default_weight: u32) -> Result<Option<Node>, String> {
    let i: Instance = serde_json::from_value(v).map_err(|e| format!("malformed instance: {e}"))?;
    if i.enabled == Some(false) || i.healthy == Some(false) {
        return Ok(None);
    }
    let host = i.ip.unwrap_or_default();
    let meta = i.metadata.unwrap_or_default();
    let port = match grpc.then(|| grpc_port(&meta)).transpose()?.flatten() {
        Some(p) => p,
        None => {
            let p = i.port.unwrap_or(0);
            u16::try_from(p).map_err(|_| format!("{host}: invalid port {p}"))?
        }
    };
    let mut node = Node::new(host, port, weight(i.weight, default_weight)?, 0);
    node.metadata = meta
        .into_iter()
        .filter_map(|(k, v)| match v {
            Value::String(s) => Some((k, s)),
            _ => None,
        })
        .collect();
    node.check()?;
    Ok(Some(node))
}

/// The nodes of an `ns/instance/list` answer, in answer order: disabled and unhealthy
/// instances left out, invalid ones skipped with a warning. `"hosts": []` is a known service
/// without nodes; a body without a `hosts` array is an error.
pub(crate) fn parse_instances(
    body: &[u8],
    key: &str,
    grpc: bool,
    default_weight: u32,
) -> Result<Vec<Node>, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("instances of {key:?} are not JSON: {e}"))?;
    let Some(Value::Array(hosts)) = v.get("hosts").cloned() else {
        return Err(format!("instances of {key:?}: no \"hosts\" array"));
    };
    let mut nodes = Vec::with_capacity(hosts.len());
    for (i, h) in hosts.into_iter().enumerate() {
        match instance_node(h, grpc, default_weight) {
            Ok(Some(n)) => nodes.push(n),
            Ok(None) => log::debug!("discovery nacos: {key} instance {i} disabled or unhealthy"),
            Err(why) => log::warn!("discovery nacos: {key} instance {i} skipped: {why}"),
        }
    }
    Ok(nodes)
}

/// A login answer: the access token and how long it lives. The token never appears in the
/// error.
pub(crate) fn parse_login(body: &[u8]) -> Result<(String, Duration), String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| "login answer is not JSON".to_owned())?;
    let token = match v.get("accessToken") {
        Some(Value::String(t)) if !t.is_empty() => t.clone(),
        _ => return Err("login answer has no accessToken".into()),
    };
    // Capped: a server cannot make the token outlive a day (nor overflow a deadline).
    let ttl = v
        .get("tokenTtl")
        .and_then(Value::as_u64)
        .map_or(DEFAULT_TOKEN_TTL, |s| {
            Duration::from_secs(s.min(MAX_TOKEN_TTL_SECS))
        });
    Ok((token, ttl))
}

/// The `data` that is signed: `<unix ms>@@<group>@@<service>`.
pub(crate) fn sign_data(unix_ms: u128, group: &str, name: &str) -> String {
    format!("{unix_ms}@@{group}@@{name}")
}

/// `base64(HMAC-SHA1(secret_key, data))`.
pub(crate) fn signature(secret_key: &str, data: &str) -> Result<String, String> {
    let fail = |_| "cannot compute the request signature".to_owned();
    let key = PKey::hmac(secret_key.as_bytes()).map_err(fail)?;
    let mut s = Signer::new(MessageDigest::sha1(), &key).map_err(fail)?;
    s.update(data.as_bytes()).map_err(fail)?;
    Ok(openssl::base64::encode_block(
        &s.sign_to_vec().map_err(fail)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpw(nodes: &[Node]) -> Vec<(String, u16, u32)> {
        nodes
            .iter()
            .map(|n| (n.host.clone(), n.port, n.weight))
            .collect()
    }

    #[test]
    fn targets_and_keys() {
        let mut s = ServiceRef::named("orders");
        let t = Target::of(&s);
        assert_eq!(t.key(), "public/DEFAULT_GROUP/orders");
        s.args.insert("namespace_id".into(), "dev".into());
        s.args.insert("group_name".into(), "shop".into());
        s.grpc = true;
        assert_eq!(Target::of(&s).key(), "dev/shop/orders (grpc)");
    }

    #[test]
    fn weights_round_and_never_drop_to_zero() {
        assert_eq!(weight(None, 100), Ok(100));
        assert_eq!(weight(Some(1.0), 100), Ok(1));
        assert_eq!(weight(Some(2.5), 100), Ok(3));
        assert_eq!(weight(Some(2.4), 100), Ok(2));
        assert_eq!(weight(Some(0.2), 100), Ok(1));
        assert_eq!(weight(Some(0.0), 100), Ok(0));
        assert!(weight(Some(-1.0), 100).is_err());
        assert!(weight(Some(f64::NAN), 100).is_err());
        assert!(weight(Some(1e12), 100).is_err());
    }

    #[test]
    fn maps_the_documented_answer() {
        let body = br#"{"name": "DEFAULT_GROUP@@orders", "groupName": "DEFAULT_GROUP", "clusters": "",
          "cacheMillis": 10000, "hosts": [{"instanceId": "10.0.2.1#9000#DEFAULT#DEFAULT_GROUP@@orders",
          "ip": "10.0.2.1", "port": 9000, "weight": 1.0, "healthy": true, "enabled": true,
          "ephemeral": true, "clusterName": "DEFAULT", "serviceName": "DEFAULT_GROUP@@orders",
          "metadata": {"zone": "a"}}], "lastRefTime": 1700000000000, "checksum": "", "allIPs": false,
          "reachProtectionThreshold": false, "valid": true}"#;
        let nodes = parse_instances(body, "k", false, 100).expect("nodes");
        assert_eq!(hpw(&nodes), [("10.0.2.1".to_owned(), 9000, 1)]);
        assert_eq!(
            nodes[0].metadata,
            BTreeMap::from([("zone".to_owned(), "a".to_owned())])
        );
    }

    #[test]
    fn skips_disabled_unhealthy_and_invalid_instances() {
        let body = br#"{"hosts": [
          {"ip": "10.0.0.1", "port": 80, "weight": 2.6},
          {"ip": "10.0.0.2", "port": 80, "enabled": false},
          {"ip": "10.0.0.3", "port": 80, "healthy": false},
          {"ip": "10.0.0.4", "port": 0},
          {"ip": "10.0.0.5", "port": 70000},
          {"ip": "10.0.0.6", "port": "80"},
          {"ip": "bad host", "port": 80},
          {"port": 80},
          {"ip": "10.0.0.7", "port": 80, "weight": -2},
          "junk", null, 5,
          {"ip": "10.0.0.8", "port": 81, "weight": 0.4},
          {"ip": "10.0.0.9", "port": 82}]}"#;
        let nodes = parse_instances(body, "k", false, 100).expect("nodes");
        assert_eq!(
            hpw(&nodes),
            [
                ("10.0.0.1".to_owned(), 80, 3),
                ("10.0.0.8".to_owned(), 81, 1),
                ("10.0.0.9".to_owned(), 82, 100)
            ]
        );
    }

    #[test]
    fn grpc_upstreams_use_the_grpc_port() {
        let body = br#"{"hosts": [
          {"ip": "10.0.0.1", "port": 80, "metadata": {"gRPC_port": "9090"}},
          {"ip": "10.0.0.2", "port": 80, "metadata": {"gRPC_port": 9091}},
          {"ip": "10.0.0.3", "port": 80},
          {"ip": "10.0.0.4", "port": 80, "metadata": {"gRPC_port": "x"}}]}"#;
        let grpc = parse_instances(body, "k", true, 1).expect("nodes");
        assert_eq!(
            hpw(&grpc),
            [
                ("10.0.0.1".to_owned(), 9090, 1),
                ("10.0.0.2".to_owned(), 9091, 1),
                ("10.0.0.3".to_owned(), 80, 1)
            ]
        );
        let plain = parse_instances(body, "k", false, 1).expect("nodes");
        assert_eq!(plain.iter().map(|n| n.port).collect::<Vec<_>>(), [80; 4]);
    }

    #[test]
    fn empty_and_malformed_answers() {
        assert_eq!(
            parse_instances(br#"{"hosts": []}"#, "k", false, 1).expect("empty"),
            []
        );
        for body in [
            &br#"{"hosts": {}}"#[..],
            b"{}",
            b"[]",
            b"",
            b"<html>",
            b"{\"hosts\": [",
        ] {
            assert!(parse_instances(body, "k", false, 1).is_err(), "{body:?}");
        }
    }

    #[test]
    fn a_huge_token_ttl_is_capped() {
        let body = format!(r#"{{"accessToken": "t", "tokenTtl": {}}}"#, u64::MAX);
        assert_eq!(
            parse_login(body.as_bytes()),
            Ok(("t".to_owned(), Duration::from_secs(86_400)))
        );
    }

    #[test]
    fn login_answers() {
        assert_eq!(
            parse_login(br#"{"accessToken": "tok", "tokenTtl": 60, "globalAdmin": true}"#),
            Ok(("tok".to_owned(), Duration::from_secs(60)))
        );
        assert_eq!(
            parse_login(br#"{"accessToken": "tok"}"#),
            Ok(("tok".to_owned(), Duration::from_secs(18000)))
        );
        let e = parse_login(br#"{"token": "leaked"}"#).expect_err("no accessToken");
        assert!(!e.contains("leaked"));
        assert!(parse_login(b"nope").is_err());
        assert!(parse_login(br#"{"accessToken": ""}"#).is_err());
    }

    #[test]
    fn signs_like_hmac_sha1_base64() {
        let data = sign_data(1700000000000, "DEFAULT_GROUP", "orders");
        assert_eq!(data, "1700000000000@@DEFAULT_GROUP@@orders");
        // RFC 2202 test case 2.
        assert_eq!(
            signature("Jefe", "what do ya want for nothing?").expect("sign"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
    }
}

/// Property tests: whatever a Nacos server (or something posing as one) answers, the
/// parsers return `Ok` or `Err`, never panic, answer in bounded time, and every node they
/// accept is valid. `PROPTEST_CASES` sets the number of cases (256 by default).
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::fuzz::{edits, json, mutate, replace_somewhere, timed};
    use proptest::prelude::*;
    use serde_json::json;

    fn valid_list() -> Value {
        json!({"name": "DEFAULT_GROUP@@orders", "clusters": "", "cacheMillis": 10000,
        "hosts": [
          {"ip": "10.0.0.1", "port": 8080, "weight": 1.0, "healthy": true, "enabled": true,
           "metadata": {"gRPC_port": "9090", "zone": "a"}},
          {"ip": "10.0.0.2", "port": 8081, "weight": 0.4, "healthy": false},
          {"ip": "web-1.shop", "port": 80, "weight": 2.6, "metadata": {"gRPC_port": 9091}}
        ]})
    }

    fn check_all(body: &[u8]) {
        for grpc in [false, true] {
            if let Ok(nodes) = timed("parse_instances", || {
                parse_instances(body, "public/DEFAULT_GROUP/orders", grpc, 1)
            }) {
                for n in &nodes {
                    assert!(n.check().is_ok(), "accepted an invalid node {n:?}");
                }
            }
        }
        if let Ok((token, ttl)) = timed("parse_login", || parse_login(body)) {
            assert!(!token.is_empty());
            assert!(ttl <= Duration::from_secs(MAX_TOKEN_TTL_SECS));
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
            check_all(&mutate(valid_list().to_string().as_bytes(), &e));
            check_all(&mutate(br#"{"accessToken": "t0k3n", "tokenTtl": 18000, "globalAdmin": true}"#, &e));
        }

        #[test]
        fn mutated_structure(pick in any::<usize>(), with in json()) {
            check_all(replace_somewhere(&valid_list(), pick, with).to_string().as_bytes());
        }

        #[test]
        fn weights(w in any::<f64>()) {
            if let Ok(n) = weight(Some(w), 1) {
                prop_assert!(w.is_finite() && w >= 0.0);
                prop_assert!((w == 0.0) == (n == 0));
            }
        }

        /// Any non-empty secret key signs any data (OpenSSL refuses an empty HMAC key: an
        /// error, not a panic).
        #[test]
        fn signatures(key in "\\PC{0,64}", data in "\\PC{0,64}") {
            let r = signature(&key, &data);
            prop_assert!(r.is_ok() || key.is_empty());
        }
    }
}
