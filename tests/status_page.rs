//! The status page (`GET /ui/` on the control listener) in a real headless Chromium: a live
//! proxy's routes, upstreams and nodes with their health; every health state, ejections,
//! routes without an upstream, rates from successive polls and the disconnected banner
//! against fixture answers; and a page that loads nothing from anywhere else.
//!
//! Chromium must be installed (Debian's `chromium`; CI installs it): without it these tests
//! fail, unless `WEIR_SKIP_BROWSER=1` skips them. Page time is virtual (see
//! `weir_testkit::browser`): the page's 2 s polls run within a fraction of a real second.
//!
//! The docs screenshot (docs/img/status-page.png) is made by the ignored test
//! `screenshot_for_the_docs`: `cargo test --test status_page -- --ignored screenshot`.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use weir_testkit::config::{Conf, Route, Upstream};
use weir_testkit::{wait_for, Backend, Browser, Client, TestProxy};

/// The page, as the control API serves it.
const PAGE: &str = include_str!("../crates/weir-proxy/src/status_page.html");

/// Deadline for health checks to settle (a few 1 s probe intervals); only a failing test
/// reaches it.
const PATIENCE: Duration = Duration::from_secs(15);

// ---- the live proxy ----

#[test]
fn a_live_proxy_s_page_shows_its_route_upstream_and_healthy_and_unhealthy_nodes() {
    let Some(browser) = Browser::for_tests() else {
        return;
    };
    let live = Backend::start("live");
    let dead = Backend::refused();
    let p = TestProxy::start(
        Conf::new()
            .control()
            .route(Route::new("r1", "/*").upstream_id("u1"))
            .upstream(
                Upstream::nodes(&[live.addr, dead.addr()])
                    .id("u1")
                    .active_check(json!({
                        "http_path": "/healthz",
                        "healthy": {"interval": 1},
                        "unhealthy": {"interval": 1},
                    })),
            ),
    );
    let control = p.control.expect("the configuration has a control block");

    // Probes settle: the live node healthy, the dead one unhealthy.
    let mut last = Value::Null;
    let settled = wait_for(PATIENCE, || {
        let (status, body) = p.control_get("/v1/healthcheck/upstreams/u1");
        last = body;
        let of = |port: u16| {
            last["nodes"]
                .as_array()?
                .iter()
                .find(|n| n["port"] == port)
                .map(|n| n["status"].clone())
        };
        (status == 200 && of(live.port())? == "healthy" && of(dead.port())? == "unhealthy")
            .then_some(())
    });
    assert!(
        settled.is_some(),
        "health did not settle within {PATIENCE:?}: {last}"
    );
    let mut client = p.client();
    for i in 0..5 {
        let r = client.get(&format!("/page/{i}")).expect("request");
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
    }
    p.wait_finished(5);

    // The page as served: HTML, the page itself, nothing loaded from elsewhere.
    let served = Client::new(control).get("/ui/").expect("GET /ui/");
    assert_eq!(served.status, 200, "GET /ui/: {}", served.body);
    let ctype = served.header("content-type").unwrap_or_default();
    assert!(
        ctype.starts_with("text/html"),
        "GET /ui/ content-type {ctype:?}"
    );
    assert_eq!(served.body, PAGE, "GET /ui/ is not the status page");
    assert_self_contained(&served.body);

    let dom = browser
        .dump_dom(&format!("http://{control}/ui/"))
        .unwrap_or_else(|e| panic!("the browser failed: {e}"));
    let (_, status) = p.control_get("/v1/status");
    let body = body_tag(&dom);
    assert_eq!(
        attr(body, "data-connection").as_deref(),
        Some("connected"),
        "{body}\n{dom}"
    );
    assert_ne!(attr(body, "data-polls").as_deref(), Some("0"), "{body}");

    // The header shows what /v1/status says.
    for (field, want) in [
        ("hostname", &status["hostname"]),
        ("version", &status["version"]),
    ] {
        let want = want
            .as_str()
            .unwrap_or_else(|| panic!("/v1/status {field}: {status}"));
        assert_eq!(field_text(&dom, field), want, "header {field}");
    }

    let up = element(&dom, r#"data-upstream="upstreams/u1""#)
        .unwrap_or_else(|| panic!("no upstream upstreams/u1 on the page:\n{dom}"));
    let route = element(up, r#"data-route="r1""#)
        .unwrap_or_else(|| panic!("route r1 is not drawn with its upstream:\n{up}"));
    assert!(
        text(route).contains("5 requests"),
        "route r1 should show its 5 requests: {}",
        text(route)
    );
    let status_nodes = status["upstreams"]
        .as_array()
        .and_then(|ups| ups.iter().find(|u| u["key"] == "upstreams/u1"))
        .and_then(|u| u["nodes"].as_array().cloned())
        .unwrap_or_else(|| panic!("/v1/status has no upstreams/u1 nodes: {status}"));
    for (port, health) in [(live.port(), "healthy"), (dead.port(), "unhealthy")] {
        let node = element(up, &format!(r#"data-node="127.0.0.1:{port}""#))
            .unwrap_or_else(|| panic!("node 127.0.0.1:{port} is not on the page:\n{up}"));
        assert_eq!(attr(node, "data-health").as_deref(), Some(health), "{node}");
        assert_eq!(role_text(node, "health"), health, "{node}");
        // Its cumulative count is the one /v1/status gives.
        let json_node = status_nodes
            .iter()
            .find(|n| n["port"] == port)
            .unwrap_or_else(|| panic!("/v1/status has no node on {port}: {status}"));
        let requests = json_node["requests"]
            .as_u64()
            .unwrap_or_else(|| panic!("{json_node}"));
        assert!(
            text(node).contains(&format!("{requests} total")),
            "node {port}: wanted {requests} total: {}",
            text(node)
        );
    }
}

// ---- fixture answers ----

/// 2024-12-01 16:20:00 UTC.
const T0: f64 = 1_733_070_000.0;

/// A node of a fixture answer.
fn node(host: &str, port: u16, health: &str, requests: u64, errors: u64) -> Value {
    json!({
        "host": host, "port": port, "weight": 1, "priority": 0,
        "health": health, "ejected_until": null, "in_flight": 0,
        "requests": requests, "errors": errors, "p99_ms": 42.0,
        "latency": {
            "le": [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000, null],
            "counts": [0, 3, requests.saturating_sub(60), 50, 5, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        },
    })
}

/// The `i`th answer of the fixture: every health state, an ejected node, a node with nothing
/// but a host and port, a route without an upstream and one whose upstream is missing. Between
/// two answers (2 s apart), the healthy node and route `api` get 20 requests, 2 of them errors,
/// all in the (2, 5] ms latency bucket.
fn fixture(i: u64) -> Value {
    let now = T0 + 2.0 * i as f64;
    let mut ejected = node("10.0.0.4", 8080, "unhealthy", 18, 18);
    ejected["ejected_until"] = json!(now + 30.0);
    json!({
        "version": "0.1.0", "hostname": "box1", "uptime_seconds": 12.5 + 2.0 * i as f64, "now": now,
        "config": {"source": "file", "last_reload": {"at": T0 - 10.0, "result": "success"}},
        "routes": [
            {"id": "api", "uris": ["/api/*"], "hosts": ["a.example"], "methods": ["GET", "POST"],
             "service_id": null, "upstream": "upstreams/api",
             "requests": 120 + 20 * i, "errors": 3 + 2 * i, "p99_ms": 12.0},
            {"id": "assets", "uris": ["/assets/*"], "hosts": [], "methods": [], "service_id": "web",
             "upstream": "upstreams/static", "requests": 0, "errors": 0, "p99_ms": null},
            {"id": "legacy", "uris": ["/<b>bold</b>"], "hosts": [], "methods": [], "service_id": null,
             "upstream": null, "requests": 0, "errors": 0, "p99_ms": null},
            {"id": "orphan", "uris": ["/orphan"], "upstream": "upstreams/gone"},
        ],
        "upstreams": [
            {"key": "upstreams/api", "type": "roundrobin", "scheme": "http", "checks": true,
             "requests": 120 + 20 * i, "retries": 2,
             "nodes": [
                 node("10.0.0.1", 8080, "healthy", 100 + 20 * i, 2 + 2 * i),
                 node("10.0.0.2", 8080, "mostly_healthy", 5, 0),
                 node("10.0.0.3", 8080, "mostly_unhealthy", 5, 1),
                 ejected,
             ]},
            {"key": "upstreams/static", "type": "chash", "scheme": "https", "checks": false,
             "requests": 0, "retries": 0,
             "nodes": [node("10.0.1.1", 443, "unchecked", 0, 0), {"host": "10.0.1.2", "port": 443}]},
        ],
    })
}

#[test]
fn the_page_draws_every_health_state_ejections_routes_and_rates_then_shows_a_lost_connection() {
    let Some(browser) = Browser::for_tests() else {
        return;
    };
    // Two answers, then 500s: the page polls at 0, 2, 4, 6 s of its (virtual) time.
    let server = Fixture::start(|n| {
        if n < 2 {
            (200, fixture(n as u64).to_string())
        } else {
            (500, r#"{"error_msg":"boom"}"#.to_owned())
        }
    });
    let dom = browser
        .dump_dom_after(&server.url(), Duration::from_millis(7000))
        .unwrap_or_else(|e| panic!("the browser failed: {e}"));
    assert!(
        server.polls() >= 3,
        "the page polled {} times",
        server.polls()
    );

    // Disconnected, with a visible banner, and the last good answer still drawn.
    let body = body_tag(&dom);
    assert_eq!(
        attr(body, "data-connection").as_deref(),
        Some("disconnected"),
        "{body}"
    );
    let banner = element(&dom, r#"id="banner""#).unwrap_or_else(|| panic!("no banner:\n{dom}"));
    assert!(
        attr(banner, "hidden").is_none(),
        "the banner is hidden: {banner}"
    );
    let said = text(banner);
    assert!(
        said.contains("Disconnected") && said.contains("HTTP 500"),
        "banner: {said}"
    );
    assert!(said.contains("Showing the data of"), "banner: {said}");

    // The header.
    assert_eq!(field_text(&dom, "hostname"), "box1");
    assert_eq!(field_text(&dom, "version"), "0.1.0");
    assert_eq!(field_text(&dom, "uptime"), "14 s");
    assert_eq!(field_text(&dom, "config-source"), "file");
    let reload = field_text(&dom, "last-reload");
    assert!(
        reload.contains("success") && reload.contains("12 s ago"),
        "last reload: {reload}"
    );

    // Every health state: its attribute, its word, its colour class.
    let api = element(&dom, r#"data-upstream="upstreams/api""#)
        .unwrap_or_else(|| panic!("no upstreams/api:\n{dom}"));
    let stat = element(&dom, r#"data-upstream="upstreams/static""#)
        .unwrap_or_else(|| panic!("no upstreams/static:\n{dom}"));
    for (up, name, health, class) in [
        (api, "10.0.0.1:8080", "healthy", "h-ok"),
        (api, "10.0.0.2:8080", "mostly_healthy", "h-warn"),
        (api, "10.0.0.3:8080", "mostly_unhealthy", "h-warn2"),
        (api, "10.0.0.4:8080", "unhealthy", "h-bad"),
        (stat, "10.0.1.1:443", "unchecked", "h-none"),
        (stat, "10.0.1.2:443", "unknown", "h-none"),
    ] {
        let node = element(up, &format!(r#"data-node="{name}""#))
            .unwrap_or_else(|| panic!("node {name} is not in its upstream:\n{up}"));
        assert_eq!(attr(node, "data-health").as_deref(), Some(health), "{node}");
        assert_eq!(role_text(node, "health"), health, "{node}");
        let classes = attr(node, "class").unwrap_or_default();
        assert!(
            classes.split(' ').any(|c| c == class),
            "{name}: class {classes:?}, wanted {class}"
        );
        let ejected = element(node, r#"data-role="ejected""#).map(text);
        if name == "10.0.0.4:8080" {
            let ejected = ejected.unwrap_or_else(|| panic!("ejection not shown: {node}"));
            assert!(
                ejected.starts_with("ejected until ") && ejected.ends_with("(in 30 s)"),
                "{ejected}"
            );
        } else {
            assert_eq!(ejected, None, "{name} is not ejected");
        }
    }

    // Rates over the window between the two answers, p99 from the bucket increases: 20
    // requests in 2 s, 2 errors, all in (2, 5] ms (interpolated: 2 + 3 * 19.8 / 20 = 4.97).
    let healthy = element(api, r#"data-node="10.0.0.1:8080""#).unwrap_or_default();
    assert_eq!(role_text(healthy, "rate"), "10", "{healthy}");
    assert_eq!(role_text(healthy, "errors"), "10 %", "{healthy}");
    assert_eq!(role_text(healthy, "p99"), "5.0 ms", "{healthy}");
    assert!(text(healthy).contains("120 total"), "{}", text(healthy));
    // No traffic in the window: 0 req/s, no error share, p99 since start (italic).
    let idle = element(api, r#"data-node="10.0.0.2:8080""#).unwrap_or_default();
    assert_eq!(role_text(idle, "rate"), "0", "{idle}");
    assert_eq!(role_text(idle, "errors"), "–", "{idle}");
    assert_eq!(role_text(idle, "p99"), "42 ms", "{idle}");
    assert_eq!(
        element(idle, r#"data-role="p99""#)
            .and_then(|e| attr(e, "class"))
            .as_deref(),
        Some("cum"),
        "{idle}"
    );

    // Routes with their upstreams; those without one on their own, with why.
    let route = element(api, r#"data-route="api""#)
        .unwrap_or_else(|| panic!("route api is not with upstreams/api:\n{api}"));
    assert_eq!(role_text(route, "rate"), "10", "{route}");
    assert_eq!(role_text(route, "errors"), "10 %", "{route}");
    assert!(text(route).contains("a.example"), "{}", text(route));
    assert!(
        element(stat, r#"data-route="assets""#).is_some(),
        "route assets:\n{stat}"
    );
    let lonely = element(&dom, r#"data-role="routes-without-upstream""#)
        .unwrap_or_else(|| panic!("no section for routes without an upstream:\n{dom}"));
    let legacy = element(lonely, r#"data-route="legacy""#)
        .unwrap_or_else(|| panic!("route legacy (upstream null):\n{lonely}"));
    assert_eq!(role_text(legacy, "note"), "no upstream");
    let orphan = element(lonely, r#"data-route="orphan""#)
        .unwrap_or_else(|| panic!("route orphan (missing upstream):\n{lonely}"));
    assert_eq!(
        role_text(orphan, "note"),
        "upstream upstreams/gone is not in the status"
    );

    // Strings are text, never markup.
    assert!(
        !dom.contains("<b>bold</b>"),
        "a uri became markup:\n{legacy}"
    );
    assert!(text(legacy).contains("/<b>bold</b>"), "{}", text(legacy));
}

#[test]
fn the_first_poll_shows_since_start_p99_and_no_rates_and_a_failure_after_it_the_banner() {
    let Some(browser) = Browser::for_tests() else {
        return;
    };
    // One answer, then 500s: polls at 0 and 2 s of page time.
    let server = Fixture::start(|n| {
        if n == 0 {
            (200, fixture(0).to_string())
        } else {
            (500, r#"{"error_msg":"boom"}"#.to_owned())
        }
    });
    let dom = browser
        .dump_dom_after(&server.url(), Duration::from_millis(3000))
        .unwrap_or_else(|e| panic!("the browser failed: {e}"));
    assert_eq!(server.polls(), 2, "the page should have polled twice");
    let body = body_tag(&dom);
    assert_eq!(
        attr(body, "data-connection").as_deref(),
        Some("disconnected"),
        "{body}"
    );
    assert_eq!(attr(body, "data-polls").as_deref(), Some("1"), "{body}");
    let banner = element(&dom, r#"id="banner""#).unwrap_or_default();
    assert!(
        attr(banner, "hidden").is_none(),
        "the banner is hidden: {banner}"
    );
    assert!(text(banner).contains("Disconnected"), "{banner}");

    let node = element(&dom, r#"data-node="10.0.0.1:8080""#)
        .unwrap_or_else(|| panic!("the first answer's nodes are gone:\n{dom}"));
    assert_eq!(role_text(node, "rate"), "–", "{node}");
    assert_eq!(role_text(node, "errors"), "–", "{node}");
    assert_eq!(role_text(node, "p99"), "42 ms", "{node}");
    let route = element(&dom, r#"data-route="api""#).unwrap_or_default();
    assert_eq!(role_text(route, "rate"), "–", "{route}");
    assert_eq!(role_text(route, "p99"), "12 ms", "{route}");
    let total = element(&dom, r#"data-role="total-rate""#).map(text);
    assert_eq!(total.as_deref(), Some("– req/s"));
}

#[test]
fn the_page_loads_nothing_from_anywhere_else() {
    assert_self_contained(PAGE);
}

/// The page references no resource outside itself: no URL at all, every `src`/`href` a
/// `data:` URL or a fragment, no CSS `url()` or `@import`, and a Content-Security-Policy that
/// lets it load nothing and connect only to its own origin.
fn assert_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    for bad in ["http://", "https://", "<script src", "@import", "url("] {
        assert!(!lower.contains(bad), "the page contains {bad:?}");
    }
    for name in ["src=", "href="] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(name) {
            let at = from + i + name.len();
            let value = lower[at..].trim_start_matches(['"', '\'']);
            assert!(
                value.starts_with("data:") || value.starts_with('#'),
                "the page has {name}{}",
                &html[at..(at + 40).min(html.len())]
            );
            from = at;
        }
    }
    assert!(
        lower.contains("content-security-policy") && lower.contains("default-src 'none'"),
        "the page has no Content-Security-Policy"
    );
}

// ---- the docs screenshot ----

/// Realistic answers for the screenshot: three upstreams, six nodes, traffic varying over
/// time, a node that fails and is ejected, a route without an upstream.
fn demo(i: u64) -> Value {
    let t0 = 1_764_600_000.0;
    let now = t0 + 2.0 * i as f64;
    // Per-node: (host, port, base rate, error share, latency shape, phase).
    struct N {
        host: &'static str,
        port: u16,
        rate: f64,
        err: f64,
        shape: [f64; 16],
        phase: f64,
    }
    const FAST: [f64; 16] = [
        0.03, 0.17, 0.45, 0.28, 0.062, 0.006, 0.002, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    ];
    const SLOW: [f64; 16] = [
        0.0, 0.01, 0.06, 0.25, 0.42, 0.22, 0.035, 0.005, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0,
    ];
    let rate_at =
        |n: &N, j: f64| n.rate * (1.0 + 0.25 * (j * 0.45 + n.phase).sin() + 0.1 * (j * 1.3).cos());
    // Cumulative requests of a node after poll `i` (traffic since start plus every poll's).
    let total = |n: &N, cut: Option<u64>| {
        let mut sum = n.rate * 40_000.0;
        for j in 0..=i {
            if cut.is_some_and(|c| j >= c) {
                continue;
            }
            sum += 2.0 * rate_at(n, j as f64);
        }
        sum.round() as u64
    };
    let draw = |n: &N,
                health: &str,
                cut: Option<u64>,
                extra_err: u64,
                in_flight: u64,
                ejected: Option<f64>| {
        let req = total(n, cut);
        let counts: Vec<u64> = n
            .shape
            .iter()
            .map(|s| (s * req as f64).round() as u64)
            .collect();
        let mut cum = 0.0;
        let mut p99 = 0.0;
        let le = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0];
        for (k, s) in n.shape.iter().enumerate().take(le.len()) {
            if cum + s >= 0.99 {
                let lo = if k == 0 { 0.0 } else { le[k - 1] };
                p99 = lo + (le[k] - lo) * (0.99 - cum) / s;
                break;
            }
            cum += s;
        }
        json!({
            "host": n.host, "port": n.port, "weight": 1, "priority": 0, "health": health,
            "ejected_until": ejected, "in_flight": in_flight,
            "requests": req, "errors": (req as f64 * n.err).round() as u64 + extra_err,
            "p99_ms": (p99 * 10.0_f64).round() / 10.0,
            "latency": {"le": [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000, null], "counts": counts},
        })
    };
    let api = [
        N {
            host: "10.0.1.11",
            port: 8080,
            rate: 118.0,
            err: 0.001,
            shape: FAST,
            phase: 0.0,
        },
        N {
            host: "10.0.1.12",
            port: 8080,
            rate: 121.0,
            err: 0.001,
            shape: FAST,
            phase: 0.7,
        },
        N {
            host: "10.0.1.13",
            port: 8080,
            rate: 64.0,
            err: 0.02,
            shape: SLOW,
            phase: 1.9,
        },
    ];
    let pay = [
        N {
            host: "10.0.2.21",
            port: 8443,
            rate: 22.0,
            err: 0.0,
            shape: SLOW,
            phase: 2.4,
        },
        N {
            host: "10.0.2.22",
            port: 8443,
            rate: 21.0,
            err: 0.3,
            shape: SLOW,
            phase: 0.3,
        },
    ];
    let stat = N {
        host: "10.0.3.31",
        port: 80,
        rate: 310.0,
        err: 0.0,
        shape: FAST,
        phase: 1.1,
    };
    // The second payments node fails from poll 18 and is ejected at 22.
    let failing = 18;
    let cut = 22;
    let spike = if i >= failing {
        14 * (i.min(cut) - failing + 1)
    } else {
        0
    };
    let pay_b_health = if i >= cut {
        "unhealthy"
    } else if i >= failing {
        "mostly_unhealthy"
    } else {
        "healthy"
    };
    let ejected = (i >= cut).then_some(t0 + 2.0 * cut as f64 + 30.0);
    let api_nodes: Vec<Value> = [
        (&api[0], "healthy", 1),
        (&api[1], "healthy", 2),
        (&api[2], "mostly_healthy", 4),
    ]
    .iter()
    .map(|(n, h, f)| draw(n, h, None, 0, *f, None))
    .collect();
    let pay_nodes = vec![
        draw(&pay[0], "healthy", None, 0, 1, None),
        draw(&pay[1], pay_b_health, Some(cut), spike, 0, ejected),
    ];
    let stat_nodes = vec![draw(&stat, "unchecked", None, 0, 3, None)];
    let sum = |nodes: &[Value], f: &str| {
        nodes
            .iter()
            .map(|n| n[f].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    json!({
        "version": "0.1.0", "hostname": "edge-fra-1", "uptime_seconds": 273_600.0 + 2.0 * i as f64, "now": now,
        "config": {"source": "etcd", "last_reload": {"at": t0 - 1_800.0, "result": "success"}},
        "routes": [
            {"id": "api", "uris": ["/api/*"], "hosts": ["api.example.com"], "methods": [], "service_id": null,
             "upstream": "upstreams/api", "requests": sum(&api_nodes, "requests"), "errors": sum(&api_nodes, "errors"), "p99_ms": 41.0},
            {"id": "checkout", "uris": ["/checkout/*"], "hosts": ["shop.example.com"], "methods": ["POST"], "service_id": "shop",
             "upstream": "upstreams/payments", "requests": sum(&pay_nodes, "requests"), "errors": sum(&pay_nodes, "errors"), "p99_ms": 88.0},
            {"id": "static", "uris": ["/static/*", "/favicon.ico"], "hosts": [], "methods": ["GET", "HEAD"], "service_id": null,
             "upstream": "routes/static", "requests": sum(&stat_nodes, "requests"), "errors": 0, "p99_ms": 19.5},
            {"id": "old-admin", "uris": ["/admin/*"], "hosts": [], "methods": [], "service_id": null,
             "upstream": null, "requests": 1_204, "errors": 0, "p99_ms": null},
        ],
        "upstreams": [
            {"key": "upstreams/api", "type": "roundrobin", "scheme": "http", "checks": true,
             "requests": sum(&api_nodes, "requests"), "retries": 40 + i, "nodes": api_nodes},
            {"key": "upstreams/payments", "type": "least_conn", "scheme": "https", "checks": true,
             "requests": sum(&pay_nodes, "requests"), "retries": 12 + spike, "nodes": pay_nodes},
            {"key": "routes/static", "type": "roundrobin", "scheme": "http", "checks": false,
             "requests": sum(&stat_nodes, "requests"), "retries": 0, "nodes": stat_nodes},
        ],
    })
}

/// Writes docs/img/status-page.png from [`demo`]'s answers over a minute of page time.
#[test]
#[ignore = "writes docs/img/status-page.png; run with --ignored"]
fn screenshot_for_the_docs() {
    let Some(browser) = Browser::for_tests() else {
        return;
    };
    let server = Fixture::start(|n| (200, demo(n as u64).to_string()));
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img/status-page.png");
    std::fs::create_dir_all(path.parent().unwrap_or(&path)).expect("create docs/img");
    browser
        .screenshot_with(&server.url(), &path, (1200, 890), Duration::from_secs(61))
        .unwrap_or_else(|e| panic!("the browser failed: {e}"));
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 0 && size < 200_000,
        "{} is {size} bytes",
        path.display()
    );
}

// ---- a fixture server: the page at /ui/, the answers of a function at /v1/status ----

type Answer = dyn Fn(usize) -> (u16, String) + Send + Sync;

struct Fixture {
    addr: SocketAddr,
    polls: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Fixture {
    /// Serve the page at `/ui/` and `answer(n)` (status, JSON) to the `n`th `GET /v1/status`.
    fn start(answer: impl Fn(usize) -> (u16, String) + Send + Sync + 'static) -> Fixture {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fixture server");
        let addr = listener.local_addr().expect("local addr");
        let polls = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let answer: Arc<Answer> = Arc::new(answer);
        let (p, s) = (Arc::clone(&polls), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (p, a) = (Arc::clone(&p), Arc::clone(&answer));
                // One thread a connection: a browser's speculative connection that never sends
                // a request must not hold up the others.
                std::thread::spawn(move || serve(conn, &p, &*a));
            }
        });
        Fixture {
            addr,
            polls,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/ui/", self.addr)
    }

    /// `GET /v1/status` requests answered so far.
    fn polls(&self) -> usize {
        self.polls.load(Ordering::SeqCst)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Answer the requests of one connection.
fn serve(conn: TcpStream, polls: &AtomicUsize, answer: &Answer) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(write) = conn.try_clone() else { return };
    let mut write = write;
    let mut read = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        // The headers, up to the blank line (GETs have no body).
        loop {
            let mut h = String::new();
            if read.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
        }
        let path = line.split_whitespace().nth(1).unwrap_or("");
        let (status, ctype, body) = match path {
            "/ui/" => (200, "text/html; charset=utf-8", PAGE.to_owned()),
            "/v1/status" => {
                let n = polls.fetch_add(1, Ordering::SeqCst);
                let (status, body) = answer(n);
                (status, "application/json", body)
            }
            _ => (
                404,
                "application/json",
                r#"{"error_msg":"not found"}"#.to_owned(),
            ),
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n\r\n",
            body.len()
        );
        if write.write_all(head.as_bytes()).is_err() || write.write_all(body.as_bytes()).is_err() {
            return;
        }
    }
}

// ---- reading the dumped DOM ----

/// The first element whose start tag contains `needle` (an attribute, `data-node="..."`),
/// from its start tag to its matching end tag.
fn element<'a>(html: &'a str, needle: &str) -> Option<&'a str> {
    let at = html.find(needle)?;
    let start = html[..at].rfind('<')?;
    let name: String = html[start + 1..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let (open, close) = (format!("<{name}"), format!("</{name}>"));
    let mut depth = 0usize;
    let mut pos = start;
    loop {
        let next_open = find_tag(html, pos, &open);
        let Some(c) = html[pos..].find(&close).map(|c| pos + c) else {
            return Some(&html[start..]);
        };
        match next_open {
            Some(o) if o < c => {
                depth += 1;
                pos = o + open.len();
            }
            _ => {
                depth = depth.saturating_sub(1);
                pos = c + close.len();
                if depth == 0 {
                    return Some(&html[start..pos]);
                }
            }
        }
    }
}

/// The next `<name` start tag (not a longer name) at or after `from`.
fn find_tag(html: &str, from: usize, open: &str) -> Option<usize> {
    let mut pos = from;
    while let Some(i) = html[pos..].find(open) {
        let at = pos + i;
        match html[at + open.len()..].chars().next() {
            Some(c) if c.is_whitespace() || c == '>' || c == '/' => return Some(at),
            _ => pos = at + open.len(),
        }
    }
    None
}

/// The start tag of `<body>`.
fn body_tag(dom: &str) -> &str {
    let start = dom
        .find("<body")
        .unwrap_or_else(|| panic!("no body:\n{dom}"));
    let end = dom[start..].find('>').map_or(dom.len(), |e| start + e + 1);
    &dom[start..end]
}

/// An attribute of the element's start tag, decoded.
fn attr(element: &str, name: &str) -> Option<String> {
    let tag = &element[..element.find('>').map_or(element.len(), |e| e + 1)];
    let mut from = 0;
    while let Some(i) = tag[from..].find(name) {
        let at = from + i;
        let before = tag[..at].chars().last();
        let rest = &tag[at + name.len()..];
        if before.is_some_and(char::is_whitespace) {
            if let Some(v) = rest.strip_prefix("=\"") {
                return Some(decode(&v[..v.find('"').unwrap_or(v.len())]));
            }
            if rest.starts_with([' ', '>', '/']) {
                return Some(String::new());
            }
        }
        from = at + name.len();
    }
    None
}

/// The visible text of an HTML fragment: tags removed, entities decoded, spaces collapsed.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    decode(&out)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn decode(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", " ")
        .replace('\u{202f}', " ")
        .replace("&amp;", "&")
}

/// The text of the element with `data-role="<role>"` inside `element`.
fn role_text(element_html: &str, role: &str) -> String {
    element(element_html, &format!(r#"data-role="{role}""#))
        .map(text)
        .unwrap_or_else(|| panic!("no data-role={role} in {element_html}"))
}

/// The text of a header field (`data-field="<name>"`).
fn field_text(dom: &str, name: &str) -> String {
    element(dom, &format!(r#"data-field="{name}""#))
        .map(text)
        .unwrap_or_else(|| panic!("no header field {name}"))
}
