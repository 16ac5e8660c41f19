//! Faulty backends under steady load, against the real `weir` binary: three nodes that in
//! turn reset mid-body, hang after the headers, trickle the body, answer garbage, close before
//! answering and refuse connections (with healthy periods in between), while 32 concurrent
//! clients (half keep-alive, half a new connection per request) keep asking for bodies whose
//! every byte they check.
//!
//! What a client may see, and when (anything else fails the test):
//!
//! - **a complete 200**: the whole body, every byte as the node generated it (Content-Length
//!   or chunked framing, both checked to the last byte and the final chunk);
//! - **a complete 502 or 504**: Weir could not get a response head from any node it tried
//!   (refused, reset or closed before answering, garbage, or no head within the read timeout);
//! - **a response cut short, then the connection closed**: only when the response head came
//!   from a node that broke *after* sending it (`X-Fault: reset` or `X-Fault: hang`). The head
//!   and the first bytes are already with the client, so a 502 is impossible; closing the
//!   connection without the rest (no body completing its Content-Length, no final chunk) is
//!   how HTTP/1.1 says the response failed, and the client must be able to tell. A truncated
//!   response from a healthy or trickling node, a body with a wrong byte, a hang longer than
//!   the client's timeout, or a request that got no response at all is a failure — with one
//!   exception: when the node's own thread paused for 0.9 s or more between two writes (the
//!   node measures it; on a loaded machine), Weir's 1 s read timeout was right to cut the
//!   response, and it is counted apart.
//!
//! Weir must not crash or log a panic. Its resident memory after the warm-up (the first
//! fault cycle) may grow by at most 10%: the median RSS of the last cycle is compared with
//! the median of the cycle after the warm-up (a median, because one burst of buffers is not
//! growth; a leak moves the median). Its open descriptors must come back to the baseline once
//! the load stops (upstream connections idle in the pool are dropped after
//! `keepalive_pool.idle_timeout`, 1 s here, so the baseline is the count before any request).
//!
//! The load runs for `SOAK_SECS` seconds (default: three fault cycles of 9.9 s); `make soak`
//! runs it for 120 s. The figures are printed (`--nocapture` shows them).

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};
use weir_testkit::{reserve_port, wait_for, PortReservation, WeirProcess};

// ---------------------------------------------------------------------------------------
// The faulty node
// ---------------------------------------------------------------------------------------

/// What a node does with the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Fault {
    /// The whole body, at once.
    Healthy = 0,
    /// The head and half the body, then a TCP reset.
    ResetMidBody = 1,
    /// The head, then nothing (until long after Weir's read timeout).
    HangAfterHeaders = 2,
    /// The whole body in 8 pieces 80 ms apart: slow, but every gap is far within the 1 s read
    /// timeout, so the response must come through complete.
    Trickle = 3,
    /// Bytes that are not HTTP, then close.
    Garbage = 4,
    /// Read the request, close without a byte.
    CloseBeforeAnswer = 5,
    /// Not listening: connections are refused (and open ones closed on their next request).
    Refuse = 6,
    /// Read the request and never answer (until long after Weir's read timeout): a 504.
    Stall = 7,
}

const FAULTS: [Fault; 8] = [
    Fault::Healthy,
    Fault::ResetMidBody,
    Fault::HangAfterHeaders,
    Fault::Trickle,
    Fault::Garbage,
    Fault::CloseBeforeAnswer,
    Fault::Refuse,
    Fault::Stall,
];

impl Fault {
    fn from_u8(v: u8) -> Fault {
        FAULTS[usize::from(v) % FAULTS.len()]
    }

    fn tag(self) -> &'static str {
        match self {
            Fault::Healthy => "none",
            Fault::ResetMidBody => "reset",
            Fault::HangAfterHeaders => "hang",
            Fault::Trickle => "trickle",
            Fault::Garbage => "garbage",
            Fault::CloseBeforeAnswer => "close",
            Fault::Refuse => "refuse",
            Fault::Stall => "stall",
        }
    }
}

/// One phase of the schedule lasts this long.
const PHASE: Duration = Duration::from_millis(900);
/// Phases per cycle: 8 with the faults staggered over the nodes (each node on its own fault),
/// 2 with every node on the same fault (Weir has no good node to retry on; the fault changes
/// from cycle to cycle), 1 with every node healthy.
const CYCLE: u64 = 11;

