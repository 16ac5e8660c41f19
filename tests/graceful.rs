//! Graceful operations of the real `weir` binary under a steady request stream: SIGTERM lets
//! every request that had started finish, and a graceful upgrade (`weir -u`, then SIGQUIT to
//! the old process) loses no request.
//!
//! The clients behave as a careful HTTP/1.1 client does, and the tests count a request
//! **lost** only when it was sent and no complete response came back:
//!
//! - a response with `Connection: close` ends the connection: the next request opens a new one;
//! - before a request goes out on an idle keep-alive connection, the client checks that the
//!   server has not closed it (a FIN or reset already received: the socket is readable with
//!   nothing pending); if it has, the request goes out on a new connection instead. The
//!   request was never sent on the closed connection, so nothing is retried and nothing is
//!   lost;
//! - a request whose bytes were written is never retried: no response (EOF or reset before a
//!   complete one) counts as lost.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use weir_testkit::{reserve_port, wait_for, Backend, Mode, WeirProcess};

/// What one request got.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    /// 200 with the backend's body.
    Ok,
    /// Any other complete response.
    Status(u16, String),
    /// Never sent: the connection could not be opened (refused) or the write failed.
    NotSent(String),
    /// Sent, and no complete response came back.
    Lost(String),
}

/// A request and what it got; `started` is when its bytes were about to be written.
#[derive(Debug, Clone)]
struct Record {
    started: Instant,
    /// When the response (or the failure) came.
    ended: Instant,
    got: Got,
    client: usize,
    keepalive: bool,
}

/// A careful HTTP/1.1 client (see the module documentation).
struct Careful {
    addr: SocketAddr,
    keepalive: bool,
    conn: Option<BufReader<TcpStream>>,
    /// Idle keep-alive connections found closed by the server before a request was sent.
    stale: u64,
}

impl Careful {
    fn new(addr: SocketAddr, keepalive: bool) -> Careful {
        Careful {
            addr,
            keepalive,
            conn: None,
            stale: 0,
        }
    }

    /// Whether the server closed this idle connection: nothing is pending on an idle
    /// keep-alive connection, so readable means a FIN or a reset.
    fn closed_by_server(c: &BufReader<TcpStream>) -> bool {
        if !c.buffer().is_empty() {
            return true;
        }
        let s = c.get_ref();
        let _ = s.set_nonblocking(true);
        let mut b = [0u8; 1];
        let closed = !matches!(s.peek(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock);
        let _ = s.set_nonblocking(false);
        closed
    }

    fn get(&mut self, path: &str) -> (Instant, Got) {
        if self.conn.as_ref().is_some_and(Self::closed_by_server) {
            self.stale += 1;
            self.conn = None;
        }
        let mut c = match self.conn.take() {
            Some(c) => c,
            None => {
                let opened = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))
                    .and_then(|s| {
                        s.set_nodelay(true)?;
                        s.set_read_timeout(Some(Duration::from_secs(30)))?;
                        Ok(s)
                    });
                match opened {
                    Ok(s) => BufReader::new(s),
                    Err(e) => return (Instant::now(), Got::NotSent(format!("connect: {e}"))),
                }
            }
        };
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: graceful\r\n{}\r\n",
            if self.keepalive {
                ""
            } else {
                "Connection: close\r\n"
            }
        );
        let started = Instant::now();
        if let Err(e) = c.get_mut().write_all(req.as_bytes()) {
            return (started, Got::NotSent(format!("write: {e}")));
        }
        let got = match read_response(&mut c) {
            Ok((status, body, close)) => {
                if self.keepalive && !close {
                    self.conn = Some(c);
                }
                if status == 200 {
                    Got::Ok
                } else {
                    Got::Status(status, body)
                }
            }
            Err(e) => Got::Lost(e.to_string()),
        };
        (started, got)
    }
}

/// (status, body, `Connection: close`).
fn read_response(c: &mut BufReader<TcpStream>) -> std::io::Result<(u16, String, bool)> {
    let mut line = String::new();
    if c.read_line(&mut line)? == 0 {
        return Err(std::io::Error::new(
            ErrorKind::UnexpectedEof,
            "closed before any response byte",
        ));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let (mut len, mut close) = (0usize, false);
    loop {
        let mut h = String::new();
        if c.read_line(&mut h)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("content-length") {
                len = v
                    .parse()
                    .map_err(|_| std::io::Error::other(format!("bad Content-Length {v:?}")))?;
            } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
    }
    let mut body = vec![0; len];
    c.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned(), close))
}

