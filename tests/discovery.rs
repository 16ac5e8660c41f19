//! Service discovery through the proxy, with a registry of the test's own registered by name
//! (`discovery_type: manual`), exactly as an embedder registers theirs: traffic follows the
//! catalog; unknown services and services without nodes answer 503; staying nodes keep their
//! health across changes, removed ones stop being probed; the default `retries` and the chash
//! ring follow the discovered nodes; the control API dumps what registries hold.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir_discovery::{Feed, Node, Registry};
use weir_testkit::config::{Conf, Route, Upstream};
use weir_testkit::{wait_for, Backend, Client, RefusedPort, TestProxy};

/// A registry whose catalog the test sets. It publishes `initial` when it starts.
struct Manual {
    initial: HashMap<String, Vec<Node>>,
    feed: Mutex<Option<Arc<Feed>>>,
}

impl Manual {
    fn new(initial: &[(&str, Vec<Node>)]) -> Arc<Manual> {
        Arc::new(Manual {
            initial: initial
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            feed: Mutex::new(None),
        })
    }

    /// Replace the whole catalog.
    fn publish(&self, services: &[(&str, Vec<Node>)]) {
        let feed = wait_for(Duration::from_secs(10), || {
            self.feed.lock().ok().and_then(|f| f.clone())
        })
        .expect("the registry was started");
        feed.publish(
            services
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        );
    }
}

impl Manual {
    /// A failed answer.
    fn fail(&self, error: &str) {
        let feed = wait_for(Duration::from_secs(10), || {
            self.feed.lock().ok().and_then(|f| f.clone())
        })
        .expect("the registry was started");
        feed.failed(error);
    }
}

#[async_trait]
impl Registry for Manual {
    async fn run(&self, feed: Arc<Feed>) {
        feed.publish(self.initial.clone());
        if let Ok(mut f) = self.feed.lock() {
            *f = Some(feed);
        }
        std::future::pending::<()>().await;
    }

    fn config_dump(&self) -> serde_json::Value {
        serde_json::json!({"kind": "manual", "token": weir_discovery::MASK})
    }
}

fn node(b: &Backend) -> Node {
    Node::new("127.0.0.1", b.port(), 1, 0)
}

/// A node that refuses connections while the returned port is held.
fn dead_node() -> (RefusedPort, Node) {
    let port = Backend::refused();
    let node = Node::new("127.0.0.1", port.addr().port(), 1, 0);
    (port, node)
}

/// The upstream of service `web` of the `manual` registry.
fn web() -> Upstream {
    Upstream::discovered("manual", "web")
}

/// The control API, and one route to `web` (see [`web`]) as upstream `web`.
fn start(manual: &Arc<Manual>, web: Upstream) -> TestProxy {
    let r: Arc<dyn Registry> = Arc::clone(manual) as Arc<dyn Registry>;
    let conf = Conf::new()
        .control()
        .route(Route::new("r", "/*").upstream_id("web"))
        .upstream(web.id("web"));
    TestProxy::start_with_registries(conf, vec![("manual", r)])
}

/// Bodies of `n` requests.
fn bodies(c: &mut Client, path: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let r = c.get(path).expect("request");
            assert_eq!(r.status, 200, "{r:?}");
            r.body
        })
        .collect()
}

#[test]
fn traffic_follows_the_catalog() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let m = Manual::new(&[("web", vec![node(&a)])]);
    let p = start(&m, web());
    let mut c = p.client();
    // The proxy listens only after the registry's first answer: the first request is served.
    assert_eq!(bodies(&mut c, "/", 3), ["a", "a", "a"]);

    m.publish(&[("web", vec![node(&a), node(&b)])]);
    let both = wait_for(Duration::from_secs(10), || {
        let seen = bodies(&mut c, "/", 4);
        (seen.contains(&"a".to_owned()) && seen.contains(&"b".to_owned())).then_some(())
    });
    assert!(both.is_some(), "a registered node gets traffic");

    m.publish(&[("web", vec![node(&b)])]);
    let only_b = wait_for(Duration::from_secs(10), || {
        (bodies(&mut c, "/", 4) == ["b", "b", "b", "b"]).then_some(())
    });
    assert!(only_b.is_some(), "a deregistered node gets no traffic");

    // The service disappears: 503, as for any service without nodes.
    m.publish(&[]);
    let gone = wait_for(Duration::from_secs(10), || {
        (c.get("/").expect("request").status == 503).then_some(())
    });
    assert!(gone.is_some());
    let r = c.get("/").expect("request");
    assert_eq!(r.body, r#"{"error_msg":"no available node"}"#);
}

