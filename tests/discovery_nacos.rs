//! The Nacos registry end to end: a fake Nacos speaking the v1 open API (login, instance
//! lists per namespace and group, signatures), the real proxy, real backends. What a user
//! sees: traffic follows registration and deregistration; namespaces and groups are separate
//! services; login and signing work and never show a secret; weights (fractional too) are
//! respected; disabled, unhealthy and invalid instances are skipped; a failing Nacos (500,
//! hang, garbage, stopped, one service failing) keeps the last nodes serving with no failed
//! request; a service a configuration change references is served at once.

use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use weir_testkit::config::{self as conf, Conf, Upstream};
use weir_testkit::fake_nacos::{instance, FakeNacos, Fault};
use weir_testkit::grpc::{GrpcBackend, GrpcClient};
use weir_testkit::{wait_for, Backend, TestProxy};

/// Long enough for a few fetch cycles on a loaded machine.
const SETTLE: Duration = Duration::from_secs(60);

/// One route: `uri` → Nacos service `name` in namespace `ns` and group `group` (`None`: the
/// defaults, by leaving the argument out).
struct Route<'a> {
    uri: &'a str,
    name: &'a str,
    ns: Option<&'a str>,
    group: Option<&'a str>,
}

fn route<'a>(uri: &'a str, name: &'a str) -> Route<'a> {
    Route {
        uri,
        name,
        ns: None,
        group: None,
    }
}

/// A proxy configuration: the control API, `discovery.nacos` with `hosts`, short timeouts,
/// `fetch_interval: 1` unless `extra` sets it, the keys of `extra` (an object), and the routes.
fn config(hosts: &[String], extra: Value, routes: &[Route]) -> Conf {
    let mut nacos = json!({
        "host": hosts,
        "timeout": {"connect": 500, "send": 500, "read": 1000},
    });
    if extra.get("fetch_interval").is_none() {
        nacos["fetch_interval"] = json!(1);
    }
    if let (Some(n), Value::Object(extra)) = (nacos.as_object_mut(), extra) {
        n.extend(extra);
    }
    let mut c = Conf::new().control().discovery("nacos", nacos);
    for (i, r) in routes.iter().enumerate() {
        let mut args = serde_json::Map::new();
        if let Some(ns) = r.ns {
            args.insert("namespace_id".into(), json!(ns));
        }
        if let Some(g) = r.group {
            args.insert("group_name".into(), json!(g));
        }
        let mut upstream = Upstream::discovered("nacos", r.name);
        if !args.is_empty() {
            upstream = upstream.discovery_args(Value::Object(args));
        }
        c = c.route(conf::Route::new(&format!("r{i}"), r.uri).upstream(upstream));
    }
    c
}

/// No extra `discovery.nacos` keys.
fn none() -> Value {
    json!({})
}

fn counts(p: &TestProxy, path: &str, n: usize) -> HashMap<String, usize> {
    p.count_bodies(path, n)
}

fn until_served(p: &TestProxy, path: &str, want: &[&str]) {
    p.wait_served(path, want, SETTLE);
}

fn dump(p: &TestProxy) -> Value {
    let (status, v) = p.control_get("/v1/discovery/nacos/dump");
    assert_eq!(status, 200, "{v}");
    v
}

/// The registry's last error, if any.
fn last_error(p: &TestProxy) -> Option<String> {
    dump(p)["last_error"].as_str().map(str::to_owned)
}

