use super::*;
use crate::discovery::{ConsulConfig, DiscoveryConfig, SortType};
use serde_json::json;

fn parse(v: Value) -> Result<Upstream, Vec<String>> {
    parse_env(v, &Env::default())
}

fn parse_env(v: Value, env: &Env) -> Result<Upstream, Vec<String>> {
    let mut cx = Cx::default();
    let u = parse_upstream(&v, &Path::root(), &mut cx, env, Placement::Inline);
    if cx.errors.is_empty() {
        u.ok_or_else(Vec::new)
    } else {
        Err(cx.errors.iter().map(|e| e.to_string()).collect())
    }
}

#[test]
fn defaults_of_an_upstream_with_only_nodes() {
    let u = parse(json!({"nodes": {"127.0.0.1:8080": 1}})).unwrap();
    assert_eq!(u.lb, LbType::RoundRobin);
    assert_eq!(u.scheme, Scheme::Http);
    assert_eq!(u.pass_host, PassHost::Pass);
    assert_eq!(
        u.keepalive_pool,
        KeepalivePool {
            size: 320,
            idle_timeout: Duration::from_secs(60),
            requests: 1000
        }
    );
    assert_eq!(u.retries, None, "unset retries means node count - 1");
    assert_eq!(u.retry_timeout, None);
    assert!(u.retry_on_status.is_empty());
    assert_eq!(u.timeout, None);
    assert!(u.checks.is_none());
    assert!(!u.tls.verify);
    assert_eq!(u.hash_on, None);
    assert_eq!(u.outlier_detection, None);
    assert_eq!(u.slow_start, None);
    assert_eq!(u.limits, None);
    assert_eq!(u.healthy_panic_threshold, 0);
    // Nothing of the resilience extensions shows when they are off.
    let v = serde_json::to_value(&u).unwrap();
    for k in [
        "outlier_detection",
        "slow_start",
        "limits",
        "healthy_panic_threshold",
    ] {
        assert!(v.get(k).is_none(), "{k}");
    }
}

#[test]
fn resilience_members_are_read_and_checked_in_place() {
    let u = parse(
        json!({"nodes": {}, "outlier_detection": {}, "slow_start": {"window": 5},
                         "limits": {"max_requests": 10}, "healthy_panic_threshold": 40}),
    )
    .unwrap();
    assert_eq!(u.outlier_detection, Some(OutlierDetection::default()));
    assert_eq!(u.slow_start.map(|s| s.window), Some(Duration::from_secs(5)));
    assert_eq!(u.limits.map(|l| l.max_requests), Some(10));
    assert_eq!(u.healthy_panic_threshold, 40);
    let v = serde_json::to_value(&u).unwrap();
    assert_eq!(v["slow_start"]["window"], json!(5.0));
    assert_eq!(v["healthy_panic_threshold"], json!(40));
    assert_eq!(
        parse(json!({"nodes": {}, "healthy_panic_threshold": -1, "limits": {"max_retry": 1}}))
            .unwrap_err(),
        [
            "limits.max_retry: unknown field",
            "healthy_panic_threshold: must be 0..100, got -1",
        ]
    );
    // slow_start on chash: valid, with a warning at the block.
    let mut cx = Cx::default();
    let v = json!({"type": "chash", "key": "uri", "nodes": {}, "slow_start": {}});
    let p = Path::root().field("upstream");
    let u = parse_upstream(&v, &p, &mut cx, &Env::default(), Placement::Inline).unwrap();
    assert!(cx.errors.is_empty());
    assert_eq!(u.slow_start, Some(SlowStart::default()));
    assert_eq!(cx.warnings.len(), 1);
    assert!(
        cx.warnings[0]
            .to_string()
            .starts_with("upstream.slow_start: ignored: chash"),
        "{}",
        cx.warnings[0]
    );
}

#[test]
fn scheme_sets_default_port() {
    let u =
        parse(json!({"scheme": "https", "nodes": [{"host": "a.example", "weight": 1}]})).unwrap();
    assert_eq!(u.nodes()[0].port, 443);
    assert_eq!(u.nodes()[0].ip, None);
}

