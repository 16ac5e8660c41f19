//! `/metrics` against known traffic: every count is asserted exactly, parsed from the text
//! format.
//!
//! Backends listen on distinct loopback addresses (127.0.0.0/8 is all loopback) because the
//! `node` label is the node's IP.

use std::path::Path;
use std::time::Duration;
use weir_testkit::config::{Conf, Node, Route, Upstream};
use weir_testkit::metrics::Scrape;
use weir_testkit::{reserve_port, wait_for, Backend, Client, Mode, TestProxy, WeirProcess};

fn ip_backend(name: &str, ip: &str) -> Backend {
    Backend::start_on(name, &format!("{ip}:0"))
}

#[test]
fn statuses_retries_timeouts_dead_nodes_and_connections_are_counted_exactly() {
    let ok = ip_backend("ok", "127.0.0.2");
    let err = ip_backend("err", "127.0.0.4");
    err.set_mode(Mode::Status(500));
    let fallback = ip_backend("fallback", "127.0.0.5");
    let slow = ip_backend("slow", "127.0.0.6");
    slow.set_mode(Mode::Delay(Duration::from_secs(3)));
    let dead = Backend::refused_on([127, 0, 0, 3]);
    let conf = Conf::new()
        .control()
        .upstream(Upstream::nodes(&[ok.addr]).id("u_ok"))
        .route(Route::new("r_ok", "/ok").upstream_id("u_ok"))
        .route(Route::new("r_err", "/err/*").upstream(Upstream::nodes(&[err.addr])))
        // The dead node is alone on the higher priority level: every request tries it first,
        // then falls back, whichever node served an earlier request.
        .route(Route::new("r_retry", "/retry").upstream(Upstream::list([
            Node::of(dead.addr()).priority(1),
            Node::of(fallback.addr),
        ])))
        .route(
            Route::new("r_slow", "/slow")
                .upstream(Upstream::nodes(&[slow.addr]).timeout(1.0, 1.0, 0.3)),
        );
    let p = TestProxy::start(conf);
    let mut c = p.client();
    let mut done = 0;
    let mut send = |c: &mut Client, path: &str, want: u16| {
        let r = c.get(path).expect("request");
        assert_eq!(r.status, want, "{path}: {}", r.body);
        done += 1;
        // The request (and its upstream connection's return to the pool) has finished.
        p.wait_finished(done);
    };
    for _ in 0..3 {
        send(&mut c, "/ok", 200);
    }
    for _ in 0..2 {
        send(&mut c, "/err/x", 500);
    }
    for _ in 0..4 {
        send(&mut c, "/retry", 200);
    }
    let mut c2 = p.client();
    send(&mut c2, "/slow", 504);
    // A request without a route runs no hook (the test proxy's finished count): poll.
    let r = p.client().get("/nothing-here").expect("request");
    assert_eq!(r.status, 404);
    let s = wait_for(Duration::from_secs(10), || {
        let s = p.scrape();
        (s.value("weir_http_requests_total", &[]) == Some(11.0)).then_some(s)
    })
    .expect("11 requests counted");
    let status =
        |code: &str, route: &str| s.sum("weir_http_status", &[("code", code), ("route", route)]);
    assert_eq!(status("200", "r_ok"), 3.0);
    assert_eq!(status("500", "r_err"), 2.0);
    assert_eq!(status("200", "r_retry"), 4.0);
    assert_eq!(status("504", "r_slow"), 1.0);
    assert_eq!(status("404", ""), 1.0);
    // Full label sets: the matched pattern, and the node that answered.
    assert_eq!(
        s.value(
            "weir_http_status",
            &[
                ("code", "200"),
                ("route", "r_ok"),
                ("matched_uri", "/ok"),
                ("matched_host", ""),
                ("service", ""),
                ("consumer", ""),
                ("node", "127.0.0.2"),
            ]
        ),
        Some(3.0)
    );
    assert_eq!(
        s.value(
            "weir_http_status",
            &[
                ("route", "r_err"),
                ("matched_uri", "/err/*"),
                ("node", "127.0.0.4")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        s.value(
            "weir_http_status",
            &[("route", "r_retry"), ("node", "127.0.0.5")]
        ),
        Some(4.0)
    );
    assert_eq!(
        s.value("weir_http_status", &[("route", ""), ("node", "")]),
        Some(1.0),
        "a request without a route has no node"
    );

    // Attempts by outcome, per node.
    let attempts = |up: &str, node: &str, outcome: &str| {
        s.value(
            "weir_upstream_attempts_total",
            &[("upstream", up), ("node", node), ("outcome", outcome)],
        )
    };
    assert_eq!(
        attempts("upstreams/u_ok", "127.0.0.2", "response"),
        Some(3.0)
    );
    assert_eq!(
        attempts("upstreams/u_ok", "127.0.0.2", "timeout"),
        Some(0.0)
    );
    assert_eq!(attempts("routes/r_err", "127.0.0.4", "response"), Some(2.0));
    assert_eq!(
        attempts("routes/r_retry", "127.0.0.3", "connect_failure"),
        Some(4.0)
    );
    assert_eq!(
        attempts("routes/r_retry", "127.0.0.5", "response"),
        Some(4.0)
    );
    assert_eq!(attempts("routes/r_slow", "127.0.0.6", "timeout"), Some(1.0));
    assert_eq!(
        attempts("routes/r_slow", "127.0.0.6", "response"),
        Some(0.0)
    );
    let retries = |up: &str| s.value("weir_upstream_retries_total", &[("upstream", up)]);
    assert_eq!(retries("routes/r_retry"), Some(4.0));
    assert_eq!(retries("upstreams/u_ok"), Some(0.0));
    assert_eq!(
        retries("routes/r_err"),
        Some(0.0),
        "500 is not in retry_on_status"
    );

    // One client connection, requests one after another: one new upstream connection, then
    // reused. The dead node never connected.
    let conns = |up: &str, node: &str, reused: &str| {
        s.value(
            "weir_upstream_connections_total",
            &[("upstream", up), ("node", node), ("reused", reused)],
        )
    };
    assert_eq!(conns("upstreams/u_ok", "127.0.0.2", "false"), Some(1.0));
    assert_eq!(conns("upstreams/u_ok", "127.0.0.2", "true"), Some(2.0));
    assert_eq!(conns("routes/r_retry", "127.0.0.3", "false"), Some(0.0));
    assert_eq!(
        s.value(
            "weir_upstream_active_requests",
            &[("upstream", "upstreams/u_ok"), ("node", "127.0.0.2")]
        ),
        Some(0.0)
    );

    // Latency histograms: one observation per request, `upstream` only with a response.
    let count =
        |ty: &str, route: &str| s.sum("weir_http_latency_count", &[("type", ty), ("route", route)]);
    assert_eq!(count("request", "r_ok"), 3.0);
    assert_eq!(count("upstream", "r_ok"), 3.0);
    assert_eq!(count("weir", "r_ok"), 3.0);
    assert_eq!(count("request", "r_retry"), 4.0);
    assert_eq!(count("request", "r_slow"), 1.0);
    assert_eq!(
        count("upstream", "r_slow"),
        0.0,
        "no response header arrived"
    );
    assert_eq!(
        s.value(
            "weir_http_latency_bucket",
            &[("type", "request"), ("route", "r_slow"), ("le", "+Inf")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value(
            "weir_http_latency_bucket",
            &[("type", "request"), ("route", "r_slow"), ("le", "200")]
        ),
        Some(0.0),
        "the read timeout is 300 ms"
    );
    // Bandwidth: at least the bodies ("ok" three times).
    let egress = s.sum("weir_bandwidth", &[("type", "egress"), ("route", "r_ok")]);
    assert!(egress >= 6.0, "{egress}");
    assert!(s.sum("weir_bandwidth", &[("type", "ingress"), ("route", "r_ok")]) > 0.0);

    // Types, and the families every scrape has.
    for (name, ty) in [
        ("weir_http_requests_total", "counter"),
        ("weir_http_status", "counter"),
        ("weir_http_latency", "histogram"),
        ("weir_bandwidth", "counter"),
        ("weir_upstream_attempts_total", "counter"),
        ("weir_upstream_retries_total", "counter"),
        ("weir_upstream_active_requests", "gauge"),
        ("weir_upstream_connections_total", "counter"),
        ("weir_node_info", "gauge"),
    ] {
        assert_eq!(s.types.get(name).map(String::as_str), Some(ty), "{name}");
    }
    assert_eq!(s.matching("weir_node_info", &[]).count(), 1);
}

#[test]
fn unchanged_series_survive_a_reload_and_removed_ones_leave() {
    let a = ip_backend("a", "127.0.0.7");
    let b = ip_backend("b", "127.0.0.8");
    let conf = |with_b: bool| {
        let mut c = Conf::new()
            .control()
            .route(Route::new("keep", "/keep").upstream(Upstream::nodes(&[a.addr])));
        if with_b {
            c = c.route(Route::new("gone", "/gone").upstream(Upstream::nodes(&[b.addr])));
        }
        c
    };
    let p = TestProxy::start(conf(true));
    let mut c = p.client();
    for (i, path) in ["/keep", "/keep", "/gone"].iter().enumerate() {
        assert_eq!(c.get(path).expect("request").status, 200);
        p.wait_finished(i as u64 + 1);
    }
    let s = p.scrape();
    assert_eq!(s.sum("weir_http_status", &[("route", "keep")]), 2.0);
    assert_eq!(s.sum("weir_http_status", &[("route", "gone")]), 1.0);

    p.apply(conf(false));
    assert_eq!(c.get("/keep").expect("request").status, 200);
    p.wait_finished(4);
    let s = p.scrape();
    assert_eq!(
        s.sum("weir_http_status", &[("route", "keep")]),
        3.0,
        "counting goes on across the reload"
    );
    assert_eq!(
        s.value(
            "weir_upstream_attempts_total",
            &[
                ("upstream", "routes/keep"),
                ("node", "127.0.0.7"),
                ("outcome", "response")
            ]
        ),
        Some(3.0)
    );
    assert_eq!(
        s.matching("weir_http_status", &[("route", "gone")]).count(),
        0
    );
    assert_eq!(
        s.matching("weir_http_latency_count", &[("route", "gone")])
            .count(),
        0
    );
    assert_eq!(
        s.matching(
            "weir_upstream_attempts_total",
            &[("upstream", "routes/gone")]
        )
        .count(),
        0,
        "a removed upstream leaves the output"
    );
    assert_eq!(s.value("weir_http_requests_total", &[]), Some(4.0));
}

#[test]
fn consumers_and_health_are_labelled() {
    let a = ip_backend("a", "127.0.0.9");
    let dead = Backend::refused_on([127, 0, 0, 10]);
    let conf = Conf::new()
        .control()
        .consumer(weir_testkit::config::Consumer::key_auth(
            "jack",
            "key-of-jack",
        ))
        .route(
            Route::new("auth", "/auth")
                .plugin("key-auth", serde_json::json!({}))
                .upstream(Upstream::nodes(&[a.addr])),
        )
        .upstream(
            Upstream::list([Node::of(a.addr), Node::of(dead.addr())])
                .id("uc")
                .active_check(serde_json::json!({
                    "type": "tcp",
                    "healthy": {"interval": 1, "successes": 1},
                    "unhealthy": {"interval": 1, "tcp_failures": 1}
                })),
        )
        .route(Route::new("checked", "/checked").upstream_id("uc"));
    let p = TestProxy::start(conf);
    let mut c = p.client();
    let r = c
        .request("GET", "/auth", &[("apikey", "key-of-jack")], b"")
        .expect("request");
    assert_eq!(r.status, 200);
    p.wait_finished(1);
    let r = c.get("/auth").expect("request");
    assert_eq!(r.status, 401);
    p.wait_finished(2);
    let s = p.scrape();
    assert_eq!(
        s.value(
            "weir_http_status",
            &[("route", "auth"), ("code", "200"), ("consumer", "jack")]
        ),
        Some(1.0)
    );
    assert_eq!(
        s.value(
            "weir_http_status",
            &[
                ("route", "auth"),
                ("code", "401"),
                ("consumer", ""),
                ("node", "")
            ]
        ),
        Some(1.0)
    );
    // Health: 1 for the live node, 0 for the dead one, once the checker has seen both.
    let gauge = |s: &Scrape, port: u16| {
        s.value(
            "weir_upstream_status",
            &[("name", "upstreams/uc"), ("port", &port.to_string())],
        )
    };
    let seen = wait_for(Duration::from_secs(10), || {
        let s = p.scrape();
        (gauge(&s, a.port()) == Some(1.0) && gauge(&s, dead.port()) == Some(0.0)).then_some(s)
    });
    let s = seen.expect("the checker marks the dead node down");
    assert_eq!(
        s.value(
            "weir_upstream_status",
            &[("name", "upstreams/uc"), ("ip", "127.0.0.10")]
        ),
        Some(0.0)
    );
}

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[test]
fn the_binary_counts_reloads_and_honours_the_metric_prefix() {
    let a = Backend::start("a");
    let d = std::env::temp_dir().join(format!("weir-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("mkdir");
    let conf_path = d.join("weir.yaml");
    let (proxy, control) = (reserve_port(), reserve_port());
    let conf = |uri: &str| {
        format!(
            "server:\n  listen: [\"127.0.0.1:{}\"]\n  threads: 1\n  pid_file: {d}/weir.pid\n  upgrade_sock: {d}/weir.sock\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 1\ncontrol: {{listen: \"127.0.0.1:{}\", metric_prefix: apisix_}}\nroutes: [{{id: r, uri: \"{uri}\", upstream: {{nodes: {{\"{}\": 1}}}}}}]\n",
            proxy.port,
            control.port,
            a.addr,
            d = d.display()
        )
    };
    write(&conf_path, &conf("/*"));
    let w = WeirProcess::start(env!("CARGO_BIN_EXE_weir"), &conf_path, proxy.port);
    let control_addr = ([127, 0, 0, 1], control.port).into();
    let scrape = || {
        wait_for(Duration::from_secs(10), || {
            std::panic::catch_unwind(|| Scrape::get(control_addr)).ok()
        })
        .expect("the control API answers")
    };
    assert_eq!(w.get().0, 200);
    let reloads = |s: &Scrape, result: &str| {
        s.value(
            "apisix_config_reloads_total",
            &[("source", "file"), ("result", result)],
        )
    };
    let s = scrape();
    assert_eq!(reloads(&s, "success"), Some(1.0), "the first load");
    assert_eq!(reloads(&s, "failure"), Some(0.0));
    assert!(s
        .value("apisix_config_last_reload_success_timestamp_seconds", &[])
        .is_some());
    assert!(
        s.samples.iter().all(|x| x.name.starts_with("apisix_")),
        "every name has the prefix:\n{}",
        s.text
    );
    assert!(s.value("apisix_http_status", &[("route", "r"), ("code", "200")]) == Some(1.0));

    write(&conf_path, &conf("/only/*"));
    let s = wait_for(Duration::from_secs(10), || {
        let s = scrape();
        (reloads(&s, "success") == Some(2.0)).then_some(s)
    })
    .expect("the reload is counted");
    assert_eq!(reloads(&s, "failure"), Some(0.0));
    write(&conf_path, "routes: [{id: r, uri: 42}]\n");
    wait_for(Duration::from_secs(10), || {
        (reloads(&scrape(), "failure") == Some(1.0)).then_some(())
    })
    .expect("the refused file is counted");
    assert_eq!(reloads(&scrape(), "success"), Some(2.0));
    drop(w);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_status_document_shows_routes_upstreams_and_nodes() {
    let a = ip_backend("a", "127.0.0.13");
    let dead = Backend::refused_on([127, 0, 0, 14]);
    let conf = Conf::new()
        .control()
        .upstream(
            Upstream::list([
                Node::of(a.addr).weight(3),
                Node::of(dead.addr()).priority(-1),
            ])
            .id("u1")
            .active_check(serde_json::json!({
                "type": "tcp",
                "healthy": {"interval": 1, "successes": 1},
                "unhealthy": {"interval": 1, "tcp_failures": 1}
            })),
        )
        .route(
            Route::uris("r1", &["/s/*", "/t"])
                .host("status.test")
                .methods(&["GET"])
                .upstream_id("u1"),
        )
        .route(Route::new("orphan", "/orphan"));
    let p = TestProxy::start(conf);
    let mut c = p.client();
    for i in 0..3 {
        let r = c
            .request("GET", "/s/x", &[("Host", "status.test")], b"")
            .expect("request");
        assert_eq!(r.status, 200);
        p.wait_finished(i + 1);
    }
    let (status, v) = p.control_get("/v1/status");
    assert_eq!(status, 200);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(v["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(v["uptime_seconds"].as_f64().is_some());
    assert!(v["now"].as_f64().is_some_and(|t| t > 1.7e9));
    let routes = v["routes"].as_array().expect("routes");
    let r1 = routes.iter().find(|r| r["id"] == "r1").expect("r1");
    assert_eq!(r1["uris"], serde_json::json!(["/s/*", "/t"]));
    assert_eq!(r1["hosts"], serde_json::json!(["status.test"]));
    assert_eq!(r1["methods"], serde_json::json!(["GET"]));
    assert_eq!(r1["upstream"], "upstreams/u1");
    assert_eq!(r1["service_id"], serde_json::Value::Null);
    assert_eq!(
        (r1["requests"].as_u64(), r1["errors"].as_u64()),
        (Some(3), Some(0))
    );
    assert!(r1["p99_ms"].as_f64().is_some());
    let orphan = routes.iter().find(|r| r["id"] == "orphan").expect("orphan");
    assert_eq!(orphan["upstream"], serde_json::Value::Null);
    assert_eq!(orphan["p99_ms"], serde_json::Value::Null);

    let ups = v["upstreams"].as_array().expect("upstreams");
    assert_eq!(ups.len(), 1);
    let u1 = &ups[0];
    assert_eq!(u1["key"], "upstreams/u1");
    assert_eq!(u1["type"], "roundrobin");
    assert_eq!(u1["scheme"], "http");
    assert_eq!(u1["checks"], true);
    assert_eq!(
        (u1["requests"].as_u64(), u1["retries"].as_u64()),
        (Some(3), Some(0))
    );
    let nodes = u1["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2);
    let live = &nodes[0];
    assert_eq!(live["host"], "127.0.0.13");
    assert_eq!(live["port"], a.port());
    assert_eq!(
        (live["weight"].as_u64(), live["priority"].as_i64()),
        (Some(3), Some(0))
    );
    assert_eq!(live["health"], "healthy");
    assert_eq!(live["ejected_until"], serde_json::Value::Null);
    assert_eq!(live["in_flight"], 0);
    assert_eq!(
        (live["requests"].as_u64(), live["errors"].as_u64()),
        (Some(3), Some(0))
    );
    let counts: Vec<u64> = live["latency"]["counts"]
        .as_array()
        .expect("counts")
        .iter()
        .filter_map(|n| n.as_u64())
        .collect();
    assert_eq!(counts.len(), 16);
    assert_eq!(counts.iter().sum::<u64>(), 3, "one observation per attempt");
    assert_eq!(live["latency"]["le"][15], serde_json::Value::Null);
    assert!(live["p99_ms"].as_f64().is_some());
    let backup = &nodes[1];
    assert_eq!(backup["priority"], -1);
    assert_eq!(backup["requests"], 0, "the lower level got nothing");
    assert_eq!(backup["p99_ms"], serde_json::Value::Null);
}
