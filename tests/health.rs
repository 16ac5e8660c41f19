//! Health checks end to end (docs/health-checks.md): active probes against real backends, passive
//! reports from real requests, selection that honours health, fail-open, the control API.
//!
//! Probes run on their own schedule: a test waits for the state it needs with a deadline
//! ([`PATIENCE`], far above the few probe intervals it takes on an idle machine), never for a
//! fixed time.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use weir_testkit::config::{Conf, Node, Route, Service, Upstream};
use weir_testkit::{wait_for, Backend, Mode, TestProxy};

const PROBE_PATH: &str = "/healthz";

/// Deadline for anything that takes a few probe intervals; only ever reached by a failing test.
const PATIENCE: Duration = Duration::from_secs(15);

fn three_backends() -> (Backend, Backend, Backend) {
    (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    )
}

/// `checks.active` probing `PROBE_PATH` every second, up or down.
fn active_every_second() -> Value {
    json!({"http_path": PROBE_PATH, "healthy": {"interval": 1}, "unhealthy": {"interval": 1}})
}

/// `checks.active` of TCP probes 300 s apart: in effect, only the first one runs.
fn tcp_every_300s() -> Value {
    json!({"type": "tcp", "healthy": {"interval": 300}, "unhealthy": {"interval": 300}})
}

/// Client (non-probe) requests a backend has seen.
fn client_hits(b: &Backend) -> usize {
    b.seen().iter().filter(|s| s.target != PROBE_PATH).count()
}

/// Probe requests a backend has seen.
fn probes(b: &Backend) -> Vec<weir_testkit::Seen> {
    probes_at(b, PROBE_PATH)
}

/// Requests for `path` a backend has seen.
fn probes_at(b: &Backend, path: &str) -> Vec<weir_testkit::Seen> {
    b.seen().into_iter().filter(|s| s.target == path).collect()
}

/// A configuration with the control API, one route to upstream `u1`, and `upstream` as `u1`.
fn config(upstream: Upstream) -> Conf {
    Conf::new()
        .control()
        .route(Route::new("r1", "/*").upstream_id("u1"))
        .upstream(upstream.id("u1"))
}