/// Clients sending back to back until `stop`, half keep-alive, half a new connection per
/// request.
struct Stream {
    stop: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<Record>>>,
    threads: Vec<thread::JoinHandle<u64>>,
}

impl Stream {
    fn start(addr: SocketAddr, path: &'static str, clients: usize) -> Stream {
        let stop = Arc::new(AtomicBool::new(false));
        let records = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|i| {
                let (stop, records) = (Arc::clone(&stop), Arc::clone(&records));
                thread::spawn(move || {
                    let keepalive = i % 2 == 0;
                    let mut c = Careful::new(addr, keepalive);
                    while !stop.load(Ordering::SeqCst) {
                        let (started, got) = c.get(path);
                        let refused = matches!(got, Got::NotSent(_));
                        records.lock().expect("lock").push(Record {
                            started,
                            ended: Instant::now(),
                            got,
                            client: i,
                            keepalive,
                        });
                        if refused {
                            // Do not spin on a closed port.
                            thread::sleep(Duration::from_millis(5));
                        }
                    }
                    c.stale
                })
            })
            .collect();
        Stream {
            stop,
            records,
            threads,
        }
    }

    fn count(&self) -> usize {
        self.records.lock().expect("lock").len()
    }

    /// Stop, and return every record and the stale connections skipped.
    fn finish(self) -> (Vec<Record>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let stale = self
            .threads
            .into_iter()
            .map(|t| t.join().expect("client thread"))
            .sum();
        let records = self.records.lock().expect("lock").clone();
        (records, stale)
    }
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-graceful-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn config(d: &Path, port: u16, slow: &Backend, fast: &Backend, grace: u64) -> String {
    format!(
        "server:
  listen: [\"127.0.0.1:{port}\"]
  threads: 2
  pid_file: {d}/weir.pid
  upgrade_sock: {d}/weir.sock
  grace_period_seconds: {grace}
  graceful_shutdown_timeout_seconds: 1
config_source: {{file: {{watch: false}}}}
routes:
  - {{id: slow, uri: /slow/*, upstream: {{nodes: {{\"{}\": 1}}}}}}
  - {{id: fast, uri: /fast/*, upstream: {{nodes: {{\"{}\": 1}}}}}}
",
        slow.addr,
        fast.addr,
        d = d.display()
    )
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

fn summary(records: &[Record]) -> String {
    let mut ok = 0;
    let mut other = 0;
    let mut not_sent = 0;
    let mut lost = 0;
    let mut lost_keepalive = 0;
    for r in records {
        match r.got {
            Got::Ok => ok += 1,
            Got::Status(..) => other += 1,
            Got::NotSent(_) => not_sent += 1,
            Got::Lost(_) => {
                lost += 1;
                lost_keepalive += u32::from(r.keepalive);
            }
        }
    }
    format!(
        "{} requests: 200 {ok}, other status {other}, not sent {not_sent}, lost {lost} \
         ({lost_keepalive} on keep-alive connections)",
        records.len()
    )
}

#[test]
fn sigterm_under_load_finishes_every_request_that_started() {
    let slow = Backend::start("slow");
    slow.set_mode(Mode::Delay(Duration::from_millis(1500)));
    let fast = Backend::start("fast");
    let d = dir("term");
    let conf = d.join("weir.yaml");
    let reserved = reserve_port();
    let port = reserved.port;
    let grace = 5;
    std::fs::write(&conf, config(&d, port, &slow, &fast, grace)).expect("write");
    let mut w = WeirProcess::start(env!("CARGO_BIN_EXE_weir"), &conf, port);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    // Eight slow requests in flight at the backend, each on its own connection...
    const SLOW: usize = 8;
    let slow_clients: Vec<_> = (0..SLOW)
        .map(|i| {
            thread::spawn(move || {
                let mut c = Careful::new(addr, i % 2 == 0);
                c.get("/slow/x")
            })
        })
        .collect();
    let reached = wait_for(Duration::from_secs(10), || {
        (slow.hits() == SLOW as u64).then_some(())
    });
    assert!(
        reached.is_some(),
        "the slow requests never reached the backend"
    );
    // ...and a stream of fast ones.
    let stream = Stream::start(addr, "/fast/x", 6);
    assert!(
        wait_for(Duration::from_secs(10), || (stream.count() >= 50)
            .then_some(()))
        .is_some(),
        "the stream does not flow"
    );

    // A request that started before `kill` was spawned started before the signal, and must be
    // answered. (Those that started while `kill` ran, a few milliseconds, may have started
    // after it: they are reported, not judged.)
    let signalled = Instant::now();
    signal(w.child.id(), "-TERM");
    let kill_returned = Instant::now();

    // The listener closes while the slow requests are still in flight: new connections are
    // refused, and the process is still there.
    let refused = wait_for(Duration::from_secs(5), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200))
            .is_err()
            .then_some(signalled.elapsed())
    });
    let alive_when_refused = w.child.try_wait().ok().flatten().is_none();

    let exited = wait_for(Duration::from_secs(grace + 10), || {
        w.child.try_wait().ok().flatten()
    });
    let exit_after = signalled.elapsed();
    let (records, stale) = stream.finish();
    let slow_got: Vec<_> = slow_clients
        .into_iter()
        .map(|t| t.join().expect("slow client"))
        .collect();

    let (before, after): (Vec<Record>, Vec<Record>) =
        records.into_iter().partition(|r| r.started < signalled);
    let during: Vec<Record> = after
        .iter()
        .filter(|r| r.started < kill_returned)
        .cloned()
        .collect();
    println!(
        "SIGTERM: slow requests {SLOW} (1.5 s each) answered {}; stream before the signal: {}; \
         while `kill` ran ({:?}): {}; after it: {}; stale keep-alive connections skipped {stale}; new connections refused \
         {:?} after the signal; exit {:?} after the signal ({:?})",
        slow_got.iter().filter(|(_, g)| *g == Got::Ok).count(),
        summary(&before),
        kill_returned - signalled,
        summary(&during),
        summary(&after),
        refused,
        exit_after,
        exited,
    );

    for (i, (_, got)) in slow_got.iter().enumerate() {
        assert_eq!(
            *got,
            Got::Ok,
            "slow request {i} was not answered:\n{}",
            w.log()
        );
    }
    let failed: Vec<_> = before
        .iter()
        .filter(|r| r.got != Got::Ok)
        .map(|r| {
            format!(
                "client {} ({}) started {:?} before the signal, ended {:?} after it: {:?}",
                r.client,
                if r.keepalive {
                    "keep-alive"
                } else {
                    "new connection"
                },
                signalled - r.started,
                r.ended.saturating_duration_since(signalled),
                r.got
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "requests that started before SIGTERM and were not answered: {failed:#?}\n{}",
        w.log()
    );
    assert!(
        refused.is_some(),
        "the listener still accepts after SIGTERM"
    );
    assert!(
        alive_when_refused,
        "the process had exited before its listener was seen closed"
    );
    // Generous: the process exits as soon as the slow requests are done (~1.5 s); the grace
    // period is the upper bound.
    assert!(
        exited.is_some_and(|s| s.success()) && exit_after <= Duration::from_secs(grace + 5),
        "weir did not exit cleanly within its grace period: {exited:?} after {exit_after:?}\n{}",
        w.log()
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// The new process of an upgrade: `weir -u -c <conf>`, killed on drop.
struct Upgraded(Child);

impl Drop for Upgraded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn graceful_upgrade_under_load_loses_no_request() {
    let slow = Backend::start("slow");
    slow.set_mode(Mode::Delay(Duration::from_millis(700)));
    let fast = Backend::start("fast");
    let d = dir("upgrade");
    let conf = d.join("weir.yaml");
    let reserved = reserve_port();
    let port = reserved.port;
    std::fs::write(&conf, config(&d, port, &slow, &fast, 15)).expect("write");
    let mut old = WeirProcess::start(env!("CARGO_BIN_EXE_weir"), &conf, port);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    // A steady stream (8 clients) and requests that take 0.7 s, so that some are in flight
    // whenever the old process stops accepting and starts closing its connections.
    let stream = Stream::start(addr, "/fast/x", 8);
    let slow_stream = Stream::start(addr, "/slow/x", 4);
    assert!(
        wait_for(Duration::from_secs(10), || (stream.count() >= 50)
            .then_some(()))
        .is_some(),
        "the stream does not flow"
    );

    // The new process waits on the upgrade socket for the listeners.
    let sock = d.join("weir.sock");
    let new_log = d.join("new.log");
    let new = Upgraded(
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("-u")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&new_log).expect("log file"))
            .spawn()
            .expect("spawn weir -u"),
    );
    let waiting = wait_for(Duration::from_secs(20), || sock.exists().then_some(()));
    assert!(
        waiting.is_some(),
        "weir -u never opened {}:\n{}",
        sock.display(),
        std::fs::read_to_string(&new_log).unwrap_or_default()
    );
    let before_quit = stream.count();
    signal(old.child.id(), "-QUIT");
    let quit = Instant::now();

    // The old process hands its listeners over, keeps serving a few seconds (Pingora's
    // close timeout, 5 s), then drains and exits once nothing is in flight.
    let old_exit = wait_for(Duration::from_secs(40), || {
        old.child.try_wait().ok().flatten()
    });
    let old_exit_after = quit.elapsed();
    let new_log_text = || std::fs::read_to_string(&new_log).unwrap_or_default();
    assert!(
        old_exit.is_some_and(|s| s.success()),
        "the old process did not exit cleanly: {old_exit:?}\nold:\n{}\nnew:\n{}",
        old.log(),
        new_log_text()
    );
    // The stream goes on against the new process alone.
    let at_exit = stream.count();
    assert!(
        wait_for(Duration::from_secs(10), || (stream.count()
            >= at_exit + 200)
            .then_some(()))
        .is_some(),
        "the stream stalled after the old process exited"
    );
    let (mut records, stale) = stream.finish();
    let (slow_records, slow_stale) = slow_stream.finish();
    records.extend(slow_records);

    let mut new = new;
    assert!(
        new.0.try_wait().ok().flatten().is_none(),
        "the new process exited:\n{}",
        new_log_text()
    );
    // New connections are served by the new process (the old one is gone).
    let mut probe = Careful::new(addr, false);
    assert_eq!(probe.get("/fast/x").1, Got::Ok, "{}", new_log_text());

    println!(
        "graceful upgrade: {} ({} before SIGQUIT); old process exited {old_exit_after:?} after \
         SIGQUIT; stale keep-alive connections skipped {}",
        summary(&records),
        before_quit,
        stale + slow_stale,
    );
    let bad: Vec<_> = records.iter().filter(|r| r.got != Got::Ok).collect();
    assert!(
        bad.is_empty(),
        "requests not answered with 200 during the upgrade ({} of {}): {:#?}\nold:\n{}\nnew:\n{}",
        bad.len(),
        records.len(),
        bad.iter().take(10).collect::<Vec<_>>(),
        old.log(),
        new_log_text()
    );
    drop(new);
    let _ = std::fs::remove_dir_all(&d);
}

/// A connection that was accepted but has sent nothing yet is closed with the idle keep-alive
/// connections when a graceful shutdown begins closing them: it does not hold the process
/// until `grace_period_seconds`. (Before, the wait for its first bytes did not see the
/// shutdown, and the process exited only at the end of the grace period.)
#[test]
fn sigterm_does_not_wait_for_silent_connections() {
    let fast = Backend::start("fast");
    let d = dir("silent");
    let conf = d.join("weir.yaml");
    let reserved = reserve_port();
    let port = reserved.port;
    // A grace period far longer than the wait under test: exiting near it is the bug.
    let grace = 60;
    std::fs::write(&conf, config(&d, port, &fast, &fast, grace)).expect("write");
    let mut w = WeirProcess::start(env!("CARGO_BIN_EXE_weir"), &conf, port);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    assert_eq!(w.get_path("/fast/x").0, 200);

    let mut silent: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    // Let Weir accept them (a request on another connection is answered after they were
    // queued, and the listener takes connections in order).
    assert_eq!(w.get_path("/fast/x").0, 200);

    let signalled = Instant::now();
    signal(w.child.id(), "-TERM");
    let exited = wait_for(Duration::from_secs(grace / 2), || {
        w.child.try_wait().ok().flatten()
    });
    assert!(
        exited.is_some_and(|s| s.success()),
        "weir was still running {:?} after SIGTERM with {} silent connections open (grace \
         period {grace} s): {exited:?}\n{}",
        signalled.elapsed(),
        silent.len(),
        w.log()
    );
    // Each silent connection was closed by Weir: a read sees EOF (or a reset), not a hang.
    for s in &mut silent {
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() != ErrorKind::WouldBlock && e.kind() != ErrorKind::TimedOut => {}
            other => panic!("a silent connection was left open: {other:?}"),
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}
