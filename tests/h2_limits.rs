//! HTTP/2 client limits: the stream limits Weir advertises, the idle timeout, and a
//! rapid-reset burst (streams opened and cancelled at once, CVE-2023-44487) that neither
//! crashes Weir nor starves another client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_testkit::{reserve_port, Backend, Client, PortReservation, WeirProcess};

struct Weir {
    process: WeirProcess,
    addr: SocketAddr,
    dir: std::path::PathBuf,
    _port: PortReservation,
}

impl Drop for Weir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn weir(name: &str, b: &Backend, server: &str) -> Weir {
    let d = std::env::temp_dir().join(format!("weir-h2-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("mkdir");
    let port = reserve_port();
    let conf = d.join("weir.yaml");
    std::fs::write(
        &conf,
        format!(
            "server:\n  listen: [\"127.0.0.1:{p}\"]\n  threads: 2\n  pid_file: {d}/weir.pid\n  upgrade_sock: {d}/weir.sock\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 1\n{server}routes: [{{id: r, uri: /*, upstream: {{nodes: {{\"127.0.0.1:{b}\": 1}}}}}}]\n",
            p = port.port,
            b = b.port(),
            d = d.display()
        ),
    )
    .expect("write");
    let process = WeirProcess::start(env!("CARGO_BIN_EXE_weir"), &conf, port.port);
    Weir {
        process,
        addr: ([127, 0, 0, 1], port.port).into(),
        dir: d,
        _port: port,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

async fn h2_get(client: &mut h2::client::SendRequest<bytes::Bytes>) -> Result<u16, h2::Error> {
    let req = http::Request::get("http://x/").body(()).expect("request");
    let (resp, _) = client.clone().ready().await?.send_request(req, true)?;
    Ok(resp.await?.status().as_u16())
}

#[test]
fn advertised_stream_limit_and_idle_timeout() {
    let b = Backend::start("b");
    let w = weir(
        "idle",
        &b,
        "  http2_idle_timeout: 0.5\n  http2_max_concurrent_streams: 16\n",
    );
    runtime().block_on(async {
        let tcp = tokio::net::TcpStream::connect(w.addr)
            .await
            .expect("connect");
        let (mut client, mut conn) = h2::client::handshake(tcp).await.expect("handshake");
        // Drive the connection by hand for one request, to read Weir's settings after it.
        let status = tokio::select! {
            r = h2_get(&mut client) => r.expect("request"),
            r = &mut conn => panic!("connection ended: {r:?}"),
        };
        assert_eq!(status, 200);
        assert_eq!(conn.max_concurrent_send_streams(), 16);
        let conn = tokio::spawn(conn);
        // Idle from here: Weir closes the connection.
        let t = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(10), conn).await;
        assert!(ended.is_ok(), "the idle connection was not closed");
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(400), "closed after {took:?}");
    });
}

/// Open `n` streams on one connection and cancel each at once. Returns how many were sent
/// before Weir closed the connection (it may, with ENHANCE_YOUR_CALM).
async fn rapid_reset(addr: SocketAddr, n: usize) -> usize {
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    let Ok((client, conn)) = h2::client::handshake(tcp).await else {
        return 0;
    };
    let conn = tokio::spawn(conn);
    let mut sent = 0;
    for _ in 0..n {
        let Ok(mut c) = client.clone().ready().await else {
            break;
        };
        let req = http::Request::get("http://x/slow")
            .body(())
            .expect("request");
        match c.send_request(req, false) {
            Ok((_resp, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                sent += 1;
            }
            Err(_) => break,
        }
    }
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
    sent
}

#[test]
fn a_rapid_reset_burst_neither_crashes_weir_nor_starves_another_client() {
    let b = Backend::start("b");
    let mut w = weir("reset", &b, "");
    let addr = w.addr;
    let stop = Arc::new(AtomicBool::new(false));
    // Another client (HTTP/1.1 on its own connection) requests throughout.
    let s = Arc::clone(&stop);
    let victim = std::thread::spawn(move || {
        let mut c = Client::new(addr);
        c.timeout = Duration::from_secs(10);
        let (mut ok, mut failed) = (0u32, Vec::new());
        while !s.load(Ordering::SeqCst) {
            match c.get("/") {
                Ok(r) if r.status == 200 => ok += 1,
                other => failed.push(format!("{other:?}")),
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        (ok, failed)
    });
    let rt = runtime();
    let sent: Vec<usize> = rt.block_on(async {
        // And an HTTP/2 client on its own connection.
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut other, conn) = h2::client::handshake(tcp).await.expect("handshake");
        tokio::spawn(conn);
        let attacks: Vec<_> = (0..4)
            .map(|_| tokio::spawn(rapid_reset(addr, 5000)))
            .collect();
        let mut h2_ok = 0;
        while attacks.iter().any(|a| !a.is_finished()) {
            assert_eq!(h2_get(&mut other).await.expect("h2 request"), 200);
            h2_ok += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(h2_ok > 0);
        let mut sent = Vec::new();
        for a in attacks {
            sent.push(a.await.expect("attack"));
        }
        // Still served after the burst.
        assert_eq!(h2_get(&mut other).await.expect("h2 request"), 200);
        sent
    });
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = victim.join().expect("victim");
    eprintln!(
        "rapid reset: streams sent per connection {sent:?}, {} reached the node; the other client got {ok} responses",
        b.hits()
    );
    assert!(failed.is_empty(), "the other client failed: {failed:?}");
    assert!(ok > 0, "the other client got nothing");
    assert!(
        w.process.child.try_wait().expect("wait").is_none(),
        "weir exited:\n{}",
        w.process.log()
    );
    assert_eq!(w.process.get().0, 200);
}