/// The fault every node has at once in the 9th and 10th phases of cycle 0, 1, ...: those that end in a
/// 504 and a 502 first, so that even the shortest run sees them.
const ALL_ON_ONE: [Fault; 7] = [
    Fault::Stall,
    Fault::Garbage,
    Fault::Refuse,
    Fault::CloseBeforeAnswer,
    Fault::ResetMidBody,
    Fault::HangAfterHeaders,
    Fault::Trickle,
];

/// The fault of node `node` (0..3) in phase `phase`.
fn schedule(phase: u64, node: usize) -> Fault {
    let k = phase % CYCLE;
    match k {
        0..=7 => FAULTS[(k as usize + 3 * node) % FAULTS.len()],
        8 | 9 => ALL_ON_ONE[(phase / CYCLE) as usize % ALL_ON_ONE.len()],
        _ => Fault::Healthy,
    }
}

/// The body of `/obj/<n>`: its size and every byte follow from `n`.
fn body_len(n: u64) -> usize {
    [64, 8 * 1024, 128 * 1024][(n % 3) as usize]
}

fn body_byte(n: u64, i: usize) -> u8 {
    b'a' + ((n as usize).wrapping_add(i) % 26) as u8
}

fn body(n: u64) -> Vec<u8> {
    (0..body_len(n)).map(|i| body_byte(n, i)).collect()
}

/// Chunked for every fourth object, Content-Length for the others.
fn chunked(n: u64) -> bool {
    n % 4 == 1
}

struct NodeShared {
    fault: AtomicU8,
    stop: AtomicBool,
    /// Times the node started listening (once, plus once after every refusing period).
    listens: AtomicU64,
}

/// A node on a reserved port that it can stop listening on (refuse) and listen on again.
struct FaultyNode {
    addr: SocketAddr,
    shared: Arc<NodeShared>,
    accept: Option<thread::JoinHandle<()>>,
    _port: PortReservation,
}

impl FaultyNode {
    fn start() -> FaultyNode {
        let port = reserve_port();
        let addr: SocketAddr = ([127, 0, 0, 1], port.port).into();
        let shared = Arc::new(NodeShared {
            fault: AtomicU8::new(Fault::Healthy as u8),
            stop: AtomicBool::new(false),
            listens: AtomicU64::new(0),
        });
        let s = Arc::clone(&shared);
        let accept = thread::spawn(move || accept_loop(addr, s));
        // Listening before the proxy starts.
        let up = wait_for(Duration::from_secs(10), || TcpStream::connect(addr).ok());
        assert!(up.is_some(), "node {addr} does not listen");
        FaultyNode {
            addr,
            shared,
            accept: Some(accept),
            _port: port,
        }
    }

    fn set(&self, f: Fault) {
        self.shared.fault.store(f as u8, Ordering::SeqCst);
    }
}

