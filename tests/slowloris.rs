//! Slowloris: 500 connections that trickle a request head (one header line every 200 ms,
//! never the empty line that ends it) and 500 that connect and send nothing, all opened at
//! once against the real binary. Each is closed by its timeout (`client_header_timeout` from
//! the head's first byte, `keepalive_timeout` for the silent ones), and a normal client's
//! requests keep succeeding throughout, fast.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_testkit::metrics::Scrape;
use weir_testkit::{raise_fd_limit, reserve_port, wait_for, Backend, Client, WeirProcess};

const TRICKLING: usize = 500;
const SILENT: usize = 500;
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How late a deadline may fire on a loaded machine (two cores shared with other suites).
const LATE: Duration = Duration::from_secs(4);
/// How early: timers and clocks on both sides, measured from the client's side.
const EARLY: Duration = Duration::from_millis(150);

/// A connection that trickles a head: how long after its first byte it was closed.
async fn trickle(addr: std::net::SocketAddr) -> Result<Duration, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let start = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.tick().await;
    loop {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(0) | Err(_) => return Ok(start.elapsed()),
                Ok(n) => return Err(format!("answered {:?}", String::from_utf8_lossy(&buf[..n]))),
            },
            _ = tick.tick() => {
                if s.write_all(b"X-Trickle: 1\r\n").await.is_err() {
                    return Ok(start.elapsed());
                }
            }
        }
        if start.elapsed() > HEADER_TIMEOUT + LATE * 2 {
            return Err("never closed".into());
        }
    }
}

/// A connection that sends nothing: how long after connecting it was closed.
async fn silent(addr: std::net::SocketAddr) -> Result<Duration, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let start = Instant::now();
    let mut buf = [0u8; 64];
    match tokio::time::timeout(KEEPALIVE_TIMEOUT + LATE * 2, s.read(&mut buf)).await {
        Ok(Ok(0) | Err(_)) => Ok(start.elapsed()),
        Ok(Ok(n)) => Err(format!("answered {:?}", String::from_utf8_lossy(&buf[..n]))),
        Err(_) => Err("never closed".into()),
    }
}

enum Deadline {
    After(Duration),
    Flag(Arc<Mutex<bool>>),
}

