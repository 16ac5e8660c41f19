//! Client (downstream) limits in `server`: each trips as docs/hardening.md says (status or
//! close, the node untouched where stated, the `weir_downstream_*` metrics counted), normal
//! clients are unaffected, and bad values are refused by `weir -t`.
//!
//! The timeouts are fractions of a second here; an assertion that a connection was closed
//! "by its timeout" allows it to close up to several seconds late (a loaded machine), never
//! early by more than scheduling noise.

use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_testkit::config::{Conf, Route, Upstream};
use weir_testkit::{wait_for, Backend, Client, TestProxy};

/// Extra time a deadline may take to fire on a loaded machine.
const MARGIN: Duration = Duration::from_secs(5);

fn proxy_with(server: Value, node: SocketAddr) -> TestProxy {
    TestProxy::start(
        Conf::new()
            .set("server", server)
            .control()
            .route(Route::new("r", "/*").upstream(Upstream::nodes(&[node]))),
    )
}

fn proxy(server: Value) -> (Backend, TestProxy) {
    let b = Backend::start("b");
    let addr: SocketAddr = ([127, 0, 0, 1], b.port()).into();
    let p = proxy_with(server, addr);
    (b, p)
}

fn connect(p: &TestProxy) -> TcpStream {
    let s = TcpStream::connect(p.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Read until the server closes the connection (end of stream or reset): what was read.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "the connection was not closed within the read timeout; read {:?}",
                    String::from_utf8_lossy(&out)
                )
            }
            Err(_) => return out,
        }
    }
}

fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn metric(p: &TestProxy, name: &str, labels: &[(&str, &str)]) -> f64 {
    p.scrape().value(name, labels).unwrap_or(0.0)
}

/// Wait until the metric is at least `n`.
fn wait_metric(p: &TestProxy, name: &str, labels: &[(&str, &str)], n: f64) {
    let got = wait_for(Duration::from_secs(10), || {
        (metric(p, name, labels) >= n).then_some(())
    });
    assert!(
        got.is_some(),
        "{name}{labels:?} stayed at {} (< {n})",
        metric(p, name, labels)
    );
}

#[test]
fn keepalive_timeout_closes_a_silent_connection_and_an_idle_one() {
    let (b, p) = proxy(json!({"keepalive_timeout": 0.3}));
    // Silent from the start.
    let mut silent = connect(&p);
    let t = Instant::now();
    assert!(read_to_close(&mut silent).is_empty());
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(300) + MARGIN,
        "closed after {took:?}"
    );
    // Idle after a request.
    let mut c = Client::new(p.addr);
    assert_eq!(c.get("/").expect("request").status, 200);
    let mut s = connect(&p);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    let t = Instant::now();
    let got = read_to_close(&mut s);
    assert_eq!(
        status_of(&got),
        Some(200),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(t.elapsed() < Duration::from_millis(300) + MARGIN);
    assert_eq!(b.hits(), 2);
    wait_metric(
        &p,
        "weir_downstream_timeouts_total",
        &[("kind", "keepalive")],
        2.0,
    );
}

