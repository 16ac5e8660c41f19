//! Route matching and upstream resolution through the real proxy.

use weir_testkit::config::{Conf, Route, Service, Upstream};
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
    let up = |i: usize| Upstream::nodes(&[&bs[i]]);
    let p = TestProxy::start(
        Conf::new()
            .route(Route::new("any", "/*").upstream(up(0)))
            .route(Route::uris("api", &["/api/*", "/v2/*"]).upstream(up(1)))
            .route(Route::new("exact", "/api/status").upstream(up(2)))
            .route(
                Route::new("wild", "/*")
                    .host("*.example.com")
                    .upstream(up(3)),
            )
            .route(
                Route::new("host", "/*")
                    .hosts(&["shop.example.com"])
                    .upstream(up(4)),
            )
            .route(
                Route::new("post", "/api/*")
                    .methods(&["POST"])
                    .priority(10)
                    .upstream(up(5)),
            ),
    );
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
        Conf::new()
            .route(Route::new("empty", "/empty").upstream(Upstream::list([])))
            .route(Route::new("none", "/none").service_id("s"))
            .service(Service::new("s")),
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
    let p = TestProxy::start(
        Conf::new()
            .route(
                Route::new("a", "/a")
                    .service_id("s1")
                    .upstream(Upstream::nodes(&[&ru])),
            )
            .route(
                Route::new("b", "/b")
                    .service_id("s1")
                    .upstream_id("u-route"),
            )
            .route(Route::new("c", "/c").service_id("s1"))
            .route(Route::new("d", "/d").service_id("s2"))
            .service(Service::new("s1").upstream(Upstream::nodes(&[&su])))
            .service(Service::new("s2").upstream_id("u-service"))
            .upstream(Upstream::nodes(&[&rid]).id("u-route"))
            .upstream(Upstream::nodes(&[&sid]).id("u-service")),
    );
    let mut c = p.client();
    assert_eq!(c.get("/a").expect("a").body, "route-inline");
    assert_eq!(c.get("/b").expect("b").body, "route-id");
    assert_eq!(c.get("/c").expect("c").body, "service-inline");
    assert_eq!(c.get("/d").expect("d").body, "service-id");
}

#[test]
fn swapped_snapshot_is_served_to_new_requests() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let to = |b: &Backend| Conf::new().route(Route::new("r", "/*").upstream(Upstream::nodes(&[b])));
    let p = TestProxy::start(to(&a));
    let mut c = p.client();
    assert_eq!(c.get("/").expect("req").body, "a");
    p.apply(to(&b));
    assert_eq!(c.get("/").expect("req").body, "b");
    p.apply("routes: []\n");
    assert_eq!(c.get("/").expect("req").status, 404);
}
