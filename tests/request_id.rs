//! The `request-id` plugin: a request without the header gets a new UUID v4, sent upstream and
//! returned to the client; a client's own id is kept; `include_in_response: false` keeps it
//! from the client; a bad configuration is refused with its path.

use serde_json::json;
use weir_testkit::config::{Conf, Route, Service, Upstream};
use weir_testkit::{Backend, TestProxy};

fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
        && s.bytes()
            .enumerate()
            .all(|(i, c)| [8, 13, 18, 23].contains(&i) || c.is_ascii_hexdigit())
}

#[test]
fn new_ids_go_upstream_and_back_and_a_clients_id_is_kept() {
    let b = Backend::start("b");
    let p = TestProxy::start(
        Conf::new()
            .route(Route::new("r", "/*").service_id("s"))
            .service(
                Service::new("s")
                    .plugin("request-id", json!({}))
                    .upstream(Upstream::nodes(&[&b])),
            ),
    );
    let mut c = p.client();
    let r = c.get("/").expect("request");
    assert_eq!(r.status, 200);
    let id = r.header("x-request-id").expect("an id").to_owned();
    assert!(is_uuid_v4(&id), "{id}");
    let seen = b.seen();
    assert_eq!(
        seen.last().and_then(|s| s.headers.get("x-request-id")),
        Some(&id)
    );
    // Every request gets its own.
    let again = c.get("/").expect("request");
    assert_ne!(again.header("x-request-id"), Some(id.as_str()));
    // A client's id is passed on and returned as it is.
    let r = c
        .request("GET", "/", &[("X-Request-Id", "client-chosen-17")], b"")
        .expect("request");
    assert_eq!(r.header("x-request-id"), Some("client-chosen-17"));
    let seen = b.seen();
    assert_eq!(
        seen.last()
            .and_then(|s| s.headers.get("x-request-id"))
            .map(String::as_str),
        Some("client-chosen-17")
    );
}

#[test]
fn a_custom_header_and_no_id_in_the_response() {
    let b = Backend::start("b");
    let p = TestProxy::start(
        Conf::new().route(
            Route::new("r", "/*")
                .upstream(Upstream::nodes(&[&b]))
                .plugin(
                    "request-id",
                    json!({"header_name": "X-Trace", "include_in_response": false}),
                ),
        ),
    );
    let r = p.client().get("/").expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-trace"), None);
    let seen = b.seen();
    let sent = seen
        .last()
        .and_then(|s| s.headers.get("x-trace"))
        .expect("sent upstream");
    assert!(is_uuid_v4(sent), "{sent}");
}

#[test]
fn bad_configurations_are_refused_with_their_paths() {
    let conf = |plugin: &str| {
        format!(
            "routes:\n  - id: r\n    uri: /*\n    upstream: {{nodes: {{\"127.0.0.1:1\": 1}}}}\n    plugins:\n      request-id: {plugin}\n"
        )
    };
    let e = weir_config::parse_yaml(&conf("{algorithm: nanoid}")).expect_err("invalid");
    assert_eq!(
        e.to_string(),
        "routes[0] (id \"r\").plugins.request-id.algorithm (line 6, column 20): unknown variant `nanoid`, expected `uuid`"
    );
    let e = weir_config::parse_yaml(&conf("{include_in_respons: true}")).expect_err("invalid");
    assert_eq!(
        e.to_string(),
        "routes[0] (id \"r\").plugins.request-id.include_in_respons (line 6, column 20): unknown field"
    );
}