/// The control API's view of one target of `key`.
fn target_state(p: &TestProxy, key: &str, port: u16) -> Option<Value> {
    let (status, body) = p.control_get(&format!("/v1/healthcheck/{key}"));
    assert_eq!(status, 200, "{body}");
    body["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["port"] == port)
        .cloned()
}

fn wait_status(p: &TestProxy, key: &str, port: u16, want: &str, within: Duration) -> Value {
    let mut last = Value::Null;
    let got = wait_for(within, || {
        last = target_state(p, key, port)?;
        (last["status"] == want).then(|| last.clone())
    });
    got.unwrap_or_else(|| panic!("{key} port {port} not {want} within {within:?}; last: {last}"))
}

#[test]
fn a_killed_node_is_ejected_and_a_revived_node_gets_traffic_again() {
    let (a, b, c) = three_backends();
    let p = TestProxy::start(config(
        Upstream::nodes(&[&a, &b, &c]).active_check(active_every_second()),
    ));
    // Probes reach every node.
    for n in [&a, &b, &c] {
        assert!(
            wait_for(PATIENCE, || (!probes(n).is_empty()).then_some(())).is_some(),
            "{} was never probed",
            n.name()
        );
    }
    c.stop();
    // Two failed probes (tcp_failures), 1 s apart.
    let state = wait_status(&p, "upstreams/u1", c.port(), "unhealthy", PATIENCE);
    assert_eq!(state["counter"]["tcp_failure"], 2, "{state}");

    // Bring a process back on the port that fails its probes (500): it stays down and gets
    // no client traffic.
    let revived = Backend::start_on("c2", &c.addr.to_string());
    revived.set_mode(Mode::Status(500));
    let mut client = p.client();
    for i in 0..30 {
        let r = client.get(&format!("/x{i}")).expect("request");
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert_eq!(r.header("x-weir-upstream-status"), None);
    }
    assert_eq!(client_hits(&revived), 0, "a down node got client traffic");

    // Healthy again after `healthy.successes` (2) good probes, and traffic returns.
    revived.set_mode(Mode::Ok);
    wait_status(&p, "upstreams/u1", c.port(), "healthy", PATIENCE);
    let back = wait_for(PATIENCE, || {
        let _ = client.get("/again");
        (client_hits(&revived) > 0).then_some(())
    });
    assert!(back.is_some(), "the recovered node got no traffic");
}

#[test]
fn a_node_answering_500_is_ejected_by_passive_checks() {
    let (a, b, c) = three_backends();
    c.set_mode(Mode::Status(500));
    // TCP probes (which the 500 node passes) far apart: only passive reports act here.
    let p = TestProxy::start(config(
        Upstream::nodes(&[&a, &b, &c])
            .active_check(tcp_every_300s())
            .passive_check(json!({"unhealthy": {"http_failures": 3}})),
    ));
    let mut client = p.client();
    let mut errors = 0;
    for i in 1..=40 {
        if client.get("/").expect("request").status == 500 {
            errors += 1;
        }
        // A final status is reported when the proxy finishes the request, after the client
        // has the response: wait for it, so the next pick knows the node's latest state.
        p.wait_finished(i);
    }
    // Exactly the three 500s that crossed the threshold reached the client.
    assert_eq!(errors, 3);
    assert_eq!(c.hits(), 3);
    let state = target_state(&p, "upstreams/u1", c.port()).expect("target");
    assert_eq!(state["status"], "unhealthy");
    assert_eq!(state["counter"]["http_failure"], 3);
    assert_eq!(a.hits() + b.hits(), 37);
}

#[test]
fn failed_attempts_that_are_retried_are_reported_without_a_passive_block() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let dead = Backend::refused();
    let p = TestProxy::start(config(
        Upstream::nodes(&[a.addr, b.addr, dead.addr()]).active_check(tcp_every_300s()),
    ));
    let mut client = p.client();
    for _ in 0..12 {
        assert_eq!(client.get("/").expect("request").status, 200);
    }
    // Passive defaults: two tcp failures (between attempts) eject the dead node.
    let state = target_state(&p, "upstreams/u1", dead.port()).expect("target");
    assert_eq!(state["status"], "unhealthy", "{state}");
    assert_eq!(state["counter"]["tcp_failure"], 2);
}

#[test]
fn every_algorithm_skips_down_nodes_and_chash_keeps_its_ring() {
    let types = [
        ("roundrobin", json!({"type": "roundrobin"})),
        ("chash", json!({"type": "chash", "key": "uri"})),
        ("least_conn", json!({"type": "least_conn"})),
        ("ewma", json!({"type": "ewma"})),
    ];
    for (lb, fields) in types {
        let (a, b, c) = (
            Backend::start("a"),
            Backend::start("b"),
            Backend::start("c"),
        );
        let p = TestProxy::start(config(Upstream::nodes(&[&a, &b, &c]).merge(fields).active_check(
            json!({"http_path": PROBE_PATH, "healthy": {"interval": 1}, "unhealthy": {"interval": 1, "http_failures": 1}}),
        )));
        let mut client = p.client();
        let paths: Vec<String> = (0..40).map(|i| format!("/k{i}")).collect();
        let before: Vec<String> = paths
            .iter()
            .map(|path| client.get(path).expect("request").body)
            .collect();
        c.set_mode(Mode::Status(500));
        wait_status(&p, "upstreams/u1", c.port(), "unhealthy", PATIENCE);
        let hits_c = client_hits(&c);
        for (path, was) in paths.iter().zip(&before) {
            let r = client.get(path).expect("request");
            assert_eq!(r.status, 200, "{lb}: {path} answered {}", r.status);
            if lb == "chash" && was != "c" {
                assert_eq!(&r.body, was, "{lb}: {path} moved although its node is up");
            }
        }
        assert_eq!(client_hits(&c), hits_c, "{lb}: the down node got traffic");
    }
}

