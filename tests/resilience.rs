//! The resilience layer end to end: outlier ejection and return, max_ejection_percent,
//! request and per-node limits, a retry storm held by a retry budget, the panic threshold at
//! its boundary, and slow start after a reload.
//!
//! Nodes listen on distinct loopback addresses where per-node metrics tell them apart.

use serde_json::json;
use std::time::{Duration, Instant};
use weir_testkit::config::{Conf, Node, Route, Upstream};
use weir_testkit::{wait_for, Backend, Mode, TestProxy};

fn on(name: &str, ip: &str) -> Backend {
    Backend::start_on(name, &format!("{ip}:0"))
}

fn node_entry(v: &serde_json::Value, port: u16) -> &serde_json::Value {
    v["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["port"] == port))
        .unwrap_or_else(|| panic!("no node with port {port} in {v}"))
}

#[test]
fn consecutive_5xx_eject_a_node_which_returns_by_itself() {
    let good = on("good", "127.0.0.21");
    let bad = on("bad", "127.0.0.22");
    bad.set_mode(Mode::Status(500));
    let conf = Conf::new()
        .control()
        .upstream(Upstream::nodes(&[good.addr, bad.addr]).id("u").set(
            "outlier_detection",
            json!({"consecutive_5xx": 3, "base_ejection_time": 1, "max_ejection_percent": 50}),
        ))
        .route(Route::new("r", "/*").upstream_id("u"));
    let p = TestProxy::start(conf);
    let mut c = p.client();
    // Until the bad node has answered 500 three times in a row (whichever order the nodes
    // are picked in).
    let mut n = 0;
    while bad.hits() < 3 {
        c.get("/").expect("request");
        n += 1;
        assert!(n < 20, "the bad node is not picked");
    }
    p.wait_finished(n);
    let hits = bad.hits();
    let (_, v) = p.control_get("/v1/healthcheck/upstreams/u");
    assert_eq!(v["type"], "outlier", "listed without checks: {v}");
    let e = node_entry(&v, bad.port());
    assert!(e["ejected_until"].as_f64().is_some(), "{v}");
    assert_eq!(e["ejections"], 1);
    assert_eq!(e["status"], "unhealthy");
    assert_eq!(
        node_entry(&v, good.port())["ejected_until"],
        serde_json::Value::Null
    );
    // While ejected, every request goes to the good node.
    let start = Instant::now();
    for _ in 0..5 {
        let r = c.get("/").expect("request");
        if start.elapsed() < Duration::from_millis(900) {
            assert_eq!(r.body, "good");
        }
    }
    if start.elapsed() < Duration::from_millis(900) {
        assert_eq!(bad.hits(), hits, "no attempt on an ejected node");
    }
    let s = p.scrape();
    assert_eq!(
        s.value(
            "weir_upstream_ejections_total",
            &[
                ("upstream", "upstreams/u"),
                ("node", "127.0.0.22"),
                ("reason", "consecutive_5xx")
            ]
        ),
        Some(1.0)
    );
    // After base_ejection_time (1 s) the node is back, with no health check.
    let back = wait_for(Duration::from_secs(5), || {
        (c.get("/").ok()?.body == "bad").then_some(())
    });
    assert!(back.is_some(), "the ejected node gets traffic again");
    let (_, v) = p.control_get("/v1/healthcheck/upstreams/u");
    assert_eq!(node_entry(&v, bad.port())["status"], "healthy");
}

#[test]
fn a_local_origin_failure_ejects_and_retries_go_elsewhere() {
    let good = on("good", "127.0.0.23");
    let dead = Backend::refused_on([127, 0, 0, 24]);
    let conf = Conf::new()
        .control()
        .upstream(
            Upstream::list([Node::of(good.addr), Node::of(dead.addr())])
                .id("u")
                .set(
                    "outlier_detection",
                    json!({"consecutive_5xx": 0, "consecutive_local_origin_failure": 1, "base_ejection_time": 30}),
                ),
        )
        .route(Route::new("r", "/*").upstream_id("u"));
    let p = TestProxy::start(conf);
    let mut c = p.client();
    for i in 0..10 {
        assert_eq!(c.get("/").expect("request").body, "good");
        p.wait_finished(i + 1);
    }
    let s = p.scrape();
    // The dead node was tried once at most: its first failure ejected it for 30 s.
    let failures = s.sum(
        "weir_upstream_attempts_total",
        &[("node", "127.0.0.24"), ("outcome", "connect_failure")],
    );
    assert_eq!(failures, 1.0, "{}", s.text);
    assert_eq!(
        s.value(
            "weir_upstream_ejections_total",
            &[
                ("node", "127.0.0.24"),
                ("reason", "consecutive_local_origin_failure")
            ]
        ),
        Some(1.0)
    );
}

#[test]
fn max_ejection_percent_holds() {
    let bad: Vec<Backend> = ["127.0.0.25", "127.0.0.26", "127.0.0.27"]
        .iter()
        .map(|ip| {
            let b = on("bad", ip);
            b.set_mode(Mode::Status(503));
            b
        })
        .collect();
    let addrs: Vec<_> = bad.iter().map(|b| b.addr).collect();
    let conf = Conf::new()
        .control()
        .upstream(Upstream::nodes(&addrs).id("u").set(
            "outlier_detection",
            json!({"consecutive_5xx": 1, "max_ejection_percent": 34, "base_ejection_time": 30}),
        ))
        .route(
            Route::new("r", "/*")
                .upstream_id("u")
                .set("upstream_id", "u"),
        );
    let p = TestProxy::start(conf);
    let mut c = p.client();
    for i in 0..12 {
        assert_eq!(c.get("/").expect("request").status, 503);
        p.wait_finished(i + 1);
    }
    let (_, v) = p.control_get("/v1/healthcheck/upstreams/u");
    let ejected = v["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| !n["ejected_until"].is_null())
        .count();
    assert_eq!(
        ejected, 1,
        "one of three is 33% <= 34%; two would be 67%: {v}"
    );
    let s = p.scrape();
    assert!(
        s.value(
            "weir_upstream_overflow_total",
            &[
                ("upstream", "upstreams/u"),
                ("limit", "max_ejection_percent")
            ]
        )
        .is_some_and(|n| n >= 1.0),
        "{}",
        s.text
    );
}

#[test]
fn max_requests_and_max_requests_per_node_answer_503_without_attempting() {
    let a = on("a", "127.0.0.28");
    let b = on("b", "127.0.0.29");
    a.set_mode(Mode::Hold);
    b.set_mode(Mode::Hold);
    let conf = Conf::new()
        .control()
        .route(
            Route::new("total", "/total").upstream(
                Upstream::nodes(&[a.addr, b.addr]).set("limits", json!({"max_requests": 2})),
            ),
        )
        .route(Route::new("per", "/per").upstream(
            Upstream::nodes(&[a.addr, b.addr]).set("limits", json!({"max_requests_per_node": 1})),
        ));
    let p = TestProxy::start(conf);
    for (path, limit) in [
        ("/total", "max_requests"),
        ("/per", "max_requests_per_node"),
    ] {
        let held_before = a.holding() + b.holding();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let mut c = p.client();
                let path = path.to_owned();
                std::thread::spawn(move || c.get(&path).map(|r| r.status))
            })
            .collect();
        let held = wait_for(Duration::from_secs(10), || {
            (a.holding() + b.holding() == held_before + 2).then_some(())
        });
        assert!(held.is_some(), "two requests reach the nodes");
        let hits = a.hits() + b.hits();
        let r = p.client().get(path).expect("request");
        assert_eq!(r.status, 503, "{path}");
        assert_eq!(r.body, r#"{"error_msg":"upstream overloaded"}"#);
        assert_eq!(r.header("x-weir-overflow"), Some(limit));
        assert_eq!(a.hits() + b.hits(), hits, "the overflow attempted no node");
        if path == "/per" {
            assert_eq!((a.holding(), b.holding()), (1, 1), "one per node");
        }
        a.release();
        b.release();
        for t in threads {
            assert_eq!(t.join().expect("thread").expect("request"), 200);
        }
        a.set_mode(Mode::Hold);
        b.set_mode(Mode::Hold);
        let s = p.scrape();
        let route_up = if path == "/total" {
            "routes/total"
        } else {
            "routes/per"
        };
        assert_eq!(
            s.value(
                "weir_upstream_overflow_total",
                &[("upstream", route_up), ("limit", limit)]
            ),
            Some(1.0)
        );
    }
}

/// `n` concurrent GETs of `path`; their statuses.
fn burst(p: &TestProxy, path: &str, n: usize) -> Vec<u16> {
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let mut c = p.client();
            let path = path.to_owned();
            std::thread::spawn(move || c.get(&path).map_or(0, |r| r.status))
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().unwrap_or_default())
        .collect()
}