impl Drop for FaultyNode {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Listens while the fault is not `Refuse` (the listener is closed, so the kernel refuses
/// connections: the reservation keeps the port bound but never listens).
fn accept_loop(addr: SocketAddr, s: Arc<NodeShared>) {
    let mut listener: Option<TcpListener> = None;
    while !s.stop.load(Ordering::SeqCst) {
        let refuse = Fault::from_u8(s.fault.load(Ordering::SeqCst)) == Fault::Refuse;
        if refuse {
            listener = None;
            thread::sleep(Duration::from_millis(5));
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            None => {
                // std sets SO_REUSEADDR, as the reservation does: the port can be bound again.
                let Ok(l) = TcpListener::bind(addr) else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                l.set_nonblocking(true).expect("nonblocking listener");
                s.listens.fetch_add(1, Ordering::SeqCst);
                listener.insert(l)
            }
        };
        match l.accept() {
            Ok((stream, _)) => {
                let s = Arc::clone(&s);
                thread::spawn(move || serve(stream, &s));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(1)),
            Err(_) => thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Close `stream` with a TCP reset (SO_LINGER 0) instead of a FIN.
fn reset(stream: TcpStream) {
    let sock = tokio::net::TcpSocket::from_std_stream(stream);
    let _ = sock.set_zero_linger();
}

/// Objects whose response the node itself sent with a pause of [`STALL`] or more between two
/// writes (this thread descheduled on a loaded machine): Weir's read timeout may rightly
/// have cut them.
static STALLED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// A pause that may have reached Weir's 1 s read timeout.
const STALL: Duration = Duration::from_millis(900);

/// Writes one response, measuring the longest time the peer may have waited between two
/// pieces: from before the previous write began to after this one ended (an upper bound, so
/// a pause is never missed however this thread is scheduled).
struct Paced<'a> {
    w: &'a mut TcpStream,
    prev: Option<Instant>,
    longest: Duration,
}

impl<'a> Paced<'a> {
    fn new(w: &'a mut TcpStream) -> Self {
        Paced {
            w,
            prev: None,
            longest: Duration::ZERO,
        }
    }

    fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        let before = Instant::now();
        let r = self.w.write_all(b);
        let since = self.prev.unwrap_or(before);
        self.longest = self.longest.max(since.elapsed());
        self.prev = Some(before);
        r
    }

    /// Record a stall of object `n`; whether the connection goes on.
    fn done(self, n: u64, sent: std::io::Result<()>) -> bool {
        if self.longest >= STALL {
            STALLED.lock().expect("lock").push(n);
        }
        sent.is_ok()
    }
}

/// Whether the node stalled while sending object `n` (waits a little: the node records it
/// only after its late write).
fn stalled(n: u64) -> bool {
    wait_for(Duration::from_secs(10), || {
        STALLED.lock().expect("lock").contains(&n).then_some(())
    })
    .is_some()
}

fn serve(stream: TcpStream, s: &NodeShared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(clone) = stream.try_clone() else {
        return;
    };
    let mut r = BufReader::new(clone);
    let mut w = stream;
    loop {
        // The request head: `GET /obj/<n> HTTP/1.1`, headers, no body.
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim_end().is_empty() {
                break;
            }
        }
        let n: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|t| t.strip_prefix("/obj/"))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let fault = Fault::from_u8(s.fault.load(Ordering::SeqCst));
        let data = body(n);
        let head = if chunked(n) {
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Fault: {}\r\n\r\n",
                fault.tag()
            )
        } else {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Fault: {}\r\n\r\n",
                data.len(),
                fault.tag()
            )
        };
        let frame = |part: &[u8]| -> Vec<u8> {
            if chunked(n) {
                let mut v = format!("{:x}\r\n", part.len()).into_bytes();
                v.extend_from_slice(part);
                v.extend_from_slice(b"\r\n");
                v
            } else {
                part.to_vec()
            }
        };
        let end: &[u8] = if chunked(n) { b"0\r\n\r\n" } else { b"" };
        match fault {
            Fault::Healthy => {
                let mut out = head.into_bytes();
                out.extend(frame(&data));
                out.extend_from_slice(end);
                let mut p = Paced::new(&mut w);
                let sent = p.write(&out);
                if !p.done(n, sent) {
                    return;
                }
            }
            Fault::Trickle => {
                let mut p = Paced::new(&mut w);
                let piece = data.len().div_ceil(8);
                let sent = p.write(head.as_bytes()).and_then(|()| {
                    for part in data.chunks(piece) {
                        thread::sleep(Duration::from_millis(80));
                        p.write(&frame(part))?;
                    }
                    p.write(end)
                });
                if !p.done(n, sent) {
                    return;
                }
            }
            Fault::ResetMidBody => {
                let mut out = head.into_bytes();
                out.extend(frame(&data[..data.len() / 2]));
                let _ = w.write_all(&out);
                let _ = w.flush();
                thread::sleep(Duration::from_millis(20));
                return reset(w);
            }
            Fault::HangAfterHeaders | Fault::Stall => {
                if fault == Fault::HangAfterHeaders {
                    let _ = w.write_all(head.as_bytes());
                }
                // Far beyond the 1 s read timeout; then give up quietly.
                let until = Instant::now() + Duration::from_secs(5);
                while Instant::now() < until && !s.stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(50));
                }
                return;
            }
            Fault::Garbage => {
                let _ = w.write_all(b"\x00\x17garbage \xff\xfe not HTTP at all\r\n\r\n\x01\x02");
                return;
            }
            Fault::CloseBeforeAnswer | Fault::Refuse => return,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------