#[test]
fn a_client_active_within_keepalive_timeout_keeps_its_connection() {
    let (b, p) = proxy(json!({"keepalive_timeout": 1}));
    let mut c = Client::new(p.addr);
    for _ in 0..5 {
        assert_eq!(c.get("/").expect("request").status, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    // One connection served all five (the start-up probe's connection may take a moment to
    // leave the count).
    let one = wait_for(Duration::from_secs(10), || {
        (metric(&p, "weir_downstream_connections", &[]) == 1.0).then_some(())
    });
    assert!(
        one.is_some(),
        "{} connections open",
        metric(&p, "weir_downstream_connections", &[])
    );
    assert_eq!(b.hits(), 5);
}

#[test]
fn client_header_timeout_closes_a_trickling_head() {
    let (b, p) = proxy(json!({"client_header_timeout": 0.5, "keepalive_timeout": 30}));
    let mut s = connect(&p);
    let t = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").expect("send");
    // One header line every 100 ms: each read is quick, the head never ends.
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let closed = loop {
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => break t.elapsed(),
            Ok(n) => panic!("unexpected answer {:?}", String::from_utf8_lossy(&buf[..n])),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break t.elapsed(),
        }
        assert!(
            t.elapsed() < Duration::from_millis(500) + MARGIN,
            "never closed"
        );
        if s.write_all(b"X-Slow: 1\r\n").is_err() {
            break t.elapsed();
        }
    };
    assert!(
        closed >= Duration::from_millis(450),
        "closed after {closed:?}"
    );
    assert_eq!(b.hits(), 0, "the node saw the request");
    wait_metric(
        &p,
        "weir_downstream_timeouts_total",
        &[("kind", "header")],
        1.0,
    );
    // A normal request is unaffected.
    assert_eq!(Client::new(p.addr).get("/").expect("request").status, 200);
}

#[test]
fn client_body_timeout_fails_a_stalled_body_with_408() {
    let (_b, p) = proxy(json!({"client_body_timeout": 0.5}));
    let mut s = connect(&p);
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .expect("send");
    let t = Instant::now();
    let got = read_to_close(&mut s);
    let took = t.elapsed();
    assert_eq!(
        status_of(&got),
        Some(408),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(500) + MARGIN,
        "answered after {took:?}"
    );
    wait_metric(
        &p,
        "weir_downstream_timeouts_total",
        &[("kind", "body")],
        1.0,
    );
    // A body sent in pieces closer together than the timeout is fine.
    let mut s = connect(&p);
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\nConnection: close\r\n\r\n")
        .expect("send");
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(150));
        s.write_all(b"01234").expect("send");
    }
    assert_eq!(status_of(&read_to_close(&mut s)), Some(200));
}

/// A node that answers every request with a large body.
fn big_node(bytes: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {bytes}\r\n\r\n");
                let _ = s.write_all(head.as_bytes());
                let chunk = vec![b'x'; 65536];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if s.write_all(&chunk[..n]).is_err() {
                        return;
                    }
                    left -= n;
                }
            });
        }
    });
    addr
}

#[test]
fn send_timeout_closes_a_client_that_stops_reading() {
    const BODY: usize = 256 << 20;
    let p = proxy_with(json!({"send_timeout": 0.5}), big_node(BODY));
    let mut s = connect(&p);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("send");
    // Not reading: the socket buffers fill and Weir's writes stall.
    wait_metric(
        &p,
        "weir_downstream_timeouts_total",
        &[("kind", "send")],
        1.0,
    );
    let got = read_to_close(&mut s);
    assert!(got.len() < BODY, "the whole body arrived");
    assert_eq!(status_of(&got), Some(200));
}

#[test]
fn client_max_body_size_refuses_a_declared_body_before_the_node() {
    let (b, p) = proxy(json!({"client_max_body_size": 1000}));
    let mut c = Client::new(p.addr);
    let r = c.request("POST", "/", &[], &[b'a'; 1001]).expect("request");
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    assert_eq!(b.hits(), 0, "the node saw the request");
    let mut c = Client::new(p.addr);
    let r = c.request("POST", "/", &[], &[b'a'; 1000]).expect("request");
    assert_eq!(r.status, 200);
    assert_eq!(b.hits(), 1);
    wait_metric(
        &p,
        "weir_downstream_rejected_total",
        &[("reason", "body_too_large")],
        1.0,
    );
}

/// A node that records every byte it receives and never answers.
fn recording_node() -> (SocketAddr, Arc<Mutex<Vec<u8>>>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = Arc::clone(&got);
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let g = Arc::clone(&g);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    g.lock().expect("lock").extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    (addr, got)
}