#[test]
fn a_retry_budget_stops_a_retry_storm() {
    // Four nodes that never answer, a 300 ms read timeout, three retries.
    let nodes: Vec<Backend> = (0..4)
        .map(|i| {
            let b = Backend::start(&format!("slow{i}"));
            b.set_mode(Mode::Hang);
            b
        })
        .collect();
    let addrs: Vec<_> = nodes.iter().map(|b| b.addr).collect();
    let slow = || Upstream::nodes(&addrs).retries(3).timeout(1.0, 1.0, 0.3);
    let conf = Conf::new()
        .control()
        .route(Route::new("plain", "/plain").upstream(slow()))
        .route(Route::new("budget", "/budget").upstream(slow().set(
            "limits",
            json!({"retry_budget": {"percent": 10, "min_concurrency": 2}}),
        )));
    let p = TestProxy::start(conf);
    let attempts = || nodes.iter().map(Backend::hits).sum::<u64>();

    let statuses = burst(&p, "/plain", 20);
    assert!(statuses.iter().all(|&s| s == 504), "{statuses:?}");
    let plain = attempts();
    assert_eq!(plain, 80, "every request tries all four nodes");

    let statuses = burst(&p, "/budget", 20);
    assert!(statuses.iter().all(|&s| s == 504), "{statuses:?}");
    let budget = attempts() - plain;
    // 20 first attempts, and retries only while fewer than max(2, 10% of 20) are in flight:
    // each retry holds its place for its 300 ms timeout, and the burst lasts at most the four
    // attempts of one request (about 1.2 s), so at most 2 × 4 retries (one window spare).
    assert!(budget <= 20 + 2 * 5, "{budget} attempts");
    let s = p.scrape();
    let refused = s
        .value(
            "weir_upstream_overflow_total",
            &[("upstream", "routes/budget"), ("limit", "retry_budget")],
        )
        .unwrap_or_default();
    let retried = s
        .value(
            "weir_upstream_retries_total",
            &[("upstream", "routes/budget")],
        )
        .unwrap_or_default();
    assert_eq!(
        budget as f64,
        20.0 + retried,
        "attempts = requests + retries"
    );
    assert!(refused >= 10.0, "{refused} retries refused");
    // A refused retry answers the attempt's own failure, and says why.
    let r = p.client().get("/budget").expect("request");
    assert_eq!(r.status, 504);
}

