//! Every example of this crate, started with a real configuration and sent real requests: what
//! the docs show works.

use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use weir::Weir;
use weir_testkit::config::{Conf, Route, Upstream};
use weir_testkit::{
    reserve_port, wait_for, Backend, Client, Mode, PortReservation, ShutdownTrigger,
};

#[allow(dead_code)]
#[path = "../examples/embed.rs"]
mod embed;

#[allow(dead_code)]
#[path = "../examples/own_proxy.rs"]
mod own_proxy;

#[allow(dead_code)]
#[path = "../examples/custom_discovery.rs"]
mod custom_discovery;

#[allow(dead_code)]
#[path = "../examples/plugin.rs"]
mod plugin;

#[allow(dead_code)]
#[path = "../examples/custom_health_check.rs"]
mod custom_health_check;

const PATIENCE: Duration = Duration::from_secs(15);

/// A configuration listening on a reserved port.
fn conf(port: &PortReservation) -> Conf {
    Conf::new().set(
        "server",
        json!({"listen": [format!("127.0.0.1:{}", port.port)], "threads": 1}),
    )
}

fn addr(port: &PortReservation) -> SocketAddr {
    ([127, 0, 0, 1], port.port).into()
}

/// Run `server` until the returned guard is dropped.
struct Running(ShutdownTrigger, Option<std::thread::JoinHandle<()>>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fire();
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

fn run(server: pingora::server::Server) -> Running {
    let trigger = ShutdownTrigger::default();
    let t = {
        let trigger = trigger.clone();
        std::thread::spawn(move || server.run(trigger.run_args()))
    };
    Running(trigger, Some(t))
}

/// Poll `GET path` on `at` until it answers 200; the response.
fn served(at: SocketAddr, path: &str) -> weir_testkit::Response {
    wait_for(PATIENCE, || {
        Client::new(at).get(path).ok().filter(|r| r.status == 200)
    })
    .unwrap_or_else(|| panic!("GET {path} on {at} never answered 200"))
}

#[test]
fn embed_serves_weir_beside_your_own_service() {
    let a = Backend::start("a");
    let (p, h) = (reserve_port(), reserve_port());
    let yaml = conf(&p)
        .route(Route::new("r", "/*").upstream(Upstream::nodes(&[&a])))
        .to_yaml();
    let weir = Weir::builder().config_yaml(yaml).build().expect("valid");
    let _running = run(embed::server(weir, &addr(&h).to_string()).expect("server"));
    assert_eq!(served(addr(&p), "/x").body, "a");
    assert_eq!(served(addr(&h), "/").body, "hello from my service");
}

#[test]
fn own_proxy_uses_weirs_router_and_balancers() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let (p, own) = (reserve_port(), reserve_port());
    let yaml = conf(&p)
        .route(Route::new("r", "/api/*").upstream(Upstream::nodes(&[&a, &b])))
        .to_yaml();
    let weir = Weir::builder().config_yaml(yaml).build().expect("valid");
    let _running = run(own_proxy::server(
        std::sync::Arc::clone(weir.handle()),
        &addr(&own).to_string(),
    ));
    let first = served(addr(&own), "/api/1");
    assert_eq!(first.header("x-picked-by"), Some("own-proxy"));
    // Weir's round robin over both nodes: the next request goes to the other one.
    let second = Client::new(addr(&own)).get("/api/2").expect("request");
    let mut bodies = [first.body, second.body];
    bodies.sort();
    assert_eq!(bodies, ["a", "b"]);
    // No route: the proxy's own 404.
    let other = Client::new(addr(&own)).get("/other").expect("request");
    assert_eq!(other.status, 404);
}

#[test]
fn a_custom_discovery_registry_serves_its_nodes() {
    let a = Backend::start("a");
    let p = reserve_port();
    let yaml = conf(&p)
        .route(Route::new("r", "/*").upstream(Upstream::discovered("static-env", "web")))
        .to_yaml();
    let services = HashMap::from([("web".to_owned(), vec![a.addr])]);
    let weir =
        custom_discovery::weir(Weir::builder().config_yaml(yaml.clone()), services).expect("valid");
    let _running = run(weir.into_server(None).expect("server"));
    assert_eq!(served(addr(&p), "/").body, "a");
    // The name is valid only because it is registered.
    let unregistered = Weir::builder().config_yaml(yaml).build();
    assert!(matches!(unregistered, Err(weir::Error::Config(_))));
}

#[test]
fn a_plugin_reads_its_configuration_from_the_route() {
    let a = Backend::start("a");
    let p = reserve_port();
    let yaml = conf(&p)
        .route(
            Route::new("r", "/team/*")
                .upstream(Upstream::nodes(&[&a]))
                .plugin("add-header", json!({"name": "X-Team", "value": "payments"})),
        )
        .route(Route::new("plain", "/*").upstream(Upstream::nodes(&[&a])))
        .to_yaml();
    let weir = plugin::with_plugin(Weir::builder().config_yaml(yaml))
        .build()
        .expect("valid");
    let _running = run(weir.into_server(None).expect("server"));
    assert_eq!(
        served(addr(&p), "/team/x").header("x-team"),
        Some("payments")
    );
    assert_eq!(served(addr(&p), "/other").header("x-team"), None);
}