#[test]
fn all_nodes_down_fails_open_and_targets_are_shared_by_identity() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    // `checks.active.port` points every probe at one refused port: both nodes are the one
    // target (127.0.0.1, port, 127.0.0.1), and it goes down.
    let refused = Backend::refused();
    let dead = refused.port();
    let p = TestProxy::start(config(Upstream::nodes(&[&a, &b]).active_check(
        json!({"port": dead, "healthy": {"interval": 1}, "unhealthy": {"interval": 1}}),
    )));
    wait_status(&p, "upstreams/u1", dead, "unhealthy", PATIENCE);
    let (_, body) = p.control_get("/v1/healthcheck/upstreams/u1");
    assert_eq!(body["nodes"].as_array().map(Vec::len), Some(1), "{body}");
    let mut client = p.client();
    for _ in 0..10 {
        assert_eq!(client.get("/").expect("request").status, 200);
    }
    assert!(a.hits() >= 4 && b.hits() >= 4, "fail-open keeps balancing");
}

#[test]
fn a_single_node_upstream_is_never_filtered() {
    let a = Backend::start("a");
    a.set_mode(Mode::Status(500));
    let p = TestProxy::start(config(Upstream::nodes(&[&a]).active_check(
        json!({"http_path": PROBE_PATH, "unhealthy": {"http_failures": 1}}),
    )));
    wait_status(&p, "upstreams/u1", a.port(), "unhealthy", PATIENCE);
    let r = p.client().get("/").expect("request");
    assert_eq!((r.status, r.body.as_str()), (500, "a"));
}

#[test]
fn a_down_high_priority_node_sends_traffic_to_the_lower_level() {
    let (hi, lo) = (Backend::start("hi"), Backend::start("lo"));
    hi.set_mode(Mode::Status(503));
    let p = TestProxy::start(config(
        Upstream::list([Node::of(&hi).priority(1), Node::of(&lo).priority(0)])
            .active_check(json!({"http_path": PROBE_PATH, "unhealthy": {"http_failures": 1}})),
    ));
    wait_status(&p, "upstreams/u1", hi.port(), "unhealthy", PATIENCE);
    let mut client = p.client();
    for _ in 0..5 {
        let r = client.get("/").expect("request");
        assert_eq!((r.status, r.body.as_str()), (200, "lo"));
    }
    hi.set_mode(Mode::Ok);
    wait_status(&p, "upstreams/u1", hi.port(), "healthy", PATIENCE);
    assert_eq!(client.get("/").expect("request").body, "hi");
}

#[test]
fn probes_carry_the_host_headers_and_settings_of_the_check() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let p = TestProxy::start(
        Conf::new()
            .control()
            .upstream(Upstream::nodes(&[&a]).id("plain").active_check(json!({
                "http_path": PROBE_PATH,
                "host": "health.example",
                "http_method": "POST",
                "http_req_body": "ping",
                "req_headers": ["X-Probe: yes"],
            })))
            .upstream(
                Upstream::nodes(&[&b])
                    .id("rewrite")
                    .rewrite_host("rewritten.example")
                    .active_check(json!({"http_path": PROBE_PATH, "host": "ignored.example"})),
            ),
    );
    let seen = wait_for(PATIENCE, || probes(&a).into_iter().next()).expect("probe");
    assert_eq!(seen.method, "POST");
    assert_eq!(
        seen.headers.get("host").map(String::as_str),
        Some("health.example")
    );
    assert_eq!(seen.headers.get("x-probe").map(String::as_str), Some("yes"));
    assert_eq!(
        seen.headers.get("connection").map(String::as_str),
        Some("close")
    );
    assert_eq!(seen.body, b"ping");
    let seen = wait_for(PATIENCE, || probes(&b).into_iter().next()).expect("probe");
    assert_eq!(seen.method, "GET");
    assert_eq!(
        seen.headers.get("host").map(String::as_str),
        Some("rewritten.example")
    );
    // The target's hostname is `checks.active.host`; the probe Host follows pass_host.
    let state = target_state(&p, "upstreams/rewrite", b.port()).expect("target");
    assert_eq!(state["hostname"], "ignored.example");
}