#[test]
fn the_panic_threshold_at_its_boundary() {
    let live: Vec<Backend> = ["127.0.0.31", "127.0.0.32"]
        .iter()
        .map(|ip| on("live", ip))
        .collect();
    let dead = [
        Backend::refused_on([127, 0, 0, 33]),
        Backend::refused_on([127, 0, 0, 34]),
    ];
    let upstream = |id: &str, threshold: u32| {
        Upstream::list([
            Node::of(live[0].addr),
            Node::of(live[1].addr),
            Node::of(dead[0].addr()),
            Node::of(dead[1].addr()),
        ])
        .id(id)
        .active_check(json!({
            "type": "tcp",
            "healthy": {"interval": 1, "successes": 1},
            "unhealthy": {"interval": 1, "tcp_failures": 1}
        }))
        .set("healthy_panic_threshold", threshold)
    };
    let conf = Conf::new()
        .control()
        .upstream(upstream("at50", 50))
        .upstream(upstream("at51", 51))
        .route(Route::new("a", "/a").upstream_id("at50"))
        .route(Route::new("b", "/b").upstream_id("at51"));
    let p = TestProxy::start(conf);
    let down = wait_for(Duration::from_secs(10), || {
        let (_, v) = p.control_get("/v1/healthcheck");
        let unhealthy = v
            .as_array()?
            .iter()
            .flat_map(|u| u["nodes"].as_array().cloned().unwrap_or_default())
            .filter(|n| n["status"] == "unhealthy")
            .count();
        (unhealthy == 4).then_some(())
    });
    assert!(down.is_some(), "both dead nodes are down in both upstreams");
    let mut c = p.client();
    for i in 0..8 {
        assert_eq!(c.get("/a").expect("request").status, 200);
        assert_eq!(c.get("/b").expect("request").status, 200);
        p.wait_finished(2 * (i + 1));
    }
    let s = p.scrape();
    let dead_attempts = |up: &str| {
        s.sum(
            "weir_upstream_attempts_total",
            &[("upstream", up), ("outcome", "connect_failure")],
        )
    };
    // 2 of 4 usable is 50%: not below 50, no panic, the down nodes are skipped.
    assert_eq!(dead_attempts("upstreams/at50"), 0.0);
    assert_eq!(
        s.value(
            "weir_upstream_panic_total",
            &[("upstream", "upstreams/at50")]
        ),
        Some(0.0)
    );
    // 50% is below 51: panic, every node is eligible (the retries reach the live ones).
    assert!(dead_attempts("upstreams/at51") > 0.0, "{}", s.text);
    assert_eq!(
        s.value(
            "weir_upstream_panic_total",
            &[("upstream", "upstreams/at51")]
        ),
        Some(8.0)
    );
}

