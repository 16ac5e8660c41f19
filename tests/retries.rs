//! Retries, the tried set, deadlines, retry_on_status and X-Weir-Upstream-Status.
//!
//! Dead nodes are `Backend::refused()` ports: bound and never listening for the whole test, so
//! no other socket (another test's backend or proxy) can take the port and answer.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;
use weir_testkit::{wait_for, Backend, Mode, TestProxy};

#[test]
fn connect_failures_are_retried_on_other_nodes() {
    let ok = Backend::start("ok");
    let (dead1, dead2) = (Backend::refused(), Backend::refused());
    let p = TestProxy::start(&format!(
        "routes: [{{id: r, uri: /*, upstream: {{nodes: {{\"{}\": 1, \"{}\": 1, \"{}\": 1}}}}}}]\n",
        dead1.addr(),
        dead2.addr(),
        ok.addr
    ));
    let mut c = p.client();
    for _ in 0..6 {
        let r = c.get("/").expect("req");
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        // A request whose retry succeeded carries no X-Weir-Upstream-Status.
        assert_eq!(r.header("x-weir-upstream-status"), None);
    }
    // POST is retried on connect failures too: nothing was sent.
    let r = c.request("POST", "/", &[], b"body").expect("post");
    assert_eq!(r.status, 200);
}

#[test]
fn exhausted_attempts_answer_502_with_every_status() {
    let (dead1, dead2) = (Backend::refused(), Backend::refused());
    let p = TestProxy::start(&format!(
        "routes: [{{id: r, uri: /*, upstream: {{nodes: {{\"{}\": 1, \"{}\": 1}}}}}}]\n",
        dead1.addr(),
        dead2.addr()
    ));
    let r = p.client().get("/").expect("req");
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-weir-upstream-status"), Some("502, 502"));
}

#[test]
fn retries_zero_means_one_attempt_and_more_than_nodes_is_capped() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    a.set_mode(Mode::Drop);
    b.set_mode(Mode::Drop);
    let p = TestProxy::start(&format!(
        "routes:\n  - {{id: r0, uri: /zero, upstream: {{retries: 0, nodes: {{\"{a}\": 1, \"{b}\": 1}}}}}}\n  - {{id: r5, uri: /five, upstream: {{retries: 5, nodes: {{\"{a}\": 1, \"{b}\": 1}}}}}}\n",
        a = a.addr,
        b = b.addr
    ));
    let r = p.client().get("/zero").expect("req");
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-weir-upstream-status"), Some("502"));
    assert_eq!(a.hits() + b.hits(), 1);
    // retries: 5 over two nodes: each node once, then no node is left.
    let r = p.client().get("/five").expect("req");
    assert_eq!(r.header("x-weir-upstream-status"), Some("502, 502"));
    assert_eq!(a.hits() + b.hits(), 3);
}

#[test]
fn pingoras_attempt_cap_does_not_cut_configured_retries() {
    // 20 dead nodes and one live one: 21 attempts, more than Pingora's default cap of 16.
    let ok = Backend::start("ok");
    let dead: Vec<_> = (0..20).map(|_| Backend::refused()).collect();
    let mut nodes = String::new();
    for d in &dead {
        nodes.push_str(&format!(
            "      - {{host: 127.0.0.1, port: {}, weight: 1, priority: 1}}\n",
            d.port()
        ));
    }
    nodes.push_str(&format!(
        "      - {{host: 127.0.0.1, port: {}, weight: 1, priority: 0}}\n",
        ok.port()
    ));
    let p = TestProxy::start(&format!(
        "routes: [{{id: r, uri: /*, upstream_id: u}}]\nupstreams:\n  - id: u\n    nodes:\n{nodes}"
    ));
    let r = p.client().get("/").expect("req");
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
}

#[test]
fn read_errors_are_retried_for_get_but_not_for_post() {
    let (bad, good) = (Backend::start("bad"), Backend::start("good"));
    bad.set_mode(Mode::Drop);
    let p = TestProxy::start(&format!(
        "routes: [{{id: r, uri: /*, upstream: {{nodes: [{{host: 127.0.0.1, port: {}, weight: 1, priority: 1}}, {{host: 127.0.0.1, port: {}, weight: 1}}]}}}}]\n",
        bad.port(),
        good.port()
    ));
    let mut c = p.client();
    let r = c.get("/").expect("get");
    assert_eq!((r.status, r.body.as_str()), (200, "good"));
    let before = good.hits();
    let r = c.request("POST", "/", &[], b"payload").expect("post");
    assert_eq!(r.status, 502);
    assert_eq!(good.hits(), before, "a sent POST must not be replayed");
}

#[test]
fn read_timeout_answers_504() {
    // A backend that never answers: the read timeout fires however slow the machine is.
    let slow = Backend::start("slow");
    slow.set_mode(Mode::Hang);
    let p = TestProxy::start(&format!(
        "routes: [{{id: r, uri: /*, upstream: {{timeout: {{connect: 1, send: 1, read: 0.3}}, nodes: {{\"{}\": 1}}}}}}]\n",
        slow.addr
    ));
    let r = p.client().get("/").expect("req");
    assert_eq!(r.status, 504);
    assert_eq!(r.header("x-weir-upstream-status"), Some("504"));
    // Pingora closes the client connection after a failed proxy attempt; the response says so.
    assert_eq!(r.header("connection"), Some("close"));
}