/// Requests on `c` every 5 ms until `until`: the time each took, and the failures.
fn measure(c: &mut Client, until: Deadline) -> (Vec<Duration>, Vec<String>) {
    let start = Instant::now();
    let (mut took, mut failures) = (Vec::new(), Vec::new());
    loop {
        let over = match &until {
            Deadline::After(d) => start.elapsed() >= *d,
            Deadline::Flag(f) => *f.lock().expect("lock"),
        };
        if over {
            return (took, failures);
        }
        let t = Instant::now();
        match c.get("/") {
            Ok(r) if r.status == 200 => took.push(t.elapsed()),
            other => failures.push(format!("{other:?}")),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn trickling_and_silent_connections_are_closed_and_cost_a_normal_client_nothing() {
    // 1000 client sockets here and 1000 in Weir (a child, inheriting the limit), plus spares.
    let limit = raise_fd_limit(8192);
    assert!(
        limit >= 2600,
        "RLIMIT_NOFILE is {limit}: too low for this test"
    );
    let b = Backend::start("b");
    let d = std::env::temp_dir().join(format!("weir-slowloris-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("mkdir");
    let port = reserve_port();
    let control = reserve_port();
    let conf = d.join("weir.yaml");
    std::fs::write(
        &conf,
        format!(
            "server:\n  listen: [\"127.0.0.1:{p}\"]\n  threads: 2\n  pid_file: {d}/weir.pid\n  upgrade_sock: {d}/weir.sock\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 1\n  client_header_timeout: {h}\n  keepalive_timeout: {k}\ncontrol: {{listen: \"127.0.0.1:{c}\"}}\nroutes: [{{id: r, uri: /*, upstream: {{nodes: {{\"127.0.0.1:{b}\": 1}}}}}}]\n",
            p = port.port,
            c = control.port,
            b = b.port(),
            h = HEADER_TIMEOUT.as_secs_f64(),
            k = KEEPALIVE_TIMEOUT.as_secs_f64(),
            d = d.display()
        ),
    )
    .expect("write");
    let weir = WeirProcess::start(env!("CARGO_BIN_EXE_weir"), &conf, port.port);
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port.port).into();

    // The normal client: one request every 5 ms on a kept-alive connection (opened before the
    // bad ones), each timed from writing the request to reading the response. First alone,
    // for a baseline of what this machine allows right now, then until every bad connection
    // is done.
    let mut c = Client::new(addr);
    c.timeout = Duration::from_secs(10);
    assert_eq!(c.get("/").expect("first request").status, 200);
    let (mut base, failures) = measure(&mut c, Deadline::After(Duration::from_millis(1500)));
    assert!(failures.is_empty(), "normal requests failed: {failures:?}");
    let done = Arc::new(Mutex::new(false));
    let d2 = Arc::clone(&done);
    let normal = std::thread::spawn(move || {
        let during = measure(&mut c, Deadline::Flag(d2));
        // And alone again, for the baseline after.
        let after = measure(&mut c, Deadline::After(Duration::from_millis(1500)));
        (during, after)
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (trickled, silenced) = rt.block_on(async {
        let t: Vec<_> = (0..TRICKLING)
            .map(|_| tokio::spawn(trickle(addr)))
            .collect();
        let s: Vec<_> = (0..SILENT).map(|_| tokio::spawn(silent(addr))).collect();
        let mut trickled = Vec::new();
        for h in t {
            trickled.push(h.await.expect("task"));
        }
        let mut silenced = Vec::new();
        for h in s {
            silenced.push(h.await.expect("task"));
        }
        (trickled, silenced)
    });
    *done.lock().expect("lock") = true;
    let ((mut took, failures), (mut after, after_failures)) = normal.join().expect("normal client");
    assert!(
        after_failures.is_empty(),
        "normal requests failed: {after_failures:?}"
    );
    let p99 = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() * 99 / 100]
    };

    let check = |what: &str, got: &[Result<Duration, String>], timeout: Duration| {
        for (i, r) in got.iter().enumerate() {
            match r {
                Ok(t) => assert!(
                    *t + EARLY >= timeout && *t <= timeout + LATE,
                    "{what} connection {i} closed after {t:?} (timeout {timeout:?})"
                ),
                Err(e) => panic!("{what} connection {i}: {e}\n{}", weir.log()),
            }
        }
    };
    check("trickling", &trickled, HEADER_TIMEOUT);
    check("silent", &silenced, KEEPALIVE_TIMEOUT);

    assert!(failures.is_empty(), "normal requests failed: {failures:?}");
    assert!(took.len() >= 100, "only {} normal requests", took.len());
    let base = p99(&mut base).max(p99(&mut after));
    let attacked = p99(&mut took);
    // The issue asks for a p99 under 100 ms "on this machine" while the bad connections are
    // held. On an idle machine it is a few milliseconds (debug builds), and the bound is the
    // issue's 100 ms. Two cores shared with other suites can be so loaded that Weir with no
    // bad client at all misses that (the baselines before and after, the larger); the bound is
    // then four times the baseline, so the test still shows what it is about: 1000 bad connections cost a normal
    // client little, not that the machine was idle. Only requests on the open connection are
    // timed (not connecting), and the slowest 1% of several hundred are left out.
    let bound = Duration::from_millis(100).max(base * 4);
    eprintln!(
        "normal client: baseline p99 {base:?}; during the attack {} requests, p50 {:?}, p99 {attacked:?}, max {:?}; bound {bound:?}",
        took.len(),
        took[took.len() / 2],
        took[took.len() - 1]
    );
    assert!(attacked < bound, "p99 {attacked:?} >= {bound:?}");

    // Counted by kind.
    let caddr = ([127, 0, 0, 1], control.port).into();
    let counted = wait_for(Duration::from_secs(10), || {
        let s = Scrape::get(caddr);
        let h = s.value("weir_downstream_timeouts_total", &[("kind", "header")])?;
        let k = s.value("weir_downstream_timeouts_total", &[("kind", "keepalive")])?;
        (h >= TRICKLING as f64 && k >= SILENT as f64).then_some(())
    });
    assert!(counted.is_some(), "timeouts not counted");
    drop(weir);
    let _ = std::fs::remove_dir_all(&d);
}
