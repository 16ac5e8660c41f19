//! What the upstream receives: Host per pass_host, forwarded headers, and timeouts.

use std::time::Duration;
use weir_testkit::config::{Conf, Node, Route, Upstream};
use weir_testkit::{Backend, Mode, TestProxy};

fn last_host(b: &Backend) -> String {
    b.seen()
        .last()
        .and_then(|s| s.headers.get("host").cloned())
        .unwrap_or_default()
}

#[test]
fn pass_host_modes() {
    let b = Backend::start("b");
    let by_name = || Upstream::list([Node::new("localhost", b.port())]);
    let by_ip = || Upstream::nodes(&[&b]);
    let p = TestProxy::start(
        Conf::new()
            .route(Route::new("pass", "/pass").upstream(by_ip()))
            .route(Route::new("node", "/node").upstream(by_name().pass_host("node")))
            .route(Route::new("node-ip", "/node-ip").upstream(by_ip().pass_host("node")))
            .route(
                Route::new("rewrite", "/rewrite").upstream(by_ip().rewrite_host("api.internal")),
            ),
    );
    let mut c = p.client();
    c.request("GET", "/pass", &[("Host", "foo.com:9080")], b"")
        .expect("pass");
    assert_eq!(last_host(&b), "foo.com:9080");
    c.request("GET", "/node", &[("Host", "foo.com")], b"")
        .expect("node");
    assert_eq!(last_host(&b), format!("localhost:{}", b.port()));
    c.request("GET", "/node-ip", &[("Host", "foo.com")], b"")
        .expect("node-ip");
    assert_eq!(last_host(&b), b.addr.to_string());
    c.request("GET", "/rewrite", &[("Host", "foo.com")], b"")
        .expect("rewrite");
    assert_eq!(last_host(&b), "api.internal");
}

#[test]
fn node_host_is_recomputed_for_each_attempt() {
    let b = Backend::start("b");
    // Refuses connections for the whole test (a released free port could be taken meanwhile).
    let dead = Backend::refused();
    let p = TestProxy::start(
        Conf::new().route(
            Route::new("r", "/*").upstream(
                Upstream::list([
                    Node::of(&dead).priority(1),
                    Node::new("localhost", b.port()),
                ])
                .pass_host("node"),
            ),
        ),
    );
    let r = p.client().get("/").expect("req");
    assert_eq!(r.status, 200);
    assert_eq!(last_host(&b), format!("localhost:{}", b.port()));
}

#[test]
fn forwarded_headers_are_set() {
    let b = Backend::start("b");
    let p =
        TestProxy::start(Conf::new().route(Route::new("r", "/*").upstream(Upstream::nodes(&[&b]))));
    p.client()
        .request(
            "GET",
            "/x?y=1",
            &[("Host", "shop.test:8080"), ("X-Forwarded-For", "10.1.1.1")],
            b"",
        )
        .expect("req");
    let seen = b.seen().pop().expect("seen");
    assert_eq!(
        seen.target, "/x?y=1",
        "path and query are forwarded unchanged"
    );
    assert_eq!(
        seen.headers.get("x-forwarded-for").map(String::as_str),
        Some("10.1.1.1, 127.0.0.1")
    );
    assert_eq!(
        seen.headers.get("x-real-ip").map(String::as_str),
        Some("127.0.0.1")
    );
    assert_eq!(
        seen.headers.get("x-forwarded-proto").map(String::as_str),
        Some("http")
    );
    assert_eq!(
        seen.headers.get("x-forwarded-host").map(String::as_str),
        Some("shop.test")
    );
    assert_eq!(
        seen.headers.get("x-forwarded-port").map(String::as_str),
        Some(p.addr.port().to_string().as_str())
    );
}

#[test]
fn route_timeout_replaces_the_upstreams() {
    let slow = Backend::start("slow");
    let p = TestProxy::start(
        Conf::new()
            .route(
                Route::new("short", "/short")
                    .timeout(1.0, 1.0, 0.2)
                    .upstream_id("u"),
            )
            .route(Route::new("default", "/default").upstream_id("u"))
            .upstream(Upstream::nodes(&[&slow]).id("u").timeout(1.0, 1.0, 30.0)),
    );
    let mut c = p.client();
    // The backend keeps /short until released: only the route's 0.2 s can answer it before the
    // client gives up after 10 s (the upstream's own read timeout is 30 s), whatever the load.
    c.timeout = Duration::from_secs(10);
    slow.set_mode(Mode::Hold);
    let r = c
        .get("/short")
        .expect("no answer within 10 s: the route's read timeout did not apply");
    assert_eq!(r.status, 504);
    slow.release();
    // Slower than the route's 0.2 s, well within the upstream's 30 s.
    slow.set_mode(Mode::Delay(Duration::from_millis(600)));
    assert_eq!(c.get("/default").expect("default").status, 200);
}

#[test]
fn request_bodies_reach_the_upstream() {
    let b = Backend::start("b");
    let p =
        TestProxy::start(Conf::new().route(Route::new("r", "/*").upstream(Upstream::nodes(&[&b]))));
    let r = p
        .client()
        .request("POST", "/submit", &[], b"hello body")
        .expect("post");
    assert_eq!(r.status, 200);
    let seen = b.seen().pop().expect("seen");
    assert_eq!(
        (seen.method.as_str(), seen.body.as_slice()),
        ("POST", &b"hello body"[..])
    );
}

mod https {
    use super::*;
    use std::net::IpAddr;
    use weir_testkit::pki::TestCa;

    fn tls_backend(name: &str) -> Backend {
        let ca = TestCa::new("test ca");
        Backend::start_https(
            name,
            &ca,
            &["backend.test", "localhost"],
            &[IpAddr::from([127, 0, 0, 1])],
        )
    }

    #[test]
    fn https_upstream_with_sni_per_pass_host() {
        let b = tls_backend("secure");
        let by_ip = || Upstream::nodes(&[&b]).scheme("https");
        let p = TestProxy::start(
            Conf::new()
                .route(Route::new("pass", "/pass").upstream(by_ip()))
                .route(
                    Route::new("rewrite", "/rewrite")
                        .upstream(by_ip().rewrite_host("backend.test")),
                )
                .route(Route::new("node-ip", "/node-ip").upstream(by_ip().pass_host("node")))
                .route(
                    Route::new("node-name", "/node-name").upstream(
                        Upstream::list([Node::new("localhost", b.port())])
                            .scheme("https")
                            .pass_host("node"),
                    ),
                ),
        );
        let mut c = p.client();
        let sni = |c: &mut weir_testkit::Client, path: &str, host: &str| {
            let r = c.request("GET", path, &[("Host", host)], b"").expect("req");
            assert_eq!((r.status, r.body.as_str()), (200, "secure"), "{path}");
            b.seen().last().and_then(|s| s.sni.clone())
        };
        // pass: the client's host name, port removed.
        assert_eq!(
            sni(&mut c, "/pass", "shop.example.com:9080"),
            Some("shop.example.com".into())
        );
        // An IP literal as host: no SNI.
        assert_eq!(sni(&mut c, "/pass", "127.0.0.1"), None);
        assert_eq!(sni(&mut c, "/rewrite", "x"), Some("backend.test".into()));
        assert_eq!(sni(&mut c, "/node-ip", "x"), None);
        assert_eq!(sni(&mut c, "/node-name", "x"), Some("localhost".into()));
    }
}