#[test]
fn a_custom_health_check_ejects_a_node_and_brings_it_back() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let p = reserve_port();
    // One wrong reply takes a node out, one right reply brings it back.
    let upstream = Upstream::nodes(&[&a, &b]).active_check(json!({
        "type": "http-ready",
        "healthy": {"interval": 1, "successes": 1},
        "unhealthy": {"interval": 1, "http_failures": 1},
    }));
    let yaml = conf(&p)
        .route(Route::new("r", "/*").upstream(upstream))
        .to_yaml();
    // The name is valid only because it is registered; the error lists what is.
    match Weir::builder().config_yaml(yaml.clone()).build() {
        Err(weir::Error::Config(e)) => {
            let msg = e.joined();
            assert!(msg.contains("upstream.checks.active.type"), "{msg}");
            assert!(
                msg.contains("must be one of http, https, tcp, got \"http-ready\""),
                "{msg}"
            );
        }
        other => panic!("an unregistered type was accepted: {:?}", other.err()),
    }
    let weir = custom_health_check::with_checks(Weir::builder().config_yaml(yaml))
        .build()
        .expect("valid");
    let handle = std::sync::Arc::clone(weir.handle());
    let _running = run(weir.into_server(None).expect("server"));
    let checker = handle.tables().health.get("routes/r").expect("a checker");
    assert_eq!(&*checker.check_type(), "http-ready");
    let b_up = || {
        checker
            .targets()
            .iter()
            .find(|t| t.id.port == b.port())
            .expect("b's target")
            .is_up()
    };
    served(addr(&p), "/");
    // The probes are the custom check's: a bare HTTP/1.0 `GET /ready`, no Host.
    wait_for(PATIENCE, || {
        b.seen()
            .iter()
            .any(|r| r.target == "/ready" && !r.headers.contains_key("host"))
            .then_some(())
    })
    .expect("b probed by the custom check");

    // b answers 503: its next probe is a wrong reply and takes it out; a serves everything.
    b.set_mode(Mode::Status(503));
    wait_for(PATIENCE, || (!b_up()).then_some(())).expect("b ejected");
    for i in 0..6 {
        let r = Client::new(addr(&p))
            .get(&format!("/{i}"))
            .expect("request");
        assert_eq!((r.status, r.body.as_str()), (200, "a"));
    }

    // b answers 200 again: one right reply brings it back, and round robin reaches it.
    b.set_mode(Mode::Ok);
    wait_for(PATIENCE, || b_up().then_some(())).expect("b back");
    wait_for(PATIENCE, || {
        let r = Client::new(addr(&p)).get("/back").ok()?;
        assert_eq!(r.status, 200);
        (r.body == "b").then_some(())
    })
    .expect("traffic reaches b again");
}

#[allow(dead_code)]
#[path = "../examples/custom_algorithm.rs"]
mod custom_algorithm;

#[test]
fn a_custom_algorithm_picks_with_its_parameters() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let dead = Backend::refused();
    let p = reserve_port();
    let primary_standby = |nodes: &[SocketAddr], params: serde_json::Value| {
        Upstream::nodes(nodes)
            .lb("primary-standby")
            .set("primary-standby", params)
    };
    let yaml = conf(&p)
        .route(Route::new("turns", "/turns").upstream(primary_standby(
            &[a.addr, b.addr, c.addr],
            json!({"primaries": 2}),
        )))
        .route(
            Route::new("failover", "/failover").upstream(primary_standby(
                &[dead.addr(), c.addr],
                json!({"primaries": 1}),
            )),
        )
        .to_yaml();
    let weir = custom_algorithm::with_algorithm(Weir::builder().config_yaml(yaml.clone()))
        .build()
        .expect("valid");
    let _running = run(weir.into_server(None).expect("server"));
    // The two primaries take turns; the standby gets nothing while they are up.
    let mut bodies = vec![served(addr(&p), "/turns").body];
    for _ in 0..3 {
        bodies.push(Client::new(addr(&p)).get("/turns").expect("request").body);
    }
    assert_eq!(bodies, ["a", "b", "a", "b"]);
    // The primary refuses connections: the retry goes to the standby.
    for _ in 0..2 {
        assert_eq!(served(addr(&p), "/failover").body, "c");
    }

    // Its parameters are checked when the configuration loads, with their path.
    let bad = conf(&p)
        .upstream(primary_standby(&[a.addr], json!({"primaries": "two"})).set("id", "u1"))
        .to_yaml();
    let Err(weir::Error::Config(e)) =
        custom_algorithm::with_algorithm(Weir::builder().config_yaml(bad)).build()
    else {
        panic!("a bad parameter block was accepted");
    };
    let e = e.to_string();
    assert!(
        e.contains(r#"upstreams[0] (id "u1").primary-standby.primaries (line "#)
            && e.contains(r#"invalid type: string "two", expected a nonzero usize"#),
        "{e}"
    );
    // Without the registration the name is unknown, and the message lists it when registered.
    let Err(weir::Error::Config(e)) = Weir::builder().config_yaml(yaml).build() else {
        panic!("an unregistered type was accepted");
    };
    assert!(
        e.to_string().contains(
            "must be one of roundrobin, chash, least_conn, ewma, got \"primary-standby\""
        ),
        "{e}"
    );
}