#[test]
fn https_probes_send_the_host_as_sni() {
    let ca = weir_testkit::pki::TestCa::new("probe CA");
    let tls = Backend::start_https("tls", &ca, &["secure.example"], &[]);
    let _p = TestProxy::start(config(
        Upstream::nodes(&[&tls])
            .scheme("https")
            .active_check(json!({
                "type": "https",
                "https_verify_certificate": false,
                "host": "secure.example",
                "http_path": PROBE_PATH,
            })),
    ));
    let seen = wait_for(PATIENCE, || probes(&tls).into_iter().next()).expect("probe");
    assert_eq!(seen.sni.as_deref(), Some("secure.example"));
    assert_eq!(
        seen.headers.get("host").map(String::as_str),
        Some("secure.example")
    );
}

#[test]
fn https_probes_verify_the_certificate_by_default() {
    // Self-signed for the test CA, which the prober does not trust: every probe fails its
    // handshake (tcp failure) and the target goes down.
    let ca = weir_testkit::pki::TestCa::new("untrusted CA");
    let tls = Backend::start_https("tls", &ca, &["secure.example"], &[]);
    let other = Backend::start("other");
    let p = TestProxy::start(config(
        Upstream::nodes(&[&tls, &other])
            .scheme("https")
            .active_check(
                json!({"type": "https", "host": "secure.example", "http_path": PROBE_PATH}),
            ),
    ));
    let state = wait_status(&p, "upstreams/u1", tls.port(), "unhealthy", PATIENCE);
    assert_eq!(state["counter"]["tcp_failure"], 2);
    assert!(
        probes(&tls).is_empty(),
        "no request is sent over an unverified connection"
    );
}

#[test]
fn health_state_survives_reloads_and_removed_nodes_stop_being_probed() {
    let (a, b, c) = three_backends();
    c.set_mode(Mode::Status(500));
    let upstream = |backends: &[&Backend], interval: u32, timeout: f64, path: &str| {
        Upstream::nodes(backends)
            .timeout(timeout, timeout, timeout)
            .active_check(json!({
                "http_path": path,
                "healthy": {"interval": interval},
                "unhealthy": {"interval": interval, "http_failures": 2},
            }))
    };
    let all = [&a, &b, &c];
    let p = TestProxy::start(config(upstream(&all, 1, 5.0, PROBE_PATH)));
    wait_status(&p, "upstreams/u1", c.port(), "unhealthy", PATIENCE);

    // Other fields change: state kept.
    p.apply(config(upstream(&all, 1, 6.0, PROBE_PATH)));
    let state = target_state(&p, "upstreams/u1", c.port()).expect("target");
    assert_eq!(state["status"], "unhealthy");
    assert_eq!(state["counter"]["http_failure"], 2);
    // `checks` change: the checker restarts with the new settings, state kept.
    p.apply(config(upstream(&all, 2, 6.0, PROBE_PATH)));
    let state = target_state(&p, "upstreams/u1", c.port()).expect("target");
    assert_eq!(state["status"], "unhealthy");

    // Node c removed: gone from the control API, and probes stop. The new settings probe
    // another path, so a probe of the old settings that was already under way when c was
    // removed (it may land any time later) is never mistaken for a probe of the new ones.
    const AFTER: &str = "/healthz-after-removal";
    p.apply(config(upstream(&[&a, &b], 1, 6.0, AFTER)));
    assert_eq!(target_state(&p, "upstreams/u1", c.port()), None);
    // Watch for three probe rounds of the new settings, on the nodes that stayed.
    for n in [&a, &b] {
        assert!(
            wait_for(PATIENCE, || (probes_at(n, AFTER).len() >= 3).then_some(())).is_some(),
            "{} got {} probes of the new settings",
            n.name(),
            probes_at(n, AFTER).len()
        );
    }
    assert_eq!(
        probes_at(&c, AFTER).len(),
        0,
        "a removed node is still probed"
    );

    // `checks` removed: no checker left.
    p.apply(config(Upstream::nodes(&[&a, &b])));
    assert_eq!(p.control_get("/v1/healthcheck"), (200, json!([])));
}

