//! Every example of this crate, started with a real configuration and sent real requests: what
//! the docs show works.

use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use weir::Weir;
use weir_testkit::config::{Conf, Route, Upstream};
use weir_testkit::{reserve_port, wait_for, Backend, Client, PortReservation, ShutdownTrigger};

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
