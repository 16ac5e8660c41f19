//! The Consul registry end to end: a fake Consul agent speaking Consul's HTTP API (blocking
//! queries, `X-Consul-Index`, `?passing`, ACL tokens), the real proxy, real backends. What a
//! user sees: traffic follows registration and deregistration; a failing agent (500, hang,
//! garbage, stopped) keeps the last nodes serving with no failed request and its next change
//! is applied once it is back; an index that goes backwards restarts the watch from 0; the
//! token is sent and never shown; a dead first server fails over to the next.

use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use weir_testkit::config::{Conf, Route, Upstream};
use weir_testkit::fake_consul::{critical, instance, FakeConsul, Fault};
use weir_testkit::{wait_for, Backend, TestProxy};

/// Long enough for a few backoff steps (1, 4, 16 s) on a loaded machine.
const SETTLE: Duration = Duration::from_secs(60);

/// A proxy configuration: the control API, `discovery.consul` with `servers`, short
/// timeouts (`wait: 1`) and the keys of `extra` (an object), and one route `/<service>` per
/// service.
fn config(servers: &[String], extra: Value, services: &[&str]) -> Conf {
    let mut consul = json!({
        "servers": servers,
        "timeout": {"connect": 500, "read": 1000, "wait": 1},
    });
    if let (Some(c), Value::Object(extra)) = (consul.as_object_mut(), extra) {
        c.extend(extra);
    }
    let mut conf = Conf::new().control().discovery("consul", consul);
    for (i, s) in services.iter().enumerate() {
        let uri = s.rsplit('/').next().unwrap_or(s);
        conf = conf.route(
            Route::new(&format!("r{i}"), &format!("/{uri}"))
                .upstream(Upstream::discovered("consul", s)),
        );
    }
    conf
}

/// No extra `discovery.consul` keys.
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
    let (status, v) = p.control_get("/v1/discovery/consul/dump");
    assert_eq!(status, 200, "{v}");
    v
}

/// `(host, port, weight)` of every node the registry holds for `service`.
fn nodes(p: &TestProxy, service: &str) -> Vec<(String, u64, u64)> {
    dump(p)["services"][service]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    (
                        n["host"].as_str().unwrap_or("").to_owned(),
                        n["port"].as_u64().unwrap_or(0),
                        n["weight"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The shared request stream of the testkit.
use weir_testkit::RequestStream as Stream;

#[test]
fn traffic_follows_registration_and_deregistration() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let consul = FakeConsul::start();
    consul.set_nodes("web", &[a.addr]);
    consul.set_nodes("api", &[c.addr]);
    let p = TestProxy::start(config(&[consul.url()], none(), &["web", "api"]));
    until_served(&p, "/web", &["a"]);
    until_served(&p, "/api", &["c"]);
    consul.set_nodes("web", &[a.addr, b.addr]);
    until_served(&p, "/web", &["a", "b"]);
    consul.set_nodes("web", &[b.addr]);
    until_served(&p, "/web", &["b"]);
    // Deregistered: that route answers 503, the other still serves.
    consul.remove_service("web");
    until_served(&p, "/web", &["503"]);
    assert_eq!(
        counts(&p, "/api", 10),
        HashMap::from([("c".to_owned(), 10)])
    );
    assert!(dump(&p)["services"].get("web").is_none());
    // A service whose only instance fails its check is gone too.
    consul.set_service("api", vec![critical(instance("api-0", c.addr))]);
    until_served(&p, "/api", &["503"]);
    // And it comes back.
    consul.set_nodes("web", &[a.addr]);
    until_served(&p, "/web", &["a"]);
}

#[test]
fn every_instance_gets_the_configured_weight() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let consul = FakeConsul::start();
    let mut heavy = instance("web-0", a.addr);
    heavy["Service"]["Weights"] = json!({"Passing": 10, "Warning": 1});
    consul.set_service("web", vec![heavy, instance("web-1", b.addr)]);
    let p = TestProxy::start(config(&[consul.url()], json!({"weight": 3}), &["web"]));
    until_served(&p, "/web", &["a", "b"]);
    let ip = "127.0.0.1".to_owned();
    assert_eq!(
        nodes(&p, "web"),
        [
            (ip.clone(), u64::from(a.port()), 3),
            (ip, u64::from(b.port()), 3)
        ]
    );
    // Consul's own Weights are ignored: equal weights, an exact 50/50 round robin.
    let m = counts(&p, "/web", 100);
    assert_eq!(
        m,
        HashMap::from([("a".to_owned(), 50), ("b".to_owned(), 50)])
    );
}

#[test]
fn invalid_entries_are_skipped_and_the_rest_serve() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let consul = FakeConsul::start();
    let mut no_service = instance("web-x", b.addr);
    no_service.as_object_mut().map(|o| o.remove("Service"));
    let mut bad_port = instance("web-y", b.addr);
    bad_port["Service"]["Port"] = json!(70000);
    let mut bad_host = instance("web-z", b.addr);
    bad_host["Service"]["Address"] = json!("not a host");
    bad_host["Node"]["Address"] = json!("");
    // Service.Address empty: the node's address is used.
    let mut node_address = instance("web-2", c.addr);
    node_address["Service"]["Address"] = json!("");
    consul.set_service(
        "web",
        vec![
            instance("web-0", a.addr),
            no_service,
            bad_port,
            bad_host,
            json!("junk"),
            critical(instance("web-1", b.addr)),
            instance("web-0-again", a.addr),
            node_address,
        ],
    );
    let p = TestProxy::start(config(&[consul.url()], none(), &["web"]));
    until_served(&p, "/web", &["a", "c"]);
    let ip = "127.0.0.1".to_owned();
    assert_eq!(
        nodes(&p, "web"),
        [
            (ip.clone(), u64::from(a.port()), 1),
            (ip, u64::from(c.port()), 1)
        ]
    );
    assert_eq!(
        counts(&p, "/web", 40),
        HashMap::from([("a".to_owned(), 20), ("c".to_owned(), 20)])
    );
}

