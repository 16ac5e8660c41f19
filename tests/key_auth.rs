//! Consumers and the key-auth plugin; chash on the authenticated consumer.

use serde_json::{json, Value};
use weir_testkit::config::{Conf, Consumer, Route, Service, Upstream};
use weir_testkit::{Backend, TestProxy};

/// A route through a service with key-auth; `route_key_auth`: the route's own key-auth
/// settings, if any.
fn proxy(b: &Backend, route_key_auth: Option<Value>) -> TestProxy {
    let mut route = Route::new("r", "/*").service_id("s");
    if let Some(conf) = route_key_auth {
        route = route.plugin("key-auth", conf);
    }
    TestProxy::start(
        Conf::new()
            .route(route)
            .service(
                Service::new("s")
                    .plugin("key-auth", json!({}))
                    .upstream(Upstream::nodes(&[b])),
            )
            .consumer(Consumer::key_auth("alice", "alice-key"))
            .consumer(Consumer::key_auth("bob", "bob-key")),
    )
}

#[test]
fn missing_or_unknown_keys_get_401() {
    let b = Backend::start("b");
    let p = proxy(&b, None);
    let mut c = p.client();
    let r = c.get("/").expect("req");
    assert_eq!(r.status, 401);
    assert_eq!(r.body, r#"{"message":"Missing API key in request"}"#);
    assert_eq!(r.header("www-authenticate"), Some("apikey realm=\"key\""));
    let r = c
        .request("GET", "/", &[("apikey", "nope")], b"")
        .expect("req");
    assert_eq!(r.status, 401);
    assert_eq!(r.body, r#"{"message":"Invalid API key in request"}"#);
    assert_eq!(b.hits(), 0, "rejected requests never reach the upstream");
    let r = c
        .request("GET", "/", &[("apikey", "alice-key")], b"")
        .expect("req");
    assert_eq!(r.status, 200);
    let r = c.get("/x?apikey=bob-key").expect("req");
    assert_eq!(r.status, 200);
    // Credentials are forwarded unless hide_credentials is set.
    assert_eq!(
        b.seen()[0].headers.get("apikey").map(String::as_str),
        Some("alice-key")
    );
}

#[test]
fn hide_credentials_removes_the_key_from_the_upstream_request() {
    let b = Backend::start("b");
    let p = proxy(&b, Some(json!({"hide_credentials": true})));
    let mut c = p.client();
    assert_eq!(
        c.request("GET", "/p", &[("apikey", "alice-key")], b"")
            .expect("req")
            .status,
        200
    );
    assert_eq!(c.get("/q?a=1&apikey=bob-key&z=2").expect("req").status, 200);
    let seen = b.seen();
    assert_eq!(seen[0].headers.get("apikey"), None);
    assert_eq!(seen[1].target, "/q?a=1&z=2");
}

#[test]
fn chash_on_the_consumer() {
    let bs = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let p = TestProxy::start(
        Conf::new()
            .route(
                Route::new("r", "/*")
                    .plugin("key-auth", json!({}))
                    .upstream(Upstream::nodes(&bs).lb("chash").hash_on("consumer")),
            )
            .consumer(Consumer::key_auth("alice", "ka"))
            .consumer(Consumer::key_auth("bob", "kb")),
    );
    let mut c = p.client();
    for key in ["ka", "kb"] {
        let first = c
            .request("GET", "/", &[("apikey", key)], b"")
            .expect("req")
            .body;
        for _ in 0..10 {
            assert_eq!(
                c.request("GET", "/", &[("apikey", key)], b"")
                    .expect("req")
                    .body,
                first
            );
        }
    }
}