/// What one request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Outcome {
    /// 200 with the whole body, every byte right.
    Complete,
    /// A complete 502.
    BadGateway,
    /// A complete 504.
    GatewayTimeout,
    /// A 200 head from a node that failed after it, the body cut short, the connection closed.
    Truncated,
    /// A healthy or trickling response cut by Weir's read timeout because the node's own
    /// thread paused longer than it (a loaded machine): Weir was right to give up.
    Stalled,
    /// Anything else (details in the failure list).
    Failed,
}

struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How a body read ended.
enum BodyEnd {
    Complete(Vec<u8>),
    /// The connection ended (EOF or reset) before the framing said the body was complete.
    Cut(usize),
    /// A framing error or a read timeout (a hang).
    Broken(String),
}

fn read_head(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Head>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    Ok(Some(Head { status, headers }))
}

fn cut_or_broken(e: &std::io::Error, got: usize) -> BodyEnd {
    match e.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
            BodyEnd::Cut(got)
        }
        _ => BodyEnd::Broken(format!("{e} after {got} body bytes")),
    }
}

/// Read `n` bytes, or say how the stream ended.
fn read_n(r: &mut BufReader<TcpStream>, n: usize, out: &mut Vec<u8>) -> Result<(), BodyEnd> {
    let start = out.len();
    out.resize(start + n, 0);
    let mut done = 0;
    while done < n {
        match r.read(&mut out[start + done..]) {
            Ok(0) => {
                out.truncate(start + done);
                return Err(BodyEnd::Cut(out.len()));
            }
            Ok(k) => done += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                out.truncate(start + done);
                return Err(cut_or_broken(&e, out.len()));
            }
        }
    }
    Ok(())
}

fn read_line_body(r: &mut BufReader<TcpStream>, got: usize) -> Result<String, BodyEnd> {
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) => Err(BodyEnd::Cut(got)),
        Ok(_) if !line.ends_with('\n') => Err(BodyEnd::Cut(got)),
        Ok(_) => Ok(line),
        Err(e) => Err(cut_or_broken(&e, got)),
    }
}

fn read_body(r: &mut BufReader<TcpStream>, head: &Head) -> BodyEnd {
    let mut out = Vec::new();
    if head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let line = match read_line_body(r, out.len()) {
                Ok(l) => l,
                Err(e) => return e,
            };
            let size = line.trim_end().split(';').next().unwrap_or("");
            let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
                return BodyEnd::Broken(format!("bad chunk size line {line:?}"));
            };
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    match read_line_body(r, out.len()) {
                        Ok(l) if l.trim_end().is_empty() => return BodyEnd::Complete(out),
                        Ok(_) => {}
                        Err(e) => return e,
                    }
                }
            }
            if let Err(e) = read_n(r, size, &mut out) {
                return e;
            }
            match read_line_body(r, out.len()) {
                Ok(l) if l.trim_end().is_empty() => {}
                Ok(l) => return BodyEnd::Broken(format!("chunk not followed by CRLF: {l:?}")),
                Err(e) => return e,
            }
        }
    }
    let Some(len) = head.header("content-length").and_then(|v| v.parse().ok()) else {
        return BodyEnd::Broken("no Content-Length and not chunked".into());
    };
    match read_n(r, len, &mut out) {
        Ok(()) => BodyEnd::Complete(out),
        Err(e) => e,
    }
}

/// The client's patience: far beyond every timeout in the proxy's configuration, so running
/// out of it means a hang.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// A client connection kept alive between requests.
struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        Ok(Conn {
            r: BufReader::new(s),
        })
    }

    /// Whether the server closed (or reset) this idle connection: a client must not send on a
    /// connection the server is closing. Nothing is pending on an idle keep-alive connection,
    /// so readable means closed.
    fn closed_by_server(&self) -> bool {
        let s = self.r.get_ref();
        if !self.r.buffer().is_empty() {
            return true;
        }
        let _ = s.set_nonblocking(true);
        let mut b = [0u8; 1];
        let closed = !matches!(s.peek(&mut b), Err(e) if e.kind() == ErrorKind::WouldBlock);
        let _ = s.set_nonblocking(false);
        closed
    }
}

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    complete: AtomicU64,
    bad_gateway: AtomicU64,
    gateway_timeout: AtomicU64,
    truncated: AtomicU64,
    stalled: AtomicU64,
    failed: AtomicU64,
    /// Idle keep-alive connections the server had closed, noticed before sending.
    stale: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Stats {
    fn count(&self, o: Outcome, detail: impl FnOnce() -> String) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let c = match o {
            Outcome::Complete => &self.complete,
            Outcome::BadGateway => &self.bad_gateway,
            Outcome::GatewayTimeout => &self.gateway_timeout,
            Outcome::Truncated => &self.truncated,
            Outcome::Stalled => &self.stalled,
            Outcome::Failed => &self.failed,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if o == Outcome::Failed {
            let mut f = self.failures.lock().expect("lock");
            if f.len() < 20 {
                f.push(detail());
            }
        }
    }
}