/// Serve `a`, break the agent with `fault`, register `b` instead, and check that `a` keeps
/// serving with no failed request until `heal`, after which `b` is served.
fn survives(fault: impl FnOnce(&FakeConsul), heal: impl FnOnce(&FakeConsul)) {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let consul = FakeConsul::start();
    consul.set_nodes("web", &[a.addr]);
    let p = TestProxy::start(config(&[consul.url()], none(), &["web"]));
    until_served(&p, "/web", &["a"]);
    let s = Stream::start(p.addr, "/web", Some("b"));
    s.more(20);
    fault(&consul);
    consul.set_nodes("web", &[b.addr]);
    let noticed = wait_for(SETTLE, || {
        dump(&p)["last_error"].as_str().map(str::to_owned)
    });
    assert!(noticed.is_some(), "the registry never saw the failure");
    s.more(100);
    assert_eq!(nodes(&p, "web").len(), 1);
    s.allow();
    heal(&consul);
    until_served(&p, "/web", &["b"]);
    s.more(20);
    let (sent, bad) = s.finish();
    assert!(
        bad.is_empty(),
        "{} of {sent} requests failed: {bad:?}",
        bad.len()
    );
    assert!(dump(&p)["last_error"].is_null(), "cleared by the success");
}

#[test]
fn an_agent_answering_500_keeps_the_last_nodes() {
    survives(
        |c| c.set_fault(Fault::Status(500)),
        |c| c.set_fault(Fault::None),
    );
}

#[test]
fn an_agent_that_hangs_keeps_the_last_nodes() {
    survives(|c| c.set_fault(Fault::Hang), |c| c.set_fault(Fault::None));
}

#[test]
fn an_agent_returning_garbage_keeps_the_last_nodes() {
    survives(
        |c| c.set_fault(Fault::Garbage),
        |c| c.set_fault(Fault::None),
    );
}

#[test]
fn a_stopped_agent_keeps_the_last_nodes_and_is_followed_after_restart() {
    survives(FakeConsul::stop, FakeConsul::restart);
}

#[test]
fn an_index_that_goes_backwards_restarts_the_watch_from_zero() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let consul = FakeConsul::start();
    consul.set_index(100);
    consul.set_nodes("web", &[a.addr]);
    let p = TestProxy::start(config(&[consul.url()], none(), &["web"]));
    until_served(&p, "/web", &["a"]);
    // Either blocking query: the first to answer wins and the other may be cancelled
    // before it reaches the agent.
    let watching = |index: &str| {
        consul.requests().iter().any(|r| {
            (r.path == "/v1/catalog/services" || r.path == "/v1/health/state/any")
                && r.param("index") == Some(index)
                && r.param("wait") == Some("1s")
        })
    };
    let at = consul.index().to_string();
    assert!(wait_for(SETTLE, || watching(&at).then_some(())).is_some());
    let s = Stream::start(p.addr, "/web", None);
    consul.clear_requests();
    // A restored snapshot: the index is far lower, and the data changed.
    consul.set_index(5);
    consul.set_nodes("web", &[b.addr]);
    until_served(&p, "/web", &["b"]);
    assert!(
        watching("0"),
        "no blocking query from index 0 after the reset"
    );
    let (sent, bad) = s.finish();
    assert!(
        bad.is_empty(),
        "{} of {sent} requests failed: {bad:?}",
        bad.len()
    );
    // Watching goes on from the new index.
    let now = consul.index().to_string();
    assert!(wait_for(SETTLE, || watching(&now).then_some(())).is_some());
}

