//! Upstream keepalive pools: reuse, `requests`, `idle_timeout` and `size`.
//!
//! The client sees a response before the proxy has put the upstream connection back in its
//! pool, so a test that counts connections waits for the proxy to finish each request
//! (`TestProxy::wait_finished`) before it sends the next: otherwise the next request may find
//! the pool empty and open a connection, depending on scheduling.

use serde_json::{json, Value};
use std::time::Duration;
use weir_testkit::config::{Conf, Route, Upstream};
use weir_testkit::{wait_for, Backend, Mode, TestProxy};

fn proxy_for(b: &Backend, pool: Value) -> TestProxy {
    TestProxy::start(
        Conf::new()
            .route(Route::new("r", "/*").upstream(Upstream::nodes(&[b]).keepalive_pool(pool))),
    )
}

#[test]
fn sequential_requests_reuse_upstream_connections() {
    let b = Backend::start("b");
    let p = proxy_for(&b, json!({}));
    let mut c = p.client();
    for i in 1..=1000 {
        assert_eq!(c.get("/").expect("req").status, 200);
        p.wait_finished(i);
    }
    // Every request after the first rides the pooled connection.
    assert_eq!(b.connections(), 1, "connections for 1000 requests");
}

#[test]
fn requests_limit_closes_after_the_last_request() {
    let b = Backend::start("b");
    let p = proxy_for(&b, json!({"requests": 3}));
    let mut c = p.client();
    for i in 1..=4 {
        assert_eq!(c.get("/").expect("req").status, 200);
        p.wait_finished(i);
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
    let p = proxy_for(&b, json!({"idle_timeout": 0.2}));
    let mut c = p.client();
    c.get("/").expect("first");
    p.wait_finished(1);
    c.get("/").expect("second");
    p.wait_finished(2);
    assert_eq!(b.connections(), 1);
    // The proxy closes the idle connection by itself once idle_timeout has passed.
    let closed = wait_for(Duration::from_secs(10), || {
        (b.live_connections() == 0).then_some(())
    });
    assert!(
        closed.is_some(),
        "the idle upstream connection was never closed"
    );
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
    let p = proxy_for(&b, json!({"idle_timeout": 0}));
    let mut c = p.client();
    for i in 1..=3 {
        c.get("/").expect("req");
        p.wait_finished(i);
    }
    assert_eq!(b.connections(), 3);
}

#[test]
fn size_bounds_idle_connections_per_upstream() {
    let b = Backend::start("b");
    let p = proxy_for(&b, json!({"size": 2}));
    // Eight requests held by the backend at once, so eight are busy together.
    let burst = |p: &TestProxy, done_before: u64| {
        b.set_mode(Mode::Hold);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let mut c = p.client();
                std::thread::spawn(move || c.get("/").expect("req").status)
            })
            .collect();
        let all_in = wait_for(Duration::from_secs(10), || (b.holding() == 8).then_some(()));
        assert!(
            all_in.is_some(),
            "only {} requests reached the backend",
            b.holding()
        );
        b.release();
        for h in handles {
            assert_eq!(h.join().expect("join"), 200);
        }
        p.wait_finished(done_before + 8);
    };
    burst(&p, 0);
    let after_first = b.connections();
    assert_eq!(after_first, 8);
    // Only `size` connections went back to the pool: a second burst opens exactly 6 anew.
    burst(&p, 8);
    let opened = b.connections() - after_first;
    assert_eq!(opened, 6, "more or fewer than 2 idle connections were kept");
}

#[test]
fn without_work_stealing_each_worker_reuses_its_own_connections() {
    // Two worker threads, each its own runtime: a pooled connection may only be used by the
    // worker that made it. Client connections land on either worker.
    let b = Backend::start("b");
    let p = TestProxy::start(
        Conf::new()
            .set("server", json!({"work_stealing": false}))
            .route(Route::new("r", "/*").upstream(Upstream::nodes(&[&b]))),
    );
    let mut done = 0;
    for _ in 0..100 {
        let mut c = p.client();
        for _ in 0..10 {
            assert_eq!(c.get("/").expect("req").status, 200);
            done += 1;
            p.wait_finished(done);
        }
    }
    // Every request was served. Reuse: Pingora hands a returned connection's idle watch to a
    // random worker's runtime, and a request that finds the watch not yet let go opens a new
    // connection ("failed to acquire reusable stream", logged by Pingora): a few percent of
    // requests here, never a failure. Most requests reuse a connection.
    assert!(
        b.connections() <= 500,
        "{} upstream connections for 1000 sequential requests on 2 workers",
        b.connections()
    );
}