#[test]
fn chash_key_rules() {
    assert_eq!(
        parse(json!({"type": "chash", "nodes": {}})).unwrap_err(),
        ["key: required when type is chash"]
    );
    let u = parse(json!({"type": "chash", "hash_on": "consumer", "nodes": {}})).unwrap();
    assert_eq!(u.hash_on, Some(HashOn::Consumer));
    let u = parse(json!({"type": "chash", "key": "arg_user", "nodes": {}})).unwrap();
    assert_eq!(u.hash_on, Some(HashOn::Vars(Var::Arg("user".into()))));
    assert_eq!(
        parse(json!({"type": "chash", "hash_on": "header", "key": "x y", "nodes": {}}))
            .unwrap_err(),
        ["key: must match ^[a-zA-Z0-9-_]+$, got \"x y\""]
    );
    // Ignored on other types.
    assert!(parse(json!({"hash_on": "nope", "key": 5, "nodes": {}})).is_ok());
    assert_eq!(
        parse(json!({"type": "chash", "key": "uri", "hash_balance_factor": 0.5, "nodes": {}}))
            .unwrap_err(),
        ["hash_balance_factor: must be >= 1.0, got 0.5"]
    );
}

#[test]
fn rewrite_needs_upstream_host() {
    assert_eq!(
        parse(json!({"pass_host": "rewrite", "nodes": {}})).unwrap_err(),
        ["upstream_host: required when pass_host is rewrite"]
    );
    let u = parse(json!({"pass_host": "rewrite", "upstream_host": "api.internal", "nodes": {}}))
        .unwrap();
    assert_eq!(u.pass_host, PassHost::Rewrite("api.internal".into()));
}