#[test]
fn client_max_body_size_stops_a_chunked_body_as_it_passes_the_limit() {
    let (node, seen) = recording_node();
    let p = proxy_with(json!({"client_max_body_size": 1000}), node);
    let mut s = connect(&p);
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .expect("send");
    let chunk = format!("1f4\r\n{}\r\n", "a".repeat(500));
    for _ in 0..6 {
        if s.write_all(chunk.as_bytes()).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let got = read_to_close(&mut s);
    assert_eq!(
        status_of(&got),
        Some(413),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // The node got at most the bytes below the limit, and never the final chunk.
    let seen = seen.lock().expect("lock").clone();
    let text = String::from_utf8_lossy(&seen);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(
        !body.contains("0\r\n\r\n"),
        "the node saw a complete body: {body:?}"
    );
    assert!(
        body.matches('a').count() <= 1000,
        "the node got {} bytes",
        body.len()
    );
    wait_metric(
        &p,
        "weir_downstream_rejected_total",
        &[("reason", "body_too_large")],
        1.0,
    );
}

#[test]
fn long_request_lines_get_414_and_large_heads_431() {
    let (b, p) = proxy(json!({"large_client_header_buffers": {"count": 2, "size": 1024}}));
    let ask = |head: String| {
        let mut s = connect(&p);
        s.write_all(head.as_bytes()).expect("send");
        let got = read_to_close(&mut s);
        status_of(&got)
    };
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "u".repeat(1100));
    assert_eq!(ask(long_uri), Some(414));
    let long_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "h".repeat(1100)
    );
    assert_eq!(ask(long_header), Some(431));
    let h = "h".repeat(900);
    let large_head = format!("GET / HTTP/1.1\r\nHost: x\r\nA: {h}\r\nB: {h}\r\nC: {h}\r\n\r\n");
    assert_eq!(ask(large_head), Some(431));
    assert_eq!(b.hits(), 0, "the node saw a refused request");
    // Just under the limits: served.
    let fits = format!(
        "GET /{} HTTP/1.1\r\nHost: x\r\nA: {}\r\nConnection: close\r\n\r\n",
        "u".repeat(900),
        "h".repeat(900)
    );
    assert_eq!(ask(fits), Some(200));
    assert_eq!(b.hits(), 1);
    wait_metric(
        &p,
        "weir_downstream_rejected_total",
        &[("reason", "uri_too_long")],
        1.0,
    );
    wait_metric(
        &p,
        "weir_downstream_rejected_total",
        &[("reason", "header_too_large")],
        2.0,
    );
}

#[test]
fn more_header_lines_than_pingora_parses_get_431() {
    let (b, p) = proxy(json!({}));
    let mut head = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..300 {
        head.push_str(&format!("X-{i}: v\r\n"));
    }
    head.push_str("\r\n");
    let mut s = connect(&p);
    s.write_all(head.as_bytes()).expect("send");
    assert_eq!(status_of(&read_to_close(&mut s)), Some(431));
    assert_eq!(b.hits(), 0);
}

#[test]
fn max_connections_closes_connections_beyond_the_cap_at_once() {
    let (_b, p) = proxy(json!({"max_connections": 3}));
    let mut kept: Vec<Client> = (0..3).map(|_| Client::new(p.addr)).collect();
    for c in &mut kept {
        assert_eq!(c.get("/").expect("request").status, 200);
    }
    let mut extra = connect(&p);
    let t = Instant::now();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        read_to_close(&mut extra).is_empty(),
        "the extra connection was served"
    );
    assert!(t.elapsed() < MARGIN);
    wait_metric(&p, "weir_downstream_connections_refused_total", &[], 1.0);
    // Once one closes, a new connection is served again.
    drop(kept.pop());
    let served = wait_for(Duration::from_secs(10), || {
        let mut c = Client::new(p.addr);
        c.get("/").ok().filter(|r| r.status == 200)
    });
    assert!(served.is_some(), "no connection served after one closed");
}

#[test]
fn http2_clients_are_still_served() {
    // h2c with prior knowledge goes through the same connection loop.
    let (_b, p) = proxy(json!({"keepalive_timeout": 5}));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(p.addr)
            .await
            .expect("connect");
        let (mut client, conn) = h2::client::handshake(tcp).await.expect("handshake");
        tokio::spawn(conn);
        for _ in 0..3 {
            let req = http::Request::get("http://x/").body(()).expect("request");
            let (resp, _) = client.send_request(req, true).expect("send");
            assert_eq!(resp.await.expect("response").status(), 200);
        }
    });
}

