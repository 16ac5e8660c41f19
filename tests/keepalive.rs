//! Upstream keepalive pools: reuse, `requests`, `idle_timeout` and `size`.

use std::time::Duration;
use weir_testkit::{wait_for, Backend, Mode, TestProxy};

fn proxy_for(b: &Backend, pool: &str) -> TestProxy {
    TestProxy::start(&format!(
        "routes: [{{id: r, uri: /*, upstream: {{keepalive_pool: {pool}, nodes: {{\"{}\": 1}}}}}}]\n",
        b.addr
    ))
}

#[test]
fn sequential_requests_reuse_upstream_connections() {
    let b = Backend::start("b");
    let p = proxy_for(&b, "{}");
    let mut c = p.client();
    for _ in 0..1000 {
        assert_eq!(c.get("/").expect("req").status, 200);
    }
    // At least 99% reuse: at most 10 connections for 1,000 requests.
    assert!(
        b.connections() <= 10,
        "{} connections for 1000 requests",
        b.connections()
    );
}

#[test]
fn requests_limit_closes_after_the_last_request() {
    let b = Backend::start("b");
    let p = proxy_for(&b, "{requests: 3}");
    let mut c = p.client();
    for _ in 0..4 {
        assert_eq!(c.get("/").expect("req").status, 200);
    }
    // open, reuse, reuse-then-close, open anew.
    assert_eq!(b.connections(), 2);
    let closes: Vec<bool> = b
        .seen()
        .iter()
        .map(|s| s.headers.get("connection").is_some_and(|v| v == "close"))
        .collect();
    assert_eq!(closes, [false, false, true, false]);
}

#[test]
fn idle_connections_are_dropped_after_idle_timeout() {
    let b = Backend::start("b");
    let p = proxy_for(&b, "{idle_timeout: 0.2}");
    let mut c = p.client();
    c.get("/").expect("first");
    c.get("/").expect("second");
    assert_eq!(b.connections(), 1);
    std::thread::sleep(Duration::from_millis(500)); // longer than idle_timeout, by design
    c.get("/").expect("third");
    assert_eq!(
        b.connections(),
        2,
        "the idle connection should have been dropped"
    );
}

#[test]
fn idle_timeout_zero_never_keeps_connections() {
    let b = Backend::start("b");
    let p = proxy_for(&b, "{idle_timeout: 0}");
    let mut c = p.client();
    for _ in 0..3 {
        c.get("/").expect("req");
    }
    assert_eq!(b.connections(), 3);
}

#[test]
fn size_bounds_idle_connections_per_upstream() {
    let b = Backend::start("b");
    b.set_mode(Mode::Delay(Duration::from_millis(300)));
    let p = proxy_for(&b, "{size: 2}");
    let burst = |p: &TestProxy| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let mut c = p.client();
                std::thread::spawn(move || c.get("/").expect("req").status)
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().expect("join"), 200);
        }
    };
    burst(&p);
    let after_first = b.connections();
    assert_eq!(after_first, 8);
    // Only `size` connections went back to the pool: a second burst opens at least 6 anew.
    burst(&p);
    let opened = b.connections() - after_first;
    assert!(
        opened >= 6,
        "opened {opened}: more than 2 idle connections were kept"
    );
    let _ = wait_for(Duration::from_millis(1), || Some(()));
}