/// One request on `conn` (opened when `None`); the connection stays for the next request only
/// when the response was complete and kept alive.
fn one_request(
    addr: SocketAddr,
    conn: &mut Option<Conn>,
    keepalive: bool,
    n: u64,
    stats: &Stats,
) -> (Outcome, String) {
    if conn.as_ref().is_some_and(Conn::closed_by_server) {
        stats.stale.fetch_add(1, Ordering::Relaxed);
        *conn = None;
    }
    let reused = conn.is_some();
    let c = match conn.take() {
        Some(c) => c,
        None => match Conn::open(addr) {
            Ok(c) => c,
            Err(e) => return (Outcome::Failed, format!("connect: {e}")),
        },
    };
    let mut c = c;
    let req = format!(
        "GET /obj/{n} HTTP/1.1\r\nHost: soak\r\n{}\r\n",
        if keepalive {
            ""
        } else {
            "Connection: close\r\n"
        }
    );
    if let Err(e) = c.r.get_mut().write_all(req.as_bytes()) {
        return (Outcome::Failed, format!("send (reused {reused}): {e}"));
    }
    let head = match read_head(&mut c.r) {
        Ok(Some(h)) => h,
        Ok(None) => return (Outcome::Failed, format!("no response (reused {reused})")),
        Err(e) => return (Outcome::Failed, format!("head (reused {reused}): {e}")),
    };
    let fault = head.header("x-fault").unwrap_or("").to_owned();
    let end = read_body(&mut c.r, &head);
    let close = head
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    match (head.status, end) {
        (200, BodyEnd::Complete(b)) => {
            if b != body(n) {
                let at = b.iter().zip(body(n)).position(|(x, y)| *x != y);
                return (
                    Outcome::Failed,
                    format!(
                        "200 with a wrong body for {n} (x-fault {fault}): {} bytes, expected {}, first difference at {at:?}",
                        b.len(),
                        body_len(n)
                    ),
                );
            }
            if keepalive && !close {
                *conn = Some(c);
            }
            (Outcome::Complete, String::new())
        }
        (200, BodyEnd::Cut(got)) if fault == "reset" || fault == "hang" => {
            (Outcome::Truncated, format!("{got}"))
        }
        (200, BodyEnd::Cut(_)) if (fault == "none" || fault == "trickle") && stalled(n) => {
            (Outcome::Stalled, String::new())
        }
        (502, BodyEnd::Complete(_)) | (504, BodyEnd::Complete(_)) => {
            if keepalive && !close {
                *conn = Some(c);
            }
            let o = if head.status == 502 {
                Outcome::BadGateway
            } else {
                Outcome::GatewayTimeout
            };
            (o, String::new())
        }
        (status, BodyEnd::Cut(got)) => (
            Outcome::Failed,
            format!("{status} (x-fault {fault:?}) cut after {got} body bytes, object {n}"),
        ),
        (status, BodyEnd::Broken(why)) => (
            Outcome::Failed,
            format!("{status} (x-fault {fault:?}) object {n}: {why}"),
        ),
        (status, BodyEnd::Complete(_)) => (
            Outcome::Failed,
            format!("unexpected status {status} (x-fault {fault:?})"),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// The proxy process
// ---------------------------------------------------------------------------------------

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn fds(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-faulty-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn config(d: &Path, port: u16, nodes: &[FaultyNode]) -> String {
    let nodes: Vec<String> = nodes.iter().map(|n| format!("\"{}\": 1", n.addr)).collect();
    format!(
        "server:
  listen: [\"127.0.0.1:{port}\"]
  threads: 2
  pid_file: {d}/weir.pid
  upgrade_sock: {d}/weir.sock
  grace_period_seconds: 1
  graceful_shutdown_timeout_seconds: 1
  upstream_keepalive_pool_size: 64
config_source: {{file: {{watch: false}}}}
routes:
  - id: soak
    uri: /obj/*
    upstream:
      nodes: {{{}}}
      # Short timeouts: a stall becomes a 504, a hang after the head a cut response, in 1 s;
      # still 12 times the trickle's gaps, so a loaded machine does not cut a trickle.
      timeout: {{connect: 1, send: 1, read: 1}}
      # No new attempt after 0.5 s: a request whose first attempt stalls gets its 504 after
      # one read timeout; quick failures (refused, closed, reset) are still retried.
      retry_timeout: 0.5
      # Idle upstream connections leave the pool after 1 s: the descriptor baseline is the
      # count with no pooled connection.
      keepalive_pool: {{size: 16, idle_timeout: 1, requests: 100}}
",
        nodes.join(", "),
        d = d.display()
    )
}

fn cycle_time() -> Duration {
    PHASE * CYCLE as u32
}

/// How long the load runs: `SOAK_SECS`, at least three cycles (the warm-up, the reference
/// and one more).
fn load_time() -> Duration {
    let cycle = cycle_time();
    std::env::var("SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(cycle * 3, Duration::from_secs)
        .max(cycle * 3)
}

const CLIENTS: usize = 32;

#[test]
fn faulty_backends_under_load_never_crash_leak_or_corrupt() {
    let nodes = [
        FaultyNode::start(),
        FaultyNode::start(),
        FaultyNode::start(),
    ];
    let d = dir();
    let conf = d.join("weir.yaml");
    let reserved = reserve_port();
    let port = reserved.port;
    std::fs::write(&conf, config(&d, port, &nodes)).expect("write");
    let mut weir = WeirProcess::start(env!("CARGO_BIN_EXE_weir"), &conf, port);
    let pid = weir.child.id();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();

    let rss_start = rss_kib(pid).expect("rss");
    // The listener probe of `start` may still be open on Weir's side: settle first.
    let fd_base = wait_for(Duration::from_secs(5), || {
        let a = fds(pid)?;
        thread::sleep(Duration::from_millis(200));
        (fds(pid)? == a).then_some(a)
    })
    .expect("a stable descriptor count");

    let total = load_time();
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();

    // The monitor: drives the fault schedule, and samples descriptors (peak) and RSS (every
    // sample, by cycle: cycles are alike, so a leak shows as a rising median, while a burst of
    // buffers moves only the peak).
    let fd_peak = Arc::new(AtomicU64::new(fd_base as u64));
    let cycle_peaks = Arc::new(Mutex::new(Vec::<Vec<u64>>::new()));
    let monitor = {
        let (stop, fd_peak, cycle_peaks) = (
            Arc::clone(&stop),
            Arc::clone(&fd_peak),
            Arc::clone(&cycle_peaks),
        );
        let shared: Vec<Arc<NodeShared>> = nodes.iter().map(|n| Arc::clone(&n.shared)).collect();
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let phase = (t0.elapsed().as_millis() / PHASE.as_millis()) as u64;
                for (i, s) in shared.iter().enumerate() {
                    s.fault.store(schedule(phase, i) as u8, Ordering::SeqCst);
                }
                if let Some(f) = fds(pid) {
                    fd_peak.fetch_max(f as u64, Ordering::Relaxed);
                }
                if let Some(r) = rss_kib(pid) {
                    let cycle = (phase / CYCLE) as usize;
                    let mut peaks = cycle_peaks.lock().expect("lock");
                    if peaks.len() <= cycle {
                        peaks.resize(cycle + 1, Vec::new());
                    }
                    peaks[cycle].push(r);
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };

    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (stats, stop) = (Arc::clone(&stats), Arc::clone(&stop));
            thread::spawn(move || {
                let keepalive = i % 2 == 0;
                let mut conn = None;
                let mut n = i as u64;
                while !stop.load(Ordering::Relaxed) {
                    let (o, detail) = one_request(addr, &mut conn, keepalive, n, &stats);
                    stats.count(o, || format!("client {i} object {n}: {detail}"));
                    n += CLIENTS as u64;
                }
            })
        })
        .collect();

    // Warm-up: the first full cycle (every fault seen by every node).
    thread::sleep(cycle_time());
    let requests_warm = stats.requests.load(Ordering::Relaxed);
    if let Some(rest) = total.checked_sub(t0.elapsed()) {
        thread::sleep(rest);
    }
    let rss_end = rss_kib(pid).expect("weir is alive at the end of the load");
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client thread");
    }
    monitor.join().expect("monitor");
    let elapsed = t0.elapsed();
    for n in &nodes {
        n.set(Fault::Healthy);
    }
    // Every node refused connections for a while and listened again.
    let listens: Vec<u64> = nodes
        .iter()
        .map(|n| n.shared.listens.load(Ordering::SeqCst))
        .collect();

    // Descriptors come back to the baseline: client connections closed, pooled upstream
    // connections dropped after their 1 s idle timeout, hung upstream connections given up.
    let fd_settled = wait_for(Duration::from_secs(20), || {
        let f = fds(pid)?;
        (f <= fd_base).then_some(f)
    });
    let fd_end = fds(pid).unwrap_or(0);
    let crashed = weir.child.try_wait().ok().flatten();
    let log = weir.log();

    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let requests = get(&stats.requests);
    // Complete cycles only (the monitor may have sampled the start of one more).
    let full = (total.as_millis() / cycle_time().as_millis()) as usize;
    let mut per_cycle = cycle_peaks.lock().expect("lock").clone();
    per_cycle.truncate(full);
    let peaks: Vec<u64> = per_cycle
        .iter()
        .map(|c| c.iter().copied().max().unwrap_or(0))
        .collect();
    let medians: Vec<u64> = per_cycle
        .iter_mut()
        .map(|c| {
            c.sort_unstable();
            c.get(c.len() / 2).copied().unwrap_or(0)
        })
        .collect();
    // The first cycle is the warm-up (the process grows into its working set): RSS after it
    // is the median of the second cycle, at the end the median of the last one.
    let rss_warm = medians.get(1).copied().unwrap_or(0);
    let rss_last = medians.last().copied().unwrap_or(0);
    let cycle = cycle_time();
    println!(
        "faulty backends: {total:?} of load ({:.1} s), {CLIENTS} clients (half keep-alive)\n\
         requests {requests} ({requests_warm} in the warm-up): complete 200 {}, 502 {}, 504 {}, \
         cut after a mid-body fault {}, cut after the node itself stalled {}, failed {}, stale keep-alive connections skipped {}\n\
         RSS KiB: start {rss_start}, after warm-up {rss_warm}, last cycle {rss_last} \
         ({:+.1}%), when the load stopped {rss_end}\n\
         RSS KiB per {cycle:?} cycle: median {medians:?}, peak {peaks:?}\n\
         descriptors: baseline {fd_base}, peak {}, end {fd_end}; node listens {listens:?}",
        elapsed.as_secs_f64(),
        get(&stats.complete),
        get(&stats.bad_gateway),
        get(&stats.gateway_timeout),
        get(&stats.truncated),
        get(&stats.stalled),
        get(&stats.failed),
        get(&stats.stale),
        (rss_last as f64 / rss_warm as f64 - 1.0) * 100.0,
        get(&fd_peak),
    );

    assert!(crashed.is_none(), "weir exited: {crashed:?}\n{log}");
    assert!(
        listens.iter().all(|l| *l >= 3),
        "a node did not listen again after refusing: {listens:?}"
    );
    assert!(!log.contains("panicked"), "weir panicked:\n{log}");
    let failures = stats.failures.lock().expect("lock").clone();
    assert_eq!(
        get(&stats.failed),
        0,
        "requests that got neither a complete response, a clean 502/504 nor a cut after a \
         mid-body fault (first {}):\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Every kind of outcome happened: the faults really were exercised.
    for (what, c) in [
        ("complete 200", &stats.complete),
        ("502", &stats.bad_gateway),
        ("504", &stats.gateway_timeout),
        ("cut response", &stats.truncated),
    ] {
        assert!(get(c) > 0, "no {what} in {requests} requests");
    }
    assert!(
        medians.len() >= 3 && rss_last * 100 <= rss_warm * 110,
        "RSS grew by more than 10% after the warm-up: median per cycle {medians:?} KiB"
    );
    assert!(
        fd_settled.is_some(),
        "descriptors did not come back to the baseline {fd_base}: {fd_end} open"
    );
    drop(weir);
    let _ = std::fs::remove_dir_all(&d);
}
