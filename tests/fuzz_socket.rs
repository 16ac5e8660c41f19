//! Raw socket fuzzing of the real `weir` binary: thousands of random and mutated HTTP/1
//! requests (bit flips, truncations, duplicated and inserted header lines, control bytes,
//! bare LFs, huge lines, random bytes), each on a fresh connection, against Weir in front of
//! a real backend. After every batch a normal request must still be served correctly; at the
//! end the process must be alive and its open descriptors back near the baseline.
//!
//! Deterministic: the seed is printed, and `WEIR_FUZZ_SEED=<n>` replays a run;
//! `WEIR_FUZZ_CASES=<n>` sets the number of requests (default 8000). The run stops early
//! (and says so) when it passes its time budget, so that a loaded machine cannot make it
//! hang.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_testkit::{reserve_port, wait_for, Backend, Client, WeirProcess};

const BATCH: usize = 100;
const WORKERS: usize = 16;
/// One case in this many keeps its connection open after the request.
const KEEP_OPEN: usize = 8;
const BUDGET: Duration = Duration::from_secs(45);
/// The upstream keepalive pool of the test route: idle upstream connections Weir may keep.
const POOL: usize = 8;

/// xorshift64*: a deterministic generator small enough to write out, so a seed replays the
/// same run on any machine without a dependency.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Valid requests the mutations start from.
fn seeds() -> Vec<Vec<u8>> {
    [
        &b"GET /fuzz/a HTTP/1.1\r\nHost: fuzz.test\r\nUser-Agent: fuzz\r\nAccept: */*\r\n\r\n"[..],
        b"GET /fuzz/q?x=1&y=%20z HTTP/1.1\r\nHost: fuzz.test\r\nCookie: a=b; c=d\r\nConnection: close\r\n\r\n",
        b"POST /fuzz/p HTTP/1.1\r\nHost: fuzz.test\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"a\": [1, 2]}",
        b"POST /fuzz/c HTTP/1.1\r\nHost: fuzz.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
        b"GET /fuzz/old HTTP/1.0\r\nHost: fuzz.test\r\n\r\n",
        b"PUT /fuzz/u HTTP/1.1\r\nHost: fuzz.test\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody",
        b"GET /fuzz/1 HTTP/1.1\r\nHost: fuzz.test\r\n\r\nGET /fuzz/2 HTTP/1.1\r\nHost: fuzz.test\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: fuzz.test\r\n\r\n",
        b"GET http://fuzz.test/fuzz/abs HTTP/1.1\r\nHost: fuzz.test\r\n\r\n",
        b"CONNECT fuzz.test:443 HTTP/1.1\r\nHost: fuzz.test:443\r\n\r\n",
        b"GET /fuzz/up HTTP/1.1\r\nHost: fuzz.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

const LINES: &[&[u8]] = &[
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: gzip, chunked",
    b"Transfer-Encoding : chunked",
    b"Transfer-Encoding:\tchunked",
    b"transfer-encoding: CHUNKED",
    b"Content-Length: 0",
    b"Content-Length: 5",
    b"Content-Length: -1",
    b"Content-Length: 99999999999999999999",
    b"Content-Length: 1, 2",
    b"Content-Length:  +3",
    b"Host: other.test",
    b"Host:",
    b"Host: a b",
    b"Connection: close",
    b"Connection: keep-alive, Upgrade",
    b"Upgrade: h2c",
    b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
    b"Expect: 100-continue",
    b" folded continuation",
    b"\tfolded",
    b": no name",
    b"No-Colon",
    b"X-Nul: a\0b",
    b"X-\x7f: del",
    b"X-Bin: \xff\xfe",
    b"Cookie: \xc3\x28",
    b"Range: bytes=0-1,2-3,4-5",
    b"Accept-Encoding: gzip;q=1.0000000001",
];

const INSERTS: &[&[u8]] = &[
    b"\r",
    b"\n",
    b"\r\n",
    b"\r\n\r\n",
    b"\0",
    b" ",
    b"\t",
    b":",
    b"%",
    b"%00",
    b"?",
    b"#",
    b"HTTP/1.1",
    b"HTTP/0.9",
    b"HTTP/1.2",
    b"HTTP/2.0",
    b"/../../",
    b"\x1b[2J",
    b"\xc0\xaf",
    b"0\r\n\r\n",
    b"ffffffffffffffff\r\n",
    b"-5\r\n",
];

/// One test input: a mutated seed, a hostile construction, or random bytes.
fn input(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    match rng.below(10) {
        // Random bytes, sometimes after a plausible method.
        0 => {
            let n = rng.below(600);
            let mut b = if rng.chance(2) {
                b"GET ".to_vec()
            } else {
                Vec::new()
            };
            b.extend(rng.bytes(n));
            b
        }
        // A huge request line or header line.
        1 => {
            let n = *rng.pick(&[4_096, 9_000, 17_000, 70_000, 300_000]);
            let fill = *rng.pick(b"a/% \xff");
            let long = vec![fill; n];
            let mut b = Vec::new();
            if rng.chance(2) {
                b.extend_from_slice(b"GET /");
                b.extend_from_slice(&long);
                b.extend_from_slice(b" HTTP/1.1\r\nHost: fuzz.test\r\n\r\n");
            } else {
                b.extend_from_slice(b"GET /fuzz/h HTTP/1.1\r\nHost: fuzz.test\r\nX-Long: ");
                b.extend_from_slice(&long);
                b.extend_from_slice(b"\r\n\r\n");
            }
            b
        }
        // Very many header lines.
        2 => {
            let mut b = b"GET /fuzz/many HTTP/1.1\r\nHost: fuzz.test\r\n".to_vec();
            for i in 0..(200 + rng.below(3000)) {
                b.extend_from_slice(format!("X-H{i}: {i}\r\n").as_bytes());
            }
            b.extend_from_slice(b"\r\n");
            b
        }
        _ => {
            let mut b = rng.pick(seeds).clone();
            for _ in 0..(1 + rng.below(4)) {
                mutate(rng, &mut b);
            }
            b
        }
    }
}

/// Line starts (after each `\n`) of `b`, for line-level edits.
fn line_starts(b: &[u8]) -> Vec<usize> {
    let mut v = vec![0];
    v.extend(
        b.iter()
            .enumerate()
            .filter(|(_, c)| **c == b'\n')
            .map(|(i, _)| i + 1),
    );
    v
}

fn mutate(rng: &mut Rng, b: &mut Vec<u8>) {
    let len = b.len();
    match rng.below(9) {
        0 if len > 0 => {
            for _ in 0..(1 + rng.below(4)) {
                let i = rng.below(len);
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => b.truncate(rng.below(len + 1)),
        2 => {
            // Duplicate a line.
            let starts = line_starts(b);
            let i = rng.below(starts.len());
            let s = starts[i];
            let e = starts.get(i + 1).copied().unwrap_or(len);
            let line = b[s..e].to_vec();
            b.splice(s..s, line);
        }
        3 | 4 => {
            // Insert a header line after the request line (or anywhere).
            let starts = line_starts(b);
            let at = if rng.chance(2) && starts.len() > 1 {
                starts[1]
            } else {
                *rng.pick(&starts)
            };
            let mut line = rng.pick(LINES).to_vec();
            line.extend_from_slice(if rng.chance(5) { b"\n" } else { b"\r\n" });
            b.splice(at..at, line);
        }
        5 => {
            let at = rng.below(len + 1);
            let ins = rng.pick(INSERTS).to_vec();
            b.splice(at..at, ins);
        }
        6 => {
            // CRLF to bare LF (or bare CR) everywhere.
            let to: &[u8] = if rng.chance(2) { b"\n" } else { b"\r" };
            let mut out = Vec::with_capacity(len);
            let mut i = 0;
            while i < len {
                if b[i..].starts_with(b"\r\n") {
                    out.extend_from_slice(to);
                    i += 2;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            *b = out;
        }
        7 if len > 0 => {
            // Overwrite a run with random bytes.
            let i = rng.below(len);
            let n = (1 + rng.below(16)).min(len - i);
            let r = rng.bytes(n);
            b[i..i + n].copy_from_slice(&r);
        }
        _ => {
            // Swap the case of a run (methods, header names, `chunked`).
            let i = rng.below(len + 1);
            let end = (i + 1 + rng.below(12)).min(len);
            for c in &mut b[i..end] {
                if c.is_ascii_alphabetic() {
                    *c ^= 0x20;
                }
            }
        }
    }
}

#[derive(Default)]
struct Tally {
    answered: AtomicUsize,
    closed_silently: AtomicUsize,
    stalled: AtomicUsize,
    bad_answers: AtomicUsize,
    /// Answers by status code.
    statuses: std::sync::Mutex<std::collections::BTreeMap<u16, usize>>,
}

/// How long a connection we keep open may stay silent before we give up on it.
const SILENCE: Duration = Duration::from_millis(400);

/// Send one input on a fresh connection and read what comes back. Mostly we then close our
/// side (the request is all there is: Weir must answer or close at once); one case in
/// `KEEP_OPEN` keeps it open, as a real client does, and stops at the first whole answer (a
/// valid request is then answered and proxied end to end) or after [`SILENCE`].
fn send(addr: SocketAddr, bytes: &[u8], keep_open: bool, tally: &Tally) -> Option<String> {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return Some("connect failed".into());
    };
    let _ = s.set_write_timeout(Some(Duration::from_secs(3)));
    let wait = if keep_open {
        SILENCE
    } else {
        Duration::from_secs(3)
    };
    let _ = s.set_read_timeout(Some(wait));
    // The server may stop reading (and close) early: a write error is a valid outcome.
    let _ = s.write_all(bytes);
    if !keep_open {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let stalled = loop {
        match s.read(&mut buf) {
            Ok(0) => break false,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.len() > 1 << 20 || (keep_open && answer_complete(&got)) {
                    break false;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break true
            }
            // Reset after the server refused the request: a close.
            Err(_) => break false,
        }
    };
    // Kept open and silent: Weir waits for the rest of an incomplete request, as it should.
    let stalled = stalled && !keep_open;
    if stalled {
        tally.stalled.fetch_add(1, Ordering::Relaxed);
    }
    if got.is_empty() {
        tally.closed_silently.fetch_add(1, Ordering::Relaxed);
        return None;
    }
    tally.answered.fetch_add(1, Ordering::Relaxed);
    let status = got
        .get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    *tally
        .statuses
        .lock()
        .expect("lock")
        .entry(status)
        .or_default() += 1;
    // Whatever Weir answers is HTTP/1.x (never an echo of the input, never HTTP/0.9).
    if !got.starts_with(b"HTTP/1.1 ") && !got.starts_with(b"HTTP/1.0 ") {
        tally.bad_answers.fetch_add(1, Ordering::Relaxed);
        let head: Vec<u8> = got.iter().take(80).copied().collect();
        return Some(format!(
            "answer is not HTTP/1.x: {:?}",
            String::from_utf8_lossy(&head)
        ));
    }
    None
}

/// Whether `b` holds one whole response: its head and the body its Content-Length announces
/// (a response without one is read to the close).
fn answer_complete(b: &[u8]) -> bool {
    let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&b[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|n| b.len() >= end + 4 + n)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-fuzz-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn config(d: &Path, port: u16, backend: &Backend) -> String {
    format!(
        "server:\n  listen: [\"127.0.0.1:{port}\"]\n  threads: 2\n  pid_file: {d}/weir.pid\n  upgrade_sock: {d}/weir.sock\n\
routes:\n  - id: fuzz\n    uri: /*\n    upstream:\n      nodes: {{\"{b}\": 1}}\n      timeout: {{connect: 2, send: 3, read: 3}}\n      keepalive_pool: {{size: {POOL}, idle_timeout: 2}}\n",
        b = backend.addr,
        d = d.display()
    )
}

/// A normal request is served correctly: the backend's answer, on a fresh connection.
fn serves(weir: &WeirProcess) -> Result<(), String> {
    let mut c = Client::new(([127, 0, 0, 1], weir.port).into());
    c.timeout = Duration::from_secs(10);
    let r = c
        .request("GET", "/fuzz/check", &[("host", "fuzz.test")], b"")
        .map_err(|e| format!("normal request failed: {e}"))?;
    if (r.status, r.body.as_str()) != (200, "fuzz") {
        return Err(format!("normal request got {} {:?}", r.status, r.body));
    }
    Ok(())
}

#[test]
fn random_and_mutated_requests_never_stop_weir_serving() {
    let seed: u64 = std::env::var("WEIR_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_F022_2026_1201);
    let cases: usize = std::env::var("WEIR_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8000);
    println!("socket fuzz: seed {seed} (WEIR_FUZZ_SEED={seed} replays), {cases} cases");

    let backend = Backend::start("fuzz");
    let d = dir("socket");
    let p = reserve_port();
    let conf = d.join("weir.yaml");
    std::fs::write(&conf, config(&d, p.port, &backend)).expect("write conf");
    let mut weir = WeirProcess::start(env!("CARGO_BIN_EXE_weir"), &conf, p.port);
    let pid = weir.child.id();
    let addr: SocketAddr = ([127, 0, 0, 1], p.port).into();

    // Baseline: after normal traffic at the fuzzing concurrency, once idle upstream
    // connections have timed out.
    for _ in 0..3 {
        serves(&weir).unwrap_or_else(|e| panic!("{e}\n{}", weir.log()));
    }
    let baseline = open_fds(pid);
    assert!(baseline > 0, "cannot read /proc/{pid}/fd");

    let seeds = Arc::new(seeds());
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let mut rng = Rng(seed | 1);
    let mut sent = 0;
    let mut failures: Vec<String> = Vec::new();
    while sent < cases && started.elapsed() < BUDGET {
        // One batch: WORKERS threads, each with its own generator derived from the run's.
        let n = BATCH.min(cases - sent);
        let handles: Vec<_> = (0..WORKERS)
            .map(|w| {
                let mut r = Rng(rng.next() | 1);
                let seeds = Arc::clone(&seeds);
                let tally = Arc::clone(&tally);
                let share = n / WORKERS + usize::from(w < n % WORKERS);
                std::thread::spawn(move || {
                    let mut bad = Vec::new();
                    for _ in 0..share {
                        let bytes = input(&mut r, &seeds);
                        let keep_open = r.chance(KEEP_OPEN);
                        if let Some(why) = send(addr, &bytes, keep_open, &tally) {
                            let shown: Vec<u8> = bytes.iter().take(200).copied().collect();
                            bad.push(format!(
                                "{why}\n  input: {:?}",
                                String::from_utf8_lossy(&shown)
                            ));
                        }
                    }
                    bad
                })
            })
            .collect();
        for h in handles {
            failures.extend(h.join().expect("worker"));
        }
        sent += n;
        if let Ok(Some(status)) = weir.child.try_wait() {
            panic!(
                "weir exited with {status} after {sent} cases:\n{}",
                weir.log()
            );
        }
        if let Err(e) = serves(&weir) {
            panic!("after {sent} cases: {e}\n{}", weir.log());
        }
    }
    let took = started.elapsed();
    println!(
        "socket fuzz: {sent} cases in {took:.1?}: {} answered, {} closed without an answer, {} still open 3 s after we closed our side",
        tally.answered.load(Ordering::Relaxed),
        tally.closed_silently.load(Ordering::Relaxed),
        tally.stalled.load(Ordering::Relaxed),
    );
    println!(
        "socket fuzz: answers by status {:?}; the backend got {} requests",
        tally.statuses.lock().expect("lock"),
        backend.hits()
    );
    if sent < cases {
        println!("socket fuzz: stopped at the {BUDGET:?} budget after {sent} of {cases} cases");
    }
    assert!(
        failures.is_empty(),
        "{} bad outcomes:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(sent >= BATCH, "not even one batch ran in {BUDGET:?}");

    // Alive, still serving, and every connection of the run closed: descriptors back to the
    // baseline, give or take the idle upstream pool.
    assert!(
        weir.child.try_wait().expect("try_wait").is_none(),
        "weir exited"
    );
    serves(&weir).unwrap_or_else(|e| panic!("{e}\n{}", weir.log()));
    let settled = wait_for(Duration::from_secs(20), || {
        let n = open_fds(pid);
        (n <= baseline + POOL).then_some(n)
    });
    let now = open_fds(pid);
    println!("socket fuzz: open descriptors {baseline} before, {now} after");
    assert!(
        settled.is_some(),
        "open descriptors did not return near the baseline: {baseline} before, {now} after"
    );
    let _ = std::fs::remove_dir_all(&d);
}