#[test]
fn control_api_reports_checkers_and_answers_unknown_ids() {
    let a = Backend::start("a");
    let p = TestProxy::start(
        Conf::new()
            .control()
            .route(
                Route::new("r1", "/r1")
                    .upstream(Upstream::nodes(&[&a]).active_check(json!({"type": "tcp"}))),
            )
            .route(Route::new("r2", "/r2").service_id("s1"))
            .route(Route::new("r3", "/r3").upstream_id("plain"))
            .service(
                Service::new("s1")
                    .upstream(Upstream::nodes(&[&a]).active_check(json!({"http_path": "/status"}))),
            )
            .upstream(Upstream::nodes(&[&a]).id("plain")),
    );
    let (status, all) = p.control_get("/v1/healthcheck");
    assert_eq!(status, 200);
    let names: Vec<&str> = all
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(names, ["routes/r1", "services/s1"]);
    let (status, r1) = p.control_get("/v1/healthcheck/routes/r1");
    assert_eq!(status, 200);
    assert_eq!(
        r1,
        json!({"name": "routes/r1", "type": "tcp", "nodes": [{
            "ip": "127.0.0.1", "port": a.port(), "hostname": "127.0.0.1", "status": "healthy",
            "counter": {"success": 0, "http_failure": 0, "tcp_failure": 0, "timeout_failure": 0}}]})
    );
    assert_eq!(
        p.control_get("/v1/healthcheck/services/s1").1["type"],
        "http"
    );
    assert_eq!(
        p.control_get("/v1/healthcheck/upstreams/u9"),
        (404, json!({"error_msg": "upstreams[u9] not found"}))
    );
    assert_eq!(
        p.control_get("/v1/healthcheck/routes/r3"),
        (404, json!({"error_msg": "no checker for routes[r3]"}))
    );
    assert_eq!(
        p.control_get("/v1/healthcheck/upstreams/plain"),
        (404, json!({"error_msg": "no checker for upstreams[plain]"}))
    );
    assert_eq!(
        p.control_get("/v1/healthcheck/route/r1"),
        (400, json!({"error_msg": "invalid src type route"}))
    );
}

/// Issue 5's reliability figure: 3 nodes, active + passive checks, default retries; sequential
/// GETs for 10 s; one node killed at 3 s and restarted at 6 s. Zero client-visible errors are
/// asserted, and that the restarted node gets traffic again (the GETs go on past 10 s until it
/// does, within `PATIENCE`: its recovery takes probes on their own schedule); the timings are
/// printed (run with `--nocapture`), never asserted.
#[test]
fn reliability_under_a_node_restart() {
    let (a, b, c) = three_backends();
    let p = TestProxy::start(config(
        Upstream::nodes(&[&a, &b, &c])
            .active_check(active_every_second())
            .passive_check(json!({})),
    ));
    let mut client = p.client();
    let start = Instant::now();
    let (mut sent, mut errors) = (0u32, 0u32);
    let mut killed_at = None;
    let mut revived: Option<(Backend, Instant)> = None;
    let mut ejected_after = None;
    let mut back_after = None;
    let run = Duration::from_secs(10);
    while start.elapsed() < run || (back_after.is_none() && start.elapsed() < run + PATIENCE) {
        let t = start.elapsed();
        if killed_at.is_none() && t >= Duration::from_secs(3) {
            c.stop();
            killed_at = Some(Instant::now());
        }
        if revived.is_none() && t >= Duration::from_secs(6) {
            revived = Some((Backend::start_on("c", &c.addr.to_string()), Instant::now()));
        }
        sent += 1;
        match client.get("/") {
            Ok(r) if r.status == 200 => {}
            _ => errors += 1,
        }
        if let (Some(k), None) = (killed_at, ejected_after) {
            if revived.is_none()
                && target_state(&p, "upstreams/u1", c.port())
                    .is_some_and(|s| s["status"] == "unhealthy")
            {
                ejected_after = Some(k.elapsed());
            }
        }
        if let (Some((r, at)), None) = (&revived, back_after) {
            if client_hits(r) > 0 {
                back_after = Some(at.elapsed());
            }
        }
    }
    println!(
        "reliability: {sent} requests, {errors} errors; ejected {ejected_after:?} after the kill; traffic back {back_after:?} after the restart"
    );
    assert_eq!(errors, 0, "client-visible errors");
    assert!(back_after.is_some(), "the restarted node got no traffic");
}
