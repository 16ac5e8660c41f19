//! The access log through the proxy: exact lines for known requests (retried ones included),
//! json, the default format, the request id, drops in `/metrics`, and SIGUSR1 reopening the
//! file under the real binary.

use std::path::{Path, PathBuf};
use std::time::Duration;
use weir_testkit::config::{Conf, Node, Route, Upstream};
use weir_testkit::{reserve_port, wait_for, Backend, TestProxy, WeirProcess};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-access-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

/// The file's lines, once it has `n` of them.
fn lines(path: &Path, n: usize) -> Vec<String> {
    let got = wait_for(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(path).ok()?;
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        (lines.len() >= n).then_some(lines)
    });
    got.unwrap_or_else(|| {
        panic!(
            "{} does not reach {n} lines: {:?}",
            path.display(),
            std::fs::read_to_string(path)
        )
    })
}

fn with_log(conf: Conf, path: &Path, format: &str) -> Conf {
    conf.set(
        "server",
        serde_json::json!({"access_log": {"path": path.display().to_string(), "format": format}}),
    )
}

#[test]
fn template_lines_list_every_attempt() {
    let d = temp_dir("template");
    let log = d.join("access.log");
    let ok = Backend::start_on("ok", "127.0.0.2:0");
    let fallback = Backend::start_on("fb", "127.0.0.5:0");
    let dead = Backend::refused_on([127, 0, 0, 3]);
    let conf = Conf::new()
        .route(Route::new("r1", "/a").upstream(Upstream::nodes(&[ok.addr])))
        .route(Route::new("r2", "/retry").upstream(Upstream::list([
            Node::of(dead.addr()).priority(1),
            Node::of(fallback.addr),
        ])));
    let p = TestProxy::start(with_log(
        conf,
        &log,
        "$remote_addr \"$request\" $status $body_bytes_sent [$upstream_addr] [$upstream_status] $route_id $consumer_name $http_x_tag ${upstream_scheme}://$upstream_host$upstream_uri",
    ));
    let mut c = p.client();
    let r = c
        .request("GET", "/a?x=1", &[("X-Tag", "t\"1")], b"")
        .expect("request");
    assert_eq!(r.status, 200);
    p.wait_finished(1);
    assert_eq!(c.get("/retry").expect("request").status, 200);
    p.wait_finished(2);
    assert_eq!(c.get("/none").expect("request").status, 404);
    // The test client's requests carry `Host: test`.
    let got = lines(&log, 3);
    assert_eq!(
        got,
        [
            format!(
                "127.0.0.1 \"GET /a?x=1 HTTP/1.1\" 200 2 [{}] [200] r1 - t\\x221 http://test/a?x=1",
                ok.addr
            ),
            format!(
                "127.0.0.1 \"GET /retry HTTP/1.1\" 200 2 [{}, {}] [502, 200] r2 - - http://test/retry",
                dead.addr(),
                fallback.addr
            ),
            // No route: Weir's own 404, no attempt.
            "127.0.0.1 \"GET /none HTTP/1.1\" 404 35 [-] [-] - - - -://--".to_owned(),
        ]
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn json_lines_carry_numbers_arrays_and_the_request_id() {
    let d = temp_dir("json");
    let log = d.join("access.json");
    let ok = Backend::start("ok");
    let dead = Backend::refused();
    let conf = Conf::new().control().route(
        Route::new("rid", "/id/*")
            .plugin("request-id", serde_json::json!({}))
            .upstream(Upstream::list([
                Node::of(dead.addr()).priority(1),
                Node::of(ok.addr),
            ])),
    );
    let p = TestProxy::start(with_log(conf, &log, "json"));
    let r = p.client().get("/id/1").expect("request");
    assert_eq!(r.status, 200);
    let id = r.header("x-request-id").expect("request id").to_owned();
    let got = lines(&log, 1);
    let v: serde_json::Value = serde_json::from_str(&got[0]).expect("a JSON line");
    assert_eq!(v["status"], 200);
    assert_eq!(v["body_bytes_sent"], 2);
    assert_eq!(v["request_method"], "GET");
    assert_eq!(v["uri"], "/id/1");
    assert_eq!(v["route_id"], "rid");
    assert_eq!(v["service_id"], serde_json::Value::Null);
    assert_eq!(v["consumer_name"], serde_json::Value::Null);
    assert_eq!(v["request_id"], id.as_str());
    assert_eq!(
        v["upstream_addr"],
        serde_json::json!([dead.addr().to_string(), ok.addr.to_string()])
    );
    assert_eq!(v["upstream_status"], serde_json::json!([502, 200]));
    assert_eq!(
        v["upstream_response_time"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(v["request_time"].is_number());
    // The access log's drops are in /metrics (none here).
    assert_eq!(
        p.scrape().value("weir_access_log_dropped_total", &[]),
        Some(0.0)
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_default_format_is_apisix_s() {
    let d = temp_dir("default");
    let log = d.join("access.log");
    let ok = Backend::start("ok");
    let p = TestProxy::start(with_log(
        Conf::new().route(Route::new("r", "/d").upstream(Upstream::nodes(&[ok.addr]))),
        &log,
        "default",
    ));
    let r = p
        .client()
        .request(
            "GET",
            "/d?q",
            &[("User-Agent", "probe/1"), ("Referer", "http://ref/")],
            b"",
        )
        .expect("request");
    assert_eq!(r.status, 200);
    let line = lines(&log, 1).remove(0);
    // `127.0.0.1 - - [01/Dec/2026:16:38:26 +0000] test "GET /d?q HTTP/1.1" 200 2 0.003
    // "http://ref/" "probe/1" 127.0.0.1:N 200 0.002 "http://test/d?q"`
    let (head, rest) = line.split_once(" [").expect("[time_local]");
    assert_eq!(head, "127.0.0.1 - -");
    let (time, rest) = rest.split_once("] ").expect("time_local]");
    assert_eq!(time.len(), "01/Dec/2026:16:38:26 +0000".len(), "{time}");
    let fields: Vec<&str> = rest.split(' ').collect();
    assert_eq!(fields[0], "test", "the test client's Host");
    assert_eq!(fields[1..4], ["\"GET", "/d?q", "HTTP/1.1\""]);
    assert_eq!(fields[4..6], ["200", "2"]);
    assert!(
        fields[6].parse::<f64>().is_ok(),
        "request_time {}",
        fields[6]
    );
    assert_eq!(fields[7..9], ["\"http://ref/\"", "\"probe/1\""]);
    assert_eq!(fields[9], ok.addr.to_string());
    assert_eq!(fields[10], "200");
    assert!(
        fields[11].parse::<f64>().is_ok(),
        "upstream_response_time {}",
        fields[11]
    );
    assert_eq!(fields[12], "\"http://test/d?q\"");
    assert_eq!(fields.len(), 13, "{line}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn sigusr1_reopens_the_file() {
    let a = Backend::start("a");
    let d = temp_dir("reopen");
    let log = d.join("access.log");
    let conf = d.join("weir.yaml");
    let reserved = reserve_port();
    let port = reserved.port;
    std::fs::write(
        &conf,
        format!(
            "server:\n  listen: [\"127.0.0.1:{port}\"]\n  threads: 1\n  pid_file: {d}/weir.pid\n  upgrade_sock: {d}/weir.sock\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 1\n  access_log: {{path: {d}/access.log, format: \"$request_uri $status\"}}\nroutes: [{{id: r, uri: /*, upstream: {{nodes: {{\"{}\": 1}}}}}}]\n",
            a.addr,
            d = d.display()
        ),
    )
    .expect("write");
    let w = WeirProcess::start(env!("CARGO_BIN_EXE_weir"), &conf, port);
    assert_eq!(w.get_path("/one").0, 200);
    assert_eq!(lines(&log, 1), ["/one 200"]);
    // logrotate: move the file away, then tell Weir.
    let rotated = d.join("access.log.1");
    std::fs::rename(&log, &rotated).expect("rename");
    assert_eq!(w.get_path("/two").0, 200);
    // Until the signal, lines still go to the moved file.
    assert_eq!(lines(&rotated, 2), ["/one 200", "/two 200"]);
    w.signal("-USR1");
    let reopened = wait_for(Duration::from_secs(10), || log.exists().then_some(()));
    assert!(
        reopened.is_some(),
        "the file is recreated on SIGUSR1:\n{}",
        w.log()
    );
    assert_eq!(w.get_path("/three").0, 200);
    assert_eq!(lines(&log, 1), ["/three 200"]);
    assert_eq!(
        lines(&rotated, 2).len(),
        2,
        "the rotated file keeps its lines"
    );
    drop(w);
    let _ = std::fs::remove_dir_all(&d);
}