#[test]
fn timeout_then_refused_reports_both() {
    let slow = Backend::start("slow");
    slow.set_mode(Mode::Hang);
    let dead = Backend::refused();
    let p = TestProxy::start(&format!(
        "routes: [{{id: r, uri: /*, upstream: {{timeout: {{connect: 1, send: 1, read: 0.2}}, nodes: [{{host: 127.0.0.1, port: {}, weight: 1, priority: 1}}, {{host: 127.0.0.1, port: {}, weight: 1}}]}}}}]\n",
        slow.port(),
        dead.port()
    ));
    let r = p.client().get("/").expect("req");
    assert_eq!(r.status, 502, "the last attempt failed by error");
    assert_eq!(r.header("x-weir-upstream-status"), Some("504, 502"));
}

#[test]
fn retry_timeout_stops_retrying_after_the_deadline() {
    let (s1, s2, s3) = (
        Backend::start("s1"),
        Backend::start("s2"),
        Backend::start("s3"),
    );
    for s in [&s1, &s2, &s3] {
        s.set_mode(Mode::Hang);
    }
    let p = TestProxy::start(&format!(
        "routes: [{{id: r, uri: /*, upstream: {{retry_timeout: 0.3, timeout: {{connect: 1, send: 1, read: 0.4}}, nodes: {{\"{}\": 1, \"{}\": 1, \"{}\": 1}}}}}}]\n",
        s1.addr, s2.addr, s3.addr
    ));
    let r = p.client().get("/").expect("req");
    // The first attempt timed out after the 0.3 s deadline: no second attempt, and 504.
    assert_eq!(r.status, 504);
    assert_eq!(r.header("x-weir-upstream-status"), Some("504"));
    assert_eq!(s1.hits() + s2.hits() + s3.hits(), 1);
}

#[test]
fn upstream_5xx_is_relayed_unless_retry_on_status_lists_it() {
    let (e, ok) = (Backend::start("err"), Backend::start("ok"));
    e.set_mode(Mode::Status(503));
    let nodes = format!(
        "[{{host: 127.0.0.1, port: {}, weight: 1, priority: 1}}, {{host: 127.0.0.1, port: {}, weight: 1}}]",
        e.port(),
        ok.port()
    );
    let p = TestProxy::start(&format!(
        "routes:\n  - {{id: plain, uri: /plain, upstream: {{nodes: {nodes}}}}}\n  - {{id: retry, uri: /retry, upstream: {{retry_on_status: [503], nodes: {nodes}}}}}\n"
    ));
    let mut c = p.client();
    let r = c.get("/plain").expect("plain");
    assert_eq!((r.status, r.body.as_str()), (503, "err"));
    assert_eq!(r.header("x-weir-upstream-status"), Some("503"));
    let r = c.get("/retry").expect("retry");
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    // Not for POST: the 503 is relayed.
    let r = c.request("POST", "/retry", &[], b"x").expect("post");
    assert_eq!(r.status, 503);
}

#[test]
fn single_node_upstream_retries_the_same_node() {
    let a = Backend::start("a");
    a.set_mode(Mode::Status(502));
    let p = TestProxy::start(&format!(
        "routes: [{{id: r, uri: /*, upstream: {{retries: 2, retry_on_status: [502], nodes: {{\"{}\": 1}}}}}}]\n",
        a.addr
    ));
    let r = p.client().get("/").expect("req");
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-weir-upstream-status"), Some("502, 502, 502"));
    assert_eq!(a.hits(), 3);
}

#[test]
fn a_pooled_connection_that_died_gets_one_free_retry_for_idempotent_methods() {
    let a = Backend::start("a");
    a.set_mode(Mode::DropReused);
    // retries: 0: the free retry on a fresh connection is not an attempt.
    let p = TestProxy::start(&format!(
        "routes: [{{id: r, uri: /*, upstream: {{retries: 0, nodes: {{\"{}\": 1}}}}}}]\n",
        a.addr
    ));
    let mut c = p.client();
    assert_eq!(c.get("/one").expect("first").status, 200);
    // The client has its response before the proxy has put the connection back in its pool:
    // wait for that, so the next request finds it there.
    p.wait_finished(1);
    // Goes out on the pooled connection, which the backend drops: retried on a new one.
    let r = c.get("/two").expect("second");
    assert_eq!((r.status, r.header("x-weir-upstream-status")), (200, None));
    let targets: Vec<String> = a.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/one", "/two", "/two"]);
    // The new connection of the retry is pooled in turn.
    p.wait_finished(2);
    // A POST already written on a dead pooled connection is not replayed.
    let r = c.request("POST", "/three", &[], b"x").expect("post");
    assert_eq!(r.status, 502);
    assert_eq!(a.seen().len(), 4);
}

#[test]
fn a_request_the_client_gives_up_on_releases_its_in_flight_count() {
    let slow = Backend::start("slow");
    slow.set_mode(Mode::Hang);
    let p = TestProxy::start(&format!(
        "routes: [{{id: r, uri: /*, upstream: {{type: least_conn, nodes: {{\"{}\": 1}}}}}}]\n",
        slow.addr
    ));
    let in_flight = || {
        p.handle.load().upstreams["routes/r"].nodes[0]
            .state
            .in_flight()
    };
    let mut s = TcpStream::connect(p.addr).expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    wait_for(Duration::from_secs(10), || (slow.hits() == 1).then_some(()))
        .expect("the request reached the node");
    assert_eq!(in_flight(), 1);
    // The client goes away while the node keeps the request: the attempt ends without an
    // outcome, and its count is released.
    drop(s);
    p.wait_finished(1);
    assert_eq!(in_flight(), 0);
}