/// Expected counts by body.
fn tally(pairs: &[(&str, usize)]) -> HashMap<String, usize> {
    pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

/// `(port, weight)` of every node the registry holds under catalog key `key`.
fn nodes(p: &TestProxy, key: &str) -> Option<Vec<(u64, u64)>> {
    dump(p)["services"][key].as_array().map(|a| {
        a.iter()
            .map(|n| {
                (
                    n["port"].as_u64().unwrap_or(0),
                    n["weight"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    })
}

/// The shared request stream of the testkit.
use weir_testkit::RequestStream as Stream;

/// Wait until the fake has answered `n` more instance-list requests (fetch cycles ran).
fn cycles(nacos: &FakeNacos, n: usize) {
    let target = nacos.list_requests().len() + n;
    let ok = wait_for(SETTLE, || {
        (nacos.list_requests().len() >= target).then_some(())
    });
    assert!(ok.is_some(), "Nacos was not asked again");
}

const ORDERS: &str = "public/DEFAULT_GROUP/orders";
const DG: &str = "DEFAULT_GROUP";

/// Backends named `names`.
fn backends<const N: usize>(names: [&str; N]) -> [Backend; N] {
    names.map(Backend::start)
}

#[test]
fn traffic_follows_registration_and_deregistration() {
    let [a, b] = backends(["a", "b"]);
    let nacos = FakeNacos::start();
    nacos.set_nodes("orders", &[(a.addr, 1.0)]);
    let p = TestProxy::start(config(
        &[nacos.url()],
        none(),
        &[route("/orders", "orders")],
    ));
    until_served(&p, "/orders", &["a"]);
    nacos.set_nodes("orders", &[(a.addr, 1.0), (b.addr, 1.0)]);
    until_served(&p, "/orders", &["a", "b"]);
    nacos.set_nodes("orders", &[(b.addr, 1.0)]);
    until_served(&p, "/orders", &["b"]);
    // `"hosts": []`: known, without instances.
    nacos.set_nodes("orders", &[]);
    until_served(&p, "/orders", &["503"]);
    assert_eq!(nodes(&p, ORDERS), Some(vec![]));
    nacos.set_nodes("orders", &[(a.addr, 1.0)]);
    until_served(&p, "/orders", &["a"]);
    // Deregistered entirely (Nacos then answers an empty list too).
    nacos.remove_service("public", DG, "orders");
    until_served(&p, "/orders", &["503"]);
    let r = nacos.list_requests().pop().expect("a request");
    assert_eq!(r.method, "GET");
    assert_eq!(r.header("accept"), Some("application/json"));
    let q: Vec<(&str, &str)> = r
        .query
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        q,
        [
            ("healthyOnly", "true"),
            ("serviceName", "orders"),
            ("namespaceId", "public"),
            ("groupName", "DEFAULT_GROUP")
        ]
    );
}

#[test]
fn namespaces_and_groups_are_separate_services() {
    let [a, b, c] = backends(["a", "b", "c"]);
    let nacos = FakeNacos::start();
    nacos.set_service("public", DG, "orders", vec![instance(a.addr, 1.0)]);
    nacos.set_service("dev", DG, "orders", vec![instance(b.addr, 1.0)]);
    nacos.set_service("public", "shop", "orders", vec![instance(c.addr, 1.0)]);
    let routes = [
        route("/default", "orders"),
        Route {
            ns: Some("dev"),
            ..route("/dev", "orders")
        },
        Route {
            group: Some("shop"),
            ..route("/shop", "orders")
        },
        Route {
            ns: Some("prod"),
            ..route("/prod", "orders")
        },
    ];
    let p = TestProxy::start(config(&[nacos.url()], none(), &routes));
    until_served(&p, "/default", &["a"]);
    until_served(&p, "/dev", &["b"]);
    until_served(&p, "/shop", &["c"]);
    until_served(&p, "/prod", &["503"]);
    let services = dump(&p)["services"].clone();
    let keys: BTreeSet<&str> = services
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        BTreeSet::from([
            "dev/DEFAULT_GROUP/orders",
            "prod/DEFAULT_GROUP/orders",
            "public/DEFAULT_GROUP/orders",
            "public/shop/orders"
        ])
    );
    // Each is fetched with its own namespace and group.
    let asked: BTreeSet<(String, String)> = nacos
        .list_requests()
        .iter()
        .map(|r| {
            (
                r.param("namespaceId").unwrap_or("").to_owned(),
                r.param("groupName").unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(asked.len(), 4, "{asked:?}");
    // A change in one leaves the others alone.
    nacos.set_service("dev", DG, "orders", vec![instance(a.addr, 1.0)]);
    until_served(&p, "/dev", &["a"]);
    assert_eq!(counts(&p, "/shop", 6), tally(&[("c", 6)]));
}

#[test]
fn fractional_and_missing_weights() {
    let [a, b, c] = backends(["a", "b", "c"]);
    let nacos = FakeNacos::start();
    let mut unweighted = instance(c.addr, 1.0);
    unweighted.as_object_mut().map(|o| o.remove("weight"));
    nacos.set_service(
        "public",
        DG,
        "orders",
        vec![instance(a.addr, 2.6), instance(b.addr, 0.4), unweighted],
    );
    let p = TestProxy::start(config(
        &[nacos.url()],
        json!({"weight": 2}),
        &[route("/orders", "orders")],
    ));
    until_served(&p, "/orders", &["a", "b", "c"]);
    // 2.6 rounds to 3; 0.4 is positive, so 1, never 0; no weight: the configured 2.
    assert_eq!(
        nodes(&p, ORDERS),
        Some(vec![
            (u64::from(a.port()), 3),
            (u64::from(b.port()), 1),
            (u64::from(c.port()), 2)
        ])
    );
    assert_eq!(
        counts(&p, "/orders", 60),
        tally(&[("a", 30), ("b", 10), ("c", 20)])
    );
}

#[test]
fn disabled_unhealthy_and_invalid_instances_are_skipped() {
    let [a, b, c, d] = backends(["a", "b", "c", "d"]);
    let nacos = FakeNacos::start();
    let mut disabled = instance(b.addr, 1.0);
    disabled["enabled"] = json!(false);
    let mut unhealthy = instance(c.addr, 1.0);
    unhealthy["healthy"] = json!(false);
    let mut bad_ip = instance(c.addr, 1.0);
    bad_ip["ip"] = json!("10.0.0.1:80");
    let mut bad_port = instance(c.addr, 1.0);
    bad_port["port"] = json!(0);
    let mut bad_weight = instance(c.addr, 1.0);
    bad_weight["weight"] = json!(-1);
    nacos.set_service(
        "public",
        DG,
        "orders",
        vec![
            instance(a.addr, 1.0),
            disabled,
            unhealthy,
            bad_ip,
            bad_port,
            bad_weight,
            json!("junk"),
            instance(d.addr, 1.0),
        ],
    );
    // Past the protection threshold Nacos returns unhealthy instances too.
    nacos.set_protect_threshold("public", DG, "orders", 0.9);
    let p = TestProxy::start(config(
        &[nacos.url()],
        none(),
        &[route("/orders", "orders")],
    ));
    until_served(&p, "/orders", &["a", "d"]);
    assert_eq!(
        nodes(&p, ORDERS),
        Some(vec![(u64::from(a.port()), 1), (u64::from(d.port()), 1)])
    );
    assert_eq!(counts(&p, "/orders", 20), tally(&[("a", 10), ("d", 10)]));
}

#[test]
fn login_is_required_the_token_is_reused_and_secrets_never_shown() {
    let a = Backend::start("a");
    let nacos = FakeNacos::start();
    nacos.require_login("nacos", "pa55-w0rd", Duration::from_secs(3600));
    nacos.set_nodes("orders", &[(a.addr, 1.0)]);
    let p = TestProxy::start(config(
        &[nacos.url_with_credentials("nacos", "pa55-w0rd")],
        none(),
        &[route("/orders", "orders")],
    ));
    until_served(&p, "/orders", &["a"]);
    cycles(&nacos, 3);
    // One login, its token on every instance-list request.
    assert_eq!(nacos.logins(), 1);
    let login = nacos
        .requests()
        .into_iter()
        .find(|r| r.path == "/nacos/v1/auth/login")
        .expect("a login");
    assert_eq!(login.method, "POST");
    assert_eq!(login.param("username"), Some("nacos"));
    assert_eq!(login.param("password"), Some("pa55-w0rd"));
    let tokens: BTreeSet<String> = nacos
        .list_requests()
        .iter()
        .map(|r| r.param("accessToken").unwrap_or("none").to_owned())
        .collect();
    assert_eq!(tokens, BTreeSet::from(["token-1-nacos".to_owned()]));
    let d = dump(&p);
    assert_eq!(
        d["config"]["host"],
        json!([format!("http://nacos:******@{}", nacos.addr())])
    );
    // A restarted Nacos forgets its tokens: one 403, a new login, no failed request.
    let s = Stream::start(p.addr, "/orders", None);
    nacos.revoke_tokens();
    let relogged = wait_for(SETTLE, || (nacos.logins() >= 2).then_some(()));
    assert!(
        relogged.is_some(),
        "no new login after the token was refused"
    );
    cycles(&nacos, 2);
    s.finish_clean();
    let text = dump(&p).to_string();
    assert!(!text.contains("pa55") && !text.contains("token-"), "{text}");
}

#[test]
fn an_expired_token_is_renewed() {
    let a = Backend::start("a");
    let nacos = FakeNacos::start();
    nacos.require_login("nacos", "nacos", Duration::from_secs(2));
    nacos.set_nodes("orders", &[(a.addr, 1.0)]);
    let p = TestProxy::start(config(
        &[nacos.url_with_credentials("nacos", "nacos")],
        none(),
        &[route("/orders", "orders")],
    ));
    until_served(&p, "/orders", &["a"]);
    let s = Stream::start(p.addr, "/orders", None);
    let renewed = wait_for(SETTLE, || (nacos.logins() >= 3).then_some(()));
    assert!(renewed.is_some(), "logins: {}", nacos.logins());
    s.finish_clean();
}

#[test]
fn wrong_credentials_serve_nothing_and_do_not_leak() {
    let a = Backend::start("a");
    let nacos = FakeNacos::start();
    nacos.require_login("nacos", "right", Duration::from_secs(3600));
    nacos.set_nodes("orders", &[(a.addr, 1.0)]);
    let p = TestProxy::start(config(
        &[nacos.url_with_credentials("nacos", "wrong-pass")],
        none(),
        &[route("/orders", "orders")],
    ));
    let err = wait_for(SETTLE, || last_error(&p)).expect("the refused login is reported");
    assert!(err.contains("auth/login") && err.contains("403"), "{err}");
    assert!(!err.contains("wrong-pass"), "{err}");
    assert_eq!(counts(&p, "/orders", 3), tally(&[("503", 3)]));
    // Without a token the instance list is never asked for.
    assert!(nacos.list_requests().is_empty());
}

#[test]
fn signed_requests() {
    let a = Backend::start("a");
    let nacos = FakeNacos::start();
    nacos.require_signature("ak-1", "sk-secret");
    nacos.set_nodes("orders", &[(a.addr, 1.0)]);
    let p = TestProxy::start(config(
        &[nacos.url()],
        json!({"access_key": "ak-1", "secret_key": "sk-secret"}),
        &[route("/orders", "orders")],
    ));
    until_served(&p, "/orders", &["a"]);
    let r = nacos.list_requests().pop().expect("a request");
    assert_eq!(r.param("ak"), Some("ak-1"));
    let data = r.param("data").unwrap_or("");
    let (ms, rest) = data.split_once("@@").unwrap_or(("", ""));
    assert!(
        ms.parse::<u64>().is_ok_and(|ms| ms > 1_600_000_000_000),
        "{data}"
    );
    assert_eq!(rest, "DEFAULT_GROUP@@orders");
    assert_eq!(
        r.param("signature"),
        Some(weir_testkit::fake_nacos::signature("sk-secret", data).as_str())
    );
    let d = dump(&p);
    assert_eq!(d["config"]["secret_key"], "******");
    assert!(!d.to_string().contains("sk-secret"));
}

#[test]
fn a_service_referenced_by_a_config_change_is_served_at_once() {
    let [a, b] = backends(["a", "b"]);
    let nacos = FakeNacos::start();
    nacos.set_nodes("orders", &[(a.addr, 1.0)]);
    nacos.set_nodes("users", &[(b.addr, 1.0)]);
    // An hour between cycles: only the at-once fetch can serve the new service.
    let extra = || json!({"fetch_interval": 3600});
    let p = TestProxy::start(config(
        &[nacos.url()],
        extra(),
        &[route("/orders", "orders")],
    ));
    until_served(&p, "/orders", &["a"]);
    until_served(&p, "/users", &["404"]);
    p.apply(config(
        &[nacos.url()],
        extra(),
        &[route("/orders", "orders"), route("/users", "users")],
    ));
    until_served(&p, "/users", &["b"]);
    let asked = |name: &str| {
        nacos
            .list_requests()
            .iter()
            .filter(|r| r.param("serviceName") == Some(name))
            .count()
    };
    assert_eq!((asked("orders"), asked("users")), (1, 1));
}

/// Serve `a`, break Nacos with `fault`, register `b` instead, and check that `a` keeps
/// serving with no failed request until `heal`, after which `b` is served.
fn survives(fault: impl FnOnce(&FakeNacos), heal: impl FnOnce(&FakeNacos)) {
    let [a, b] = backends(["a", "b"]);
    let nacos = FakeNacos::start();
    nacos.set_nodes("orders", &[(a.addr, 1.0)]);
    let p = TestProxy::start(config(
        &[nacos.url()],
        none(),
        &[route("/orders", "orders")],
    ));
    until_served(&p, "/orders", &["a"]);
    let s = Stream::start(p.addr, "/orders", Some("b"));
    s.more(20);
    fault(&nacos);
    nacos.set_nodes("orders", &[(b.addr, 1.0)]);
    let noticed = wait_for(SETTLE, || last_error(&p));
    assert!(noticed.is_some(), "the registry never saw the failure");
    s.more(100);
    assert_eq!(nodes(&p, ORDERS), Some(vec![(u64::from(a.port()), 1)]));
    s.allow();
    heal(&nacos);
    until_served(&p, "/orders", &["b"]);
    s.more(20);
    s.finish_clean();
    assert_eq!(last_error(&p), None, "cleared by the success");
}

#[test]
fn nacos_answering_500_keeps_the_last_nodes() {
    survives(
        |n| n.set_fault(Fault::Status(500)),
        |n| n.set_fault(Fault::None),
    );
}

#[test]
fn nacos_that_hangs_keeps_the_last_nodes() {
    survives(|n| n.set_fault(Fault::Hang), |n| n.set_fault(Fault::None));
}

#[test]
fn nacos_returning_garbage_keeps_the_last_nodes() {
    survives(
        |n| n.set_fault(Fault::Garbage),
        |n| n.set_fault(Fault::None),
    );
}

#[test]
fn a_stopped_nacos_keeps_the_last_nodes_and_is_followed_after_restart() {
    survives(FakeNacos::stop, FakeNacos::restart);
}

#[test]
fn one_failing_service_keeps_its_nodes_while_the_others_update() {
    let [a, b, c, d] = backends(["a", "b", "c", "d"]);
    let nacos = FakeNacos::start();
    nacos.set_nodes("orders", &[(a.addr, 1.0)]);
    nacos.set_nodes("users", &[(c.addr, 1.0)]);
    let p = TestProxy::start(config(
        &[nacos.url()],
        none(),
        &[route("/orders", "orders"), route("/users", "users")],
    ));
    until_served(&p, "/orders", &["a"]);
    until_served(&p, "/users", &["c"]);
    let s = Stream::start(p.addr, "/users", Some("d"));
    nacos.set_service_status("public", DG, "users", Some(500));
    nacos.set_nodes("users", &[(d.addr, 1.0)]);
    nacos.set_nodes("orders", &[(b.addr, 1.0)]);
    until_served(&p, "/orders", &["b"]);
    cycles(&nacos, 4);
    let err = last_error(&p);
    assert!(
        err.as_deref()
            .is_some_and(|e| e.contains("public/DEFAULT_GROUP/users") && e.contains("500")),
        "{err:?}"
    );
    s.allow();
    nacos.set_service_status("public", DG, "users", None);
    until_served(&p, "/users", &["d"]);
    s.finish_clean();
}

#[test]
fn a_dead_host_is_passed_over_in_every_cycle() {
    let a = Backend::start("a");
    let dead = Backend::refused();
    let nacos = FakeNacos::start();
    nacos.set_nodes("orders", &[(a.addr, 1.0)]);
    let p = TestProxy::start(config(
        &[format!("http://{}", dead.addr()), nacos.url()],
        none(),
        &[route("/orders", "orders")],
    ));
    until_served(&p, "/orders", &["a"]);
    let s = Stream::start(p.addr, "/orders", None);
    cycles(&nacos, 4);
    let b = Backend::start("b");
    nacos.set_nodes("orders", &[(b.addr, 1.0)]);
    s.allow();
    until_served(&p, "/orders", &["b"]);
    s.finish_clean();
    assert_eq!(last_error(&p), None);
}

#[test]
fn grpc_upstreams_use_the_grpc_port_of_the_metadata() {
    let web = Backend::start("web");
    let g = GrpcBackend::start("g");
    let nacos = FakeNacos::start();
    let mut i = instance(web.addr, 1.0);
    i["metadata"] = json!({"gRPC_port": g.addr.port().to_string()});
    nacos.set_service("public", DG, "echo", vec![i]);
    let c = config(&[nacos.url()], none(), &[route("/web", "echo")]).route(
        conf::Route::new("grpc", "/weir.test.Echo/*")
            .upstream(Upstream::discovered("nacos", "echo").scheme("grpc")),
    );
    let p = TestProxy::start(c);
    until_served(&p, "/web", &["web"]);
    let client = GrpcClient::connect(p.addr);
    let ok = wait_for(SETTLE, || client.unary("Unary", "hi").ok());
    assert_eq!(ok.as_deref(), Some("g:hi"));
    assert_eq!(
        nodes(&p, "public/DEFAULT_GROUP/echo (grpc)"),
        Some(vec![(u64::from(g.addr.port()), 1)])
    );
}