#[test]
fn the_token_is_sent_and_never_shown() {
    let a = Backend::start("a");
    let consul = FakeConsul::start();
    consul.require_token(Some("s3cr3t-token"));
    consul.set_nodes("web", &[a.addr]);
    let p = TestProxy::start(config(
        &[consul.url()],
        json!({"token": "s3cr3t-token"}),
        &["web"],
    ));
    until_served(&p, "/web", &["a"]);
    let reqs = consul.requests();
    assert!(reqs.len() >= 3, "{reqs:?}");
    for r in &reqs {
        assert_eq!(r.header("x-consul-token"), Some("s3cr3t-token"), "{r:?}");
    }
    let d = dump(&p);
    assert_eq!(d["config"]["token"], "******");
    // A revoked token: 403, reported without the token; the last nodes keep serving.
    consul.require_token(Some("another"));
    consul.set_nodes("web", &[a.addr]);
    let err = wait_for(SETTLE, || {
        dump(&p)["last_error"].as_str().map(str::to_owned)
    })
    .expect("the 403 is reported");
    assert!(err.contains("403"), "{err}");
    let text = dump(&p).to_string();
    assert!(!text.contains("s3cr3t"), "{text}");
    assert_eq!(
        counts(&p, "/web", 10),
        HashMap::from([("a".to_owned(), 10)])
    );
}

#[test]
fn a_dead_first_server_fails_over_to_the_next() {
    let a = Backend::start("a");
    let dead = Backend::refused();
    let consul = FakeConsul::start();
    consul.set_nodes("web", &[a.addr]);
    let p = TestProxy::start(config(
        &[format!("http://{}", dead.addr()), consul.url()],
        none(),
        &["web"],
    ));
    until_served(&p, "/web", &["a"]);
    assert!(dump(&p)["last_error"].is_null());
    // Stays on the live server.
    let b = Backend::start("b");
    consul.set_nodes("web", &[b.addr]);
    until_served(&p, "/web", &["b"]);
}

#[test]
fn polling_mode_follows_changes_without_blocking_queries() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let consul = FakeConsul::start();
    consul.set_nodes("web", &[a.addr]);
    let p = TestProxy::start(config(
        &[consul.url()],
        json!({"keepalive": false, "fetch_interval": 1}),
        &["web"],
    ));
    until_served(&p, "/web", &["a"]);
    consul.set_nodes("web", &[b.addr]);
    until_served(&p, "/web", &["b"]);
    let reqs = consul.requests();
    assert!(reqs
        .iter()
        .all(|r| r.param("index").is_none() && r.param("wait").is_none()));
    assert!(reqs
        .iter()
        .any(|r| r.path == "/v1/health/service/web" && r.param("passing") == Some("true")));
}

#[test]
fn skipped_services_are_never_fetched_and_default_prefix_is_the_same_service() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let consul = FakeConsul::start();
    consul.set_nodes("web", &[a.addr]);
    consul.set_nodes("vault", &[b.addr]);
    let p = TestProxy::start(config(
        &[consul.url()],
        json!({"skip_services": ["vault"]}),
        &["default/web", "vault"],
    ));
    until_served(&p, "/web", &["a"]);
    until_served(&p, "/vault", &["503"]);
    let fetched: BTreeSet<String> = consul
        .requests()
        .into_iter()
        .filter_map(|r| {
            r.path
                .strip_prefix("/v1/health/service/")
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(fetched, BTreeSet::from(["web".to_owned()]));
}

#[test]
fn the_default_service_serves_unknown_services() {
    let (a, d) = (Backend::start("a"), Backend::start("d"));
    let consul = FakeConsul::start();
    consul.set_nodes("web", &[a.addr]);
    let p = TestProxy::start(config(
        &[consul.url()],
        json!({"default_service": {"host": "127.0.0.1", "port": d.port(), "weight": 1}}),
        &["web", "nothing"],
    ));
    until_served(&p, "/web", &["a"]);
    until_served(&p, "/nothing", &["d"]);
    consul.remove_service("web");
    until_served(&p, "/web", &["d"]);
}