#[test]
fn slow_start_ramps_a_node_added_by_a_reload() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let new = Backend::start("new");
    let window = 3.0;
    let conf = |nodes: &[std::net::SocketAddr]| {
        Conf::new().route(Route::new("r", "/*").upstream(Upstream::nodes(nodes).set(
            "slow_start",
            json!({"window": window, "aggression": 1.0, "min_weight_percent": 10}),
        )))
    };
    let p = TestProxy::start(conf(&[a.addr, b.addr]));
    let mut c = p.client();
    // Nodes present before traffic are not ramped: an even split.
    let mut counts = std::collections::HashMap::new();
    for _ in 0..40 {
        *counts.entry(c.get("/").expect("request").body).or_insert(0) += 1;
    }
    assert_eq!((counts["a"], counts["b"]), (20, 20));

    p.apply(conf(&[a.addr, b.addr, new.addr]));
    let added = Instant::now();
    // The first slice: the new node weighs at most factor(t_end) of the others.
    let (mut picked, mut total) = (0u32, 0u32);
    while added.elapsed() < Duration::from_millis(600) {
        total += 1;
        if c.get("/").expect("request").body == "new" {
            picked += 1;
        }
    }
    let t = added.elapsed().as_secs_f64();
    let f = (t / window).clamp(0.1, 1.0);
    let bound = f / (2.0 + f);
    assert!(total >= 20, "only {total} requests in the slice");
    assert!(
        f64::from(picked) / f64::from(total) <= bound + 0.05,
        "{picked} of {total} to the new node within {t:.2} s (bound {bound:.3})"
    );
    // After the window: an even three-way split.
    std::thread::sleep(Duration::from_secs_f64(window + 0.2).saturating_sub(added.elapsed()));
    let mut counts = std::collections::HashMap::new();
    for _ in 0..60 {
        *counts.entry(c.get("/").expect("request").body).or_insert(0) += 1;
    }
    assert_eq!(
        (counts["a"], counts["b"], counts["new"]),
        (20, 20, 20),
        "{counts:?}"
    );
}

#[test]
fn a_node_back_from_an_ejection_is_ramped_by_slow_start() {
    let good = on("good", "127.0.0.35");
    let flaky = on("flaky", "127.0.0.36");
    flaky.set_mode(Mode::Status(500));
    let window = 3.0;
    let conf = Conf::new().control().upstream(
        Upstream::nodes(&[good.addr, flaky.addr])
            .id("u")
            .set(
                "outlier_detection",
                json!({"consecutive_5xx": 1, "base_ejection_time": 1, "max_ejection_percent": 50}),
            )
            .set(
                "slow_start",
                json!({"window": window, "aggression": 1.0, "min_weight_percent": 10}),
            ),
    );
    let p = TestProxy::start(conf.route(Route::new("r", "/*").upstream_id("u")));
    let mut c = p.client();
    while flaky.hits() == 0 {
        c.get("/").expect("request");
    }
    // Ejected after its first 500; it heals meanwhile.
    flaky.set_mode(Mode::Ok);
    let (_, v) = p.control_get("/v1/healthcheck/upstreams/u");
    let until = node_entry(&v, flaky.port())["ejected_until"]
        .as_f64()
        .expect("ejected");
    // Wait out the ejection (1 s) without traffic, then count the first slice.
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    while now() < until + 0.05 {
        std::thread::sleep(Duration::from_millis(20));
    }
    let back = Instant::now();
    let (mut picked, mut total) = (0u32, 0u32);
    while back.elapsed() < Duration::from_millis(600) {
        total += 1;
        if c.get("/").expect("request").body == "flaky" {
            picked += 1;
        }
    }
    let f = (back.elapsed().as_secs_f64() / window).clamp(0.1, 1.0);
    let bound = f / (1.0 + f);
    assert!(picked > 0, "the node is back");
    assert!(
        f64::from(picked) / f64::from(total) <= bound + 0.05,
        "{picked} of {total} within the first slice (bound {bound:.3})"
    );
}

#[test]
fn a_request_s_own_retries_never_use_up_its_limits() {
    let dead = [Backend::refused(), Backend::refused(), Backend::refused()];
    let addrs: Vec<_> = dead.iter().map(|d| d.addr()).collect();
    let conf = Conf::new()
        .route(
            Route::new("three", "/three").upstream(
                Upstream::nodes(&addrs)
                    .retries(2)
                    .set("limits", json!({"max_retries": 1})),
            ),
        )
        .route(
            Route::new("one", "/one").upstream(
                Upstream::nodes(&[addrs[0]])
                    .retries(2)
                    .set("limits", json!({"max_requests_per_node": 100})),
            ),
        );
    let p = TestProxy::start(conf);
    // One retry in flight at a time is enough for one request's two retries, one after the
    // other.
    let r = p.client().get("/three").expect("request");
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-weir-upstream-status"), Some("502, 502, 502"));
    assert_eq!(r.header("x-weir-overflow"), None);
    // A one-node upstream retries on its node, with a per-node limit too.
    let r = p.client().get("/one").expect("request");
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-weir-upstream-status"), Some("502, 502, 502"));
}
