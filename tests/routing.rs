//! Route matching and upstream resolution through the real proxy.

use weir_testkit::{Backend, TestProxy};

fn get(p: &TestProxy, host: &str, path: &str) -> (u16, String) {
    let r = p
        .client()
        .request("GET", path, &[("Host", host)], b"")
        .expect("request");
    (r.status, r.body)
}

#[test]
fn most_specific_route_wins() {
    let names = ["any", "api", "exact", "wild", "host", "post"];
    let bs: Vec<Backend> = names.iter().map(|n| Backend::start(n)).collect();
    let up = |i: usize| format!("{{nodes: {{\"{}\": 1}}}}", bs[i].addr);
    let p = TestProxy::start(&format!(
        "routes:
  - {{id: any, uri: /*, upstream: {}}}
  - {{id: api, uris: [/api/*, /v2/*], upstream: {}}}
  - {{id: exact, uri: /api/status, upstream: {}}}
  - {{id: wild, uri: /*, host: \"*.example.com\", upstream: {}}}
  - {{id: host, uri: /*, hosts: [shop.example.com], upstream: {}}}
  - {{id: post, uri: /api/*, methods: [POST], priority: 10, upstream: {}}}
",
        up(0),
        up(1),
        up(2),
        up(3),
        up(4),
        up(5)
    ));
    assert_eq!(get(&p, "x.org", "/"), (200, "any".into()));
    assert_eq!(get(&p, "x.org", "/api"), (200, "any".into()));
    assert_eq!(get(&p, "x.org", "/api/users?x=1"), (200, "api".into()));
    assert_eq!(get(&p, "x.org", "/v2/"), (200, "api".into()));
    assert_eq!(get(&p, "x.org", "/api/status"), (200, "exact".into()));
    assert_eq!(
        get(&p, "a.example.com:9080", "/api/status"),
        (200, "wild".into())
    );
    assert_eq!(get(&p, "SHOP.example.com", "/"), (200, "host".into()));
    assert_eq!(get(&p, "example.com", "/"), (200, "any".into()));
    let r = p
        .client()
        .request("POST", "/api/x", &[("Host", "x.org")], b"hi")
        .expect("post");
    assert_eq!(r.body, "post");
}

#[test]
fn own_statuses_404_and_503() {
    let p = TestProxy::start(
        "routes:
  - {id: empty, uri: /empty, upstream: {nodes: []}}
  - {id: none, uri: /none, service_id: s}
services: [{id: s}]
",
    );
    let mut c = p.client();
    let r = c.get("/nothing").expect("req");
    assert_eq!(r.status, 404);
    assert_eq!(r.body, r#"{"error_msg":"404 Route Not Found"}"#);
    assert_eq!(r.header("x-weir-upstream-status"), None);
    assert_eq!(c.get("/empty").expect("req").status, 503);
    assert_eq!(c.get("/none").expect("req").status, 503);
}

#[test]
fn upstream_resolution_order() {
    let (ru, rid, su, sid) = (
        Backend::start("route-inline"),
        Backend::start("route-id"),
        Backend::start("service-inline"),
        Backend::start("service-id"),
    );
    let p = TestProxy::start(&format!(
        "routes:
  - {{id: a, uri: /a, service_id: s1, upstream: {{nodes: {{\"{ru}\": 1}}}}}}
  - {{id: b, uri: /b, service_id: s1, upstream_id: u-route}}
  - {{id: c, uri: /c, service_id: s1}}
  - {{id: d, uri: /d, service_id: s2}}
services:
  - {{id: s1, upstream: {{nodes: {{\"{su}\": 1}}}}}}
  - {{id: s2, upstream_id: u-service}}
upstreams:
  - {{id: u-route, nodes: {{\"{rid}\": 1}}}}
  - {{id: u-service, nodes: {{\"{sid}\": 1}}}}
",
        ru = ru.addr,
        rid = rid.addr,
        su = su.addr,
        sid = sid.addr
    ));
    let mut c = p.client();
    assert_eq!(c.get("/a").expect("a").body, "route-inline");
    assert_eq!(c.get("/b").expect("b").body, "route-id");
    assert_eq!(c.get("/c").expect("c").body, "service-inline");
    assert_eq!(c.get("/d").expect("d").body, "service-id");
}

#[test]
fn swapped_snapshot_is_served_to_new_requests() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let p = TestProxy::start(&format!(
        "routes: [{{id: r, uri: /*, upstream: {{nodes: {{\"{}\": 1}}}}}}]\n",
        a.addr
    ));
    let mut c = p.client();
    assert_eq!(c.get("/").expect("req").body, "a");
    p.apply(&format!(
        "routes: [{{id: r, uri: /*, upstream: {{nodes: {{\"{}\": 1}}}}}}]\n",
        b.addr
    ));
    assert_eq!(c.get("/").expect("req").body, "b");
    p.apply("routes: []\n");
    assert_eq!(c.get("/").expect("req").status, 404);
}