fn weir_t(text: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("weir-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let f = dir.join(format!("t{}.yaml", text.len()));
    std::fs::write(&f, text).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["-t", "-c"])
        .arg(&f)
        .env("RUST_LOG", "off")
        .output()
        .expect("run weir");
    let _ = std::fs::remove_file(&f);
    let _ = std::fs::remove_dir(&dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn bad_values_are_refused_with_their_path() {
    for (field, value, want) in [
        (
            "client_header_timeout",
            "0",
            "server.client_header_timeout (line 2, column 3): must be > 0, got 0",
        ),
        (
            "client_body_timeout",
            "-1",
            "server.client_body_timeout (line 2, column 3): must be > 0, got -1",
        ),
        ("keepalive_timeout", "\"75s\"", "server.keepalive_timeout"),
        (
            "send_timeout",
            "100000",
            "server.send_timeout (line 2, column 3): must be <= 86400 seconds, got 100000",
        ),
        ("client_max_body_size", "-5", "server.client_max_body_size"),
        ("max_connections", "1.5", "server.max_connections"),
        (
            "large_client_header_buffers",
            "{size: 10}",
            "server.large_client_header_buffers.size",
        ),
        (
            "large_client_header_buffers",
            "{count: 0}",
            "server.large_client_header_buffers.count",
        ),
        (
            "large_client_header_buffers",
            "{count: 1024, size: 65536}",
            "count × size must be <= 1048576 bytes, got 67108864",
        ),
        (
            "large_client_header_buffers",
            "{cont: 4}",
            "server.large_client_header_buffers.cont",
        ),
        (
            "http2_max_concurrent_streams",
            "0",
            "server.http2_max_concurrent_streams",
        ),
    ] {
        let (ok, out) = weir_t(&format!("server:\n  {field}: {value}\nroutes: []\n"));
        assert!(!ok, "{field}: {value} was accepted");
        assert!(
            out.contains(want),
            "{field}: {value}: want {want:?} in\n{out}"
        );
    }
    let (ok, out) = weir_t(
        "server:\n  client_header_timeout: 0.5\n  client_body_timeout: 10\n  keepalive_timeout: 75\n  send_timeout: 60\n  client_max_body_size: 1048576\n  large_client_header_buffers: {count: 4, size: 8192}\n  max_connections: 10000\n  http2_idle_timeout: 180\n  http2_max_concurrent_streams: 128\nroutes: []\n",
    );
    assert!(ok, "{out}");
}

#[test]
fn a_request_shorter_than_the_http2_preface_is_answered_at_once() {
    // Pingora's own h2c detection waits for 24 bytes; this request has 19 and starts like the
    // preface ("P").
    let (b, p) = proxy(json!({"client_header_timeout": 30}));
    let mut s = connect(&p);
    s.write_all(b"POST / HTTP/1.0\r\n\r\n").expect("send");
    let t = Instant::now();
    let got = read_to_close(&mut s);
    assert_eq!(
        status_of(&got).map(|c| c / 100),
        Some(2),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(t.elapsed() < MARGIN, "answered after {:?}", t.elapsed());
    assert_eq!(b.hits(), 1);
}

#[test]
fn http2_requests_over_client_max_body_size_get_413() {
    let (b, p) = proxy(json!({"client_max_body_size": 1000}));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(p.addr)
            .await
            .expect("connect");
        let (client, conn) = h2::client::handshake(tcp).await.expect("handshake");
        tokio::spawn(conn);
        let post = |len: usize| {
            let req = http::Request::post("http://x/")
                .header("content-length", len)
                .body(())
                .expect("request");
            let (resp, mut body) = client.clone().send_request(req, false).expect("send");
            body.send_data(bytes::Bytes::from(vec![b'a'; len]), true)
                .expect("body");
            resp
        };
        let big = post(2000);
        assert_eq!(big.await.expect("response").status(), 413);
        let small = post(1000);
        assert_eq!(small.await.expect("response").status(), 200);
    });
    assert_eq!(b.hits(), 1, "the node saw the large request");
}