#[test]
fn an_unknown_service_is_unavailable() {
    let a = Backend::start("a");
    let m = Manual::new(&[("other", vec![node(&a)])]);
    let p = start(&m, web());
    let r = p.client().get("/").expect("request");
    assert_eq!(
        (r.status, r.body.as_str()),
        (503, r#"{"error_msg":"no available node"}"#)
    );
    assert_eq!(a.hits(), 0);
}

#[test]
fn weights_of_discovered_nodes_are_respected() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let heavy = Node::new("127.0.0.1", a.port(), 3, 0);
    let m = Manual::new(&[("web", vec![heavy, node(&b)])]);
    let p = start(&m, web());
    let seen = bodies(&mut p.client(), "/", 8);
    // Smooth weighted round robin over 3:1.
    assert_eq!(seen, ["a", "a", "b", "a", "a", "a", "b", "a"]);
}

#[test]
fn the_default_retries_follow_the_discovered_count() {
    let a = Backend::start("a");
    let dead: Vec<(RefusedPort, Node)> = (0..3).map(|_| dead_node()).collect();
    let m = Manual::new(&[("web", vec![dead[0].1.clone(), node(&a)])]);
    let p = start(&m, web());
    let mut c = p.client();
    assert_eq!(c.get("/").expect("request").status, 200);
    // Three dead nodes ahead of the live one: only `retries: 3` (the new count - 1) reaches it.
    m.publish(&[(
        "web",
        vec![
            dead[0].1.clone(),
            dead[1].1.clone(),
            dead[2].1.clone(),
            node(&a),
        ],
    )]);
    let applied = wait_for(Duration::from_secs(10), || {
        let snap = p.handle.load();
        (snap.upstreams.get("upstreams/web")?.nodes.len() == 4).then_some(())
    });
    assert!(applied.is_some(), "the change was compiled in");
    for _ in 0..8 {
        assert_eq!(c.get("/").expect("request").status, 200);
    }
}

#[test]
fn the_chash_ring_is_rebuilt_and_moves_only_the_new_nodes_keys() {
    let (a, b, x) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("x"),
    );
    let m = Manual::new(&[("web", vec![node(&a), node(&b)])]);
    let p = start(&m, web().chash("vars", "uri"));
    let mut c = p.client();
    let keys: Vec<String> = (0..60).map(|i| format!("/k{i}")).collect();
    let map = |c: &mut Client| -> Vec<String> {
        keys.iter()
            .map(|k| c.get(k).expect("request").body)
            .collect()
    };
    let before = map(&mut c);
    m.publish(&[("web", vec![node(&a), node(&b), node(&x)])]);
    let after = wait_for(Duration::from_secs(10), || {
        let m = map(&mut c);
        m.contains(&"x".to_owned()).then_some(m)
    })
    .expect("the new node takes keys");
    for (k, (old, new)) in keys.iter().zip(before.iter().zip(&after)) {
        assert!(old == new || new == "x", "{k} moved from {old} to {new}");
    }
}