#[test]
fn nodes_xor_discovery() {
    assert_eq!(
        parse(json!({})).unwrap_err(),
        ["nodes: required (or service_name with discovery_type)"]
    );
    assert_eq!(
        parse(json!({"service_name": "web", "discovery_type": "consul"})).unwrap_err(),
        ["discovery_type: consul is not configured under discovery"]
    );
    let env = Env {
        discovery: DiscoveryConfig {
            consul: Some(ConsulConfig {
                servers: vec![],
                token: crate::cert::Secret::new(""),
                keepalive: true,
                fetch_interval: Duration::from_secs(3),
                weight: 1,
                connect_timeout: Duration::from_secs(2),
                read_timeout: Duration::from_secs(2),
                wait: Duration::from_secs(60),
                sort_type: SortType::Origin,
                skip_services: vec![],
                default_service: None,
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let u = parse_env(
        json!({"service_name": "web", "discovery_type": "consul"}),
        &env,
    )
    .unwrap();
    assert!(matches!(u.targets, Targets::Discovery(_)));
    assert_eq!(
        parse_env(
            json!({"service_name": "web", "discovery_type": "consul", "nodes": {}}),
            &env
        )
        .unwrap_err(),
        ["nodes and service_name/discovery_type are mutually exclusive"]
    );
    assert_eq!(
        parse_env(
            json!({"service_name": "web", "discovery_type": "consul", "discovery_args": {}}),
            &env
        )
        .unwrap_err(),
        ["discovery_args: only allowed with discovery_type nacos"]
    );
}

#[test]
fn enums_and_ranges() {
    assert_eq!(
        parse(json!({"type": "rr", "scheme": "tcp", "nodes": {},
                     "keepalive_pool": {"size": 0}, "retries": -1,
                     "retry_on_status": [404]}))
        .unwrap_err(),
        [
            "type: must be one of roundrobin, chash, least_conn, ewma, got \"rr\"",
            "scheme: must be one of http, https, grpc, grpcs, got \"tcp\"",
            "retries: must be >= 0, got -1",
            "retry_on_status[0]: must be 500..599, got 404",
            "keepalive_pool.size: must be >= 1, got 0",
        ]
    );
}

#[test]
fn tls_alias() {
    let u = parse(
        json!({"scheme": "https", "nodes": {}, "tls": {"verify": true, "client_cert_id": "c1"}}),
    )
    .unwrap();
    assert!(u.tls.verify);
    assert_eq!(u.tls.client_cert, Some(ClientCert::Ref("c1".into())));
    assert_eq!(
        parse(json!({"nodes": {}, "tls_verify": true, "tls": {"verify": false}})).unwrap_err(),
        ["tls.verify: conflicts with tls_verify (the same setting twice)"]
    );
    assert_eq!(
        parse(json!({"nodes": {}, "tls": {"client_cert": "x"}})).unwrap_err(),
        ["tls.client_key: required (client_cert and client_key go together)"]
    );
}

#[test]
fn unknown_fields_are_errors() {
    assert_eq!(
        parse(json!({"nodes": {}, "retires": 2})).unwrap_err(),
        ["retires: unknown field"]
    );
}

mod algorithms {
    use super::*;
    use crate::extensions::{Extensions, Typed};
    use std::sync::Arc;

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Spread {
        spread: u32,
        #[serde(default)]
        seed: u64,
    }

    fn env() -> Env {
        Env {
            ext: Extensions::new()
                .algorithm("spread", Some(Arc::new(Typed::<Spread>::new())))
                .algorithm("any-params", None),
            ..Env::default()
        }
    }

    #[test]
    fn unknown_type_lists_builtins_then_registered_names() {
        let v = json!({"type": "rr", "nodes": {}});
        assert_eq!(
            parse(v.clone()).unwrap_err(),
            [r#"type: must be one of roundrobin, chash, least_conn, ewma, got "rr""#]
        );
        assert_eq!(
            parse_env(v, &env()).unwrap_err(),
            [
                r#"type: must be one of roundrobin, chash, least_conn, ewma, any-params, spread, got "rr""#
            ]
        );
        assert_eq!(
            parse(json!({"type": 3, "nodes": {}})).unwrap_err(),
            ["type: must be one of roundrobin, chash, least_conn, ewma, got 3"]
        );
    }

    #[test]
    fn a_registered_type_takes_its_block_checked_by_its_schema() {
        let u = parse_env(
            json!({"type": "spread", "spread": {"spread": 3}, "nodes": {}}),
            &env(),
        )
        .unwrap();
        assert_eq!(u.lb, LbType::Custom("spread".into()));
        assert_eq!(u.lb.as_str(), "spread");
        assert_eq!(u.lb_params, Some(json!({"spread": 3})));
        assert_eq!(u.algorithm_params(), json!({"spread": 3}));
        assert_eq!(
            parse_env(
                json!({"type": "spread", "spread": {"spread": "x", "sead": 1}, "nodes": {}}),
                &env()
            )
            .unwrap_err(),
            [r#"spread.spread: invalid type: string "x", expected u32"#]
        );
        assert_eq!(
            parse_env(json!({"type": "spread", "nodes": {}}), &env()).unwrap_err(),
            ["spread.spread: missing field"]
        );
        assert_eq!(
            parse_env(json!({"type": "spread", "spread": 3, "nodes": {}}), &env()).unwrap_err(),
            ["spread: must be an object, got 3"]
        );
        // No schema: any object; no block: `{}`.
        let u = parse_env(json!({"type": "any-params", "nodes": {}}), &env()).unwrap();
        assert_eq!(u.algorithm_params(), json!({}));
        // Another algorithm's block is an unknown member, as a built-in's would be.
        assert_eq!(
            parse_env(
                json!({"type": "any-params", "spread": {"spread": 1}, "nodes": {}}),
                &env()
            )
            .unwrap_err(),
            ["spread: unknown field"]
        );
    }

    #[test]
    fn chash_rules_stay_with_chash() {
        // hash_on/key/hash_balance_factor are accepted and ignored on a registered type.
        let u = parse_env(
            json!({"type": "any-params", "hash_on": "bogus", "hash_balance_factor": 0.5, "nodes": {}}),
            &env(),
        )
        .unwrap();
        assert_eq!((u.hash_on, u.hash_balance_factor), (None, None));
        let u = parse(
            json!({"type": "chash", "key": "remote_addr", "hash_balance_factor": 1.5, "nodes": {}}),
        )
        .unwrap();
        assert_eq!(u.lb_params, None);
        assert_eq!(u.algorithm_params(), json!({"hash_balance_factor": 1.5}));
        assert_eq!(
            parse(json!({"nodes": {}})).unwrap().algorithm_params(),
            json!({})
        );
    }

    #[test]
    fn builtin_and_member_names_are_reserved() {
        for n in [
            "chash",
            "roundrobin",
            "nodes",
            "retries",
            "tls",
            "key",
            "outlier_detection",
            "slow_start",
            "limits",
            "healthy_panic_threshold",
        ] {
            assert!(reserved_algorithm_name(n), "{n}");
        }
        assert!(!reserved_algorithm_name("spread"));
        // Registered anyway through Extensions: not accepted as a type.
        let env = Env {
            ext: Extensions::new().algorithm("retries", None),
            ..Env::default()
        };
        assert_eq!(
            parse_env(json!({"type": "retries", "nodes": {}}), &env).unwrap_err(),
            [r#"type: must be one of roundrobin, chash, least_conn, ewma, got "retries""#]
        );
    }
}