#[test]
fn discovered_nodes_are_health_checked_and_keep_their_state() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let (_refused, dead) = dead_node();
    let dead_port = dead.port;
    let m = Manual::new(&[("web", vec![node(&a), dead.clone()])]);
    let p = start(
        &m,
        web().active_check(serde_json::json!({
            "type": "tcp",
            "healthy": {"interval": 1, "successes": 1},
            "unhealthy": {"interval": 1, "tcp_failures": 1},
        })),
    );
    let status_of = |port: u16| -> Option<String> {
        let (code, body) = p.control_get("/v1/healthcheck/upstreams/web");
        assert_eq!(code, 200, "{body}");
        body["nodes"]
            .as_array()?
            .iter()
            .find(|n| n["port"] == port)
            .and_then(|n| n["status"].as_str().map(str::to_owned))
    };
    let down = wait_for(Duration::from_secs(15), || {
        (status_of(dead_port).as_deref() == Some("unhealthy")).then_some(())
    });
    assert!(
        down.is_some(),
        "the dead discovered node is probed and marked down"
    );

    // A change that keeps it: it stays down (its state survives), the new node is probed.
    m.publish(&[("web", vec![node(&a), dead.clone(), node(&b)])]);
    let listed = wait_for(Duration::from_secs(10), || status_of(b.port()));
    assert!(listed.is_some(), "the new node is a health target");
    assert_eq!(status_of(dead_port).as_deref(), Some("unhealthy"));
    let mut c = p.client();
    for _ in 0..6 {
        let r = c.get("/").expect("request");
        assert_eq!(r.status, 200);
        assert!(
            r.header("x-weir-upstream-status").is_none(),
            "the down node is skipped"
        );
    }

    // A change that removes it: it is no longer probed or listed.
    m.publish(&[("web", vec![node(&a), node(&b)])]);
    let removed = wait_for(Duration::from_secs(10), || {
        status_of(dead_port).is_none().then_some(())
    });
    assert!(removed.is_some());
}

#[test]
fn the_control_api_dumps_what_registries_hold() {
    let a = Backend::start("a");
    let m = Manual::new(&[("web", vec![node(&a)])]);
    let p = start(&m, web());
    let (code, body) = p.control_get("/v1/discovery/manual/dump");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["services"]["web"],
        serde_json::json!([{"host": "127.0.0.1", "port": a.port(), "weight": 1, "priority": 0}])
    );
    assert!(body["last_update"].as_u64().is_some(), "{body}");
    assert!(body["last_error"].is_null(), "{body}");
    assert_eq!(body["config"]["token"], "******");
    // dns is always there; a registry that is not configured is a 404.
    assert_eq!(p.control_get("/v1/discovery/dns/dump").0, 200);
    let (code, body) = p.control_get("/v1/discovery/consul/dump");
    assert_eq!(code, 404);
    assert_eq!(body["error_msg"], "discovery consul is not configured");
}

#[test]
fn discovery_answers_and_nodes_are_in_the_metrics() {
    let a = Backend::start_on("a", "127.0.0.11:0");
    let b = Backend::start_on("b", "127.0.0.12:0");
    let ip_node = |b: &Backend, ip: &str| Node::new(ip, b.port(), 1, 0);
    let m = Manual::new(&[("web", vec![ip_node(&a, "127.0.0.11")])]);
    let p = start(&m, web());
    let mut c = p.client();
    assert_eq!(bodies(&mut c, "/", 1), ["a"]);
    let s = p.scrape();
    let updates = |s: &weir_testkit::metrics::Scrape, result: &str| {
        s.value(
            "weir_discovery_updates_total",
            &[("type", "manual"), ("result", result)],
        )
    };
    assert_eq!(updates(&s, "success"), Some(1.0));
    assert_eq!(updates(&s, "failure"), Some(0.0));
    assert_eq!(
        s.value(
            "weir_discovery_nodes",
            &[("type", "manual"), ("service", "web")]
        ),
        Some(1.0)
    );

    // The catalog moves to the other node: the new node's series appear, the old one's leave.
    m.publish(&[("web", vec![ip_node(&b, "127.0.0.12")])]);
    let moved = wait_for(Duration::from_secs(10), || {
        (c.get("/").ok()?.body == "b").then_some(())
    });
    assert!(moved.is_some());
    m.fail("registry unreachable");
    let s = wait_for(Duration::from_secs(10), || {
        let s = p.scrape();
        (updates(&s, "failure") == Some(1.0)).then_some(s)
    })
    .expect("the failure is counted");
    assert_eq!(updates(&s, "success"), Some(2.0));
    assert_eq!(
        s.value(
            "weir_discovery_nodes",
            &[("type", "manual"), ("service", "web")]
        ),
        Some(1.0)
    );
    let attempts = |node: &str| {
        s.sum(
            "weir_upstream_attempts_total",
            &[
                ("upstream", "upstreams/web"),
                ("node", node),
                ("outcome", "response"),
            ],
        )
    };
    assert!(attempts("127.0.0.12") >= 1.0);
    assert_eq!(
        s.matching("weir_upstream_attempts_total", &[("node", "127.0.0.11")])
            .count(),
        0,
        "a node the registry removed leaves the output"
    );
}
