//! A real HTTP/1.1 backend: thread per connection, keepalive, and switchable behaviour.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How the backend answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// 200 with the backend's name as body and `X-Node` header.
    Ok,
    /// This status, body = name.
    Status(u16),
    /// Wait, then answer 200.
    Delay(Duration),
    /// Read the request, then close the connection without answering.
    Drop,
    /// Read the request and never answer (until stopped).
    Hang,
    /// Answer the first request of each connection; close the connection on any later one
    /// without answering (a keepalive connection that died while pooled).
    DropReused,
    /// Keep each request until [`Backend::release`] is called, then answer 200: lets a test
    /// know exactly how many requests are in flight at once ([`Backend::holding`]).
    Hold,
}

/// What the backend saw of one request.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// Lower-cased header names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    /// TLS backends: the SNI the client sent.
    pub sni: Option<String>,
    /// TLS backends: the common name of the client certificate, if one was presented.
    pub client_cert: Option<String>,
}

/// TLS settings of a backend: its identity, and optionally a CA whose client certificates it
/// requires (mTLS).
#[derive(Clone)]
pub struct TlsConfig {
    pub identity: crate::pki::Identity,
    pub require_client_ca: Option<openssl::x509::X509>,
}

impl TlsConfig {
    fn acceptor(&self) -> openssl::ssl::SslAcceptor {
        use openssl::ssl::{SslAcceptor, SslMethod, SslVerifyMode};
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
        b.set_certificate(&self.identity.cert).expect("cert");
        b.set_private_key(&self.identity.key).expect("key");
        if let Some(ca) = &self.require_client_ca {
            let mut store = openssl::x509::store::X509StoreBuilder::new().expect("store");
            store.add_cert(ca.clone()).expect("ca");
            b.set_verify_cert_store(store.build())
                .expect("verify store");
            b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        }
        b.build()
    }
}

struct Shared {
    name: String,
    mode: Mutex<Mode>,
    hits: AtomicU64,
    conns: AtomicU64,
    /// Connections accepted and not yet closed.
    live: AtomicU64,
    /// Requests kept by `Mode::Hold` right now.
    holding: AtomicU64,
    /// Set by `release()`: held requests are answered.
    released: AtomicBool,
    stopped: AtomicBool,
    seen: Mutex<Vec<Seen>>,
    open: Mutex<Vec<TcpStream>>,
}

/// A running backend. Dropping it stops it.
pub struct Backend {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Backend {
    /// Start a backend named `name` on an ephemeral port.
    pub fn start(name: &str) -> Backend {
        Self::start_on(name, "127.0.0.1:0")
    }

    /// Start a backend on a given address (e.g. to bring a stopped node back on its port).
    pub fn start_on(name: &str, addr: &str) -> Backend {
        Self::start_with(name, addr, None)
    }

    /// Start an HTTPS backend on an ephemeral port.
    pub fn start_tls(name: &str, tls: TlsConfig) -> Backend {
        Self::start_with(name, "127.0.0.1:0", Some(tls))
    }

    /// Start an HTTPS backend whose certificate `ca` issues for `dns` names and `ips`; no
    /// client certificate required.
    pub fn start_https(
        name: &str,
        ca: &crate::pki::TestCa,
        dns: &[&str],
        ips: &[std::net::IpAddr],
    ) -> Backend {
        Self::start_tls(
            name,
            TlsConfig {
                identity: ca.issue(name, dns, ips, false),
                require_client_ca: None,
            },
        )
    }

    fn start_with(name: &str, addr: &str, tls: Option<TlsConfig>) -> Backend {
        let acceptor = tls.map(|t| Arc::new(t.acceptor()));
        let listener = TcpListener::bind(addr).expect("bind backend");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            mode: Mutex::new(Mode::Ok),
            hits: AtomicU64::new(0),
            conns: AtomicU64::new(0),
            live: AtomicU64::new(0),
            holding: AtomicU64::new(0),
            released: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            seen: Mutex::new(Vec::new()),
            open: Mutex::new(Vec::new()),
        });
        let s = Arc::clone(&shared);
        thread::spawn(move || {
            for stream in listener.incoming() {
                if s.stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                s.conns.fetch_add(1, Ordering::SeqCst);
                s.live.fetch_add(1, Ordering::SeqCst);
                if let Ok(c) = stream.try_clone() {
                    s.open.lock().expect("lock").push(c);
                }
                let s2 = Arc::clone(&s);
                let s3 = Arc::clone(&s);
                let acceptor = acceptor.clone();
                thread::spawn(move || {
                    let _ = stream.set_nodelay(true);
                    // `open` keeps a clone for stop(); close the socket itself when done.
                    let raw = stream.try_clone();
                    match acceptor {
                        None => serve(stream, None, None, s2),
                        Some(a) => {
                            // A failed handshake (e.g. no client certificate) just closes.
                            if let Ok(tls) = a.accept(stream) {
                                let sni = tls
                                    .ssl()
                                    .servername(openssl::ssl::NameType::HOST_NAME)
                                    .map(str::to_owned);
                                let client = tls.ssl().peer_certificate().and_then(|c| {
                                    c.subject_name()
                                        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
                                        .next()
                                        .and_then(|e| e.data().to_string().ok())
                                });
                                serve(tls, sni, client, s2);
                            }
                        }
                    }
                    if let Ok(raw) = raw {
                        let _ = raw.shutdown(std::net::Shutdown::Both);
                    }
                    s3.live.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Backend { addr, shared }
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn set_mode(&self, m: Mode) {
        if m == Mode::Hold {
            self.shared.released.store(false, Ordering::SeqCst);
        }
        *self.shared.mode.lock().expect("lock") = m;
    }

    /// Answer every request kept by [`Mode::Hold`] (and any that arrives later).
    pub fn release(&self) {
        self.shared.released.store(true, Ordering::SeqCst);
    }

    /// Requests kept by [`Mode::Hold`] right now.
    pub fn holding(&self) -> u64 {
        self.shared.holding.load(Ordering::SeqCst)
    }

    /// Connections accepted and not yet closed by either side.
    pub fn live_connections(&self) -> u64 {
        self.shared.live.load(Ordering::SeqCst)
    }

    /// Requests answered or dropped so far.
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.conns.load(Ordering::SeqCst)
    }

    /// Every request seen, oldest first.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().expect("lock").clone()
    }

    /// Stop listening and close every connection (the port then refuses connections).
    pub fn stop(&self) {
        if self.shared.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        // Wake the accept loop so it sees the flag and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for c in self.shared.open.lock().expect("lock").drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        // Wait until the port refuses connections.
        for _ in 0..200 {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(50)).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_request<S: Read>(r: &mut BufReader<S>) -> Option<Seen> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        target,
        headers,
        body,
        ..Seen::default()
    })
}

fn serve<S: Read + Write>(stream: S, sni: Option<String>, client: Option<String>, s: Arc<Shared>) {
    let mut r = BufReader::new(stream);
    let mut served = 0u64;
    while let Some(mut req) = read_request(&mut r) {
        served += 1;
        req.sni = sni.clone();
        req.client_cert = client.clone();
        if s.stopped.load(Ordering::SeqCst) {
            return;
        }
        s.hits.fetch_add(1, Ordering::SeqCst);
        let close = req
            .headers
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        s.seen.lock().expect("lock").push(req);
        let mode = s.mode.lock().expect("lock").clone();
        let status = match mode {
            Mode::Ok => 200,
            Mode::Status(c) => c,
            Mode::Delay(d) => {
                thread::sleep(d);
                200
            }
            Mode::Drop => return,
            Mode::DropReused if served > 1 => return,
            Mode::DropReused => 200,
            Mode::Hold => {
                s.holding.fetch_add(1, Ordering::SeqCst);
                while !s.released.load(Ordering::SeqCst) && !s.stopped.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(2));
                }
                s.holding.fetch_sub(1, Ordering::SeqCst);
                200
            }
            Mode::Hang => {
                while !s.stopped.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(20));
                }
                return;
            }
        };
        let body = s.name.as_bytes();
        let head = format!(
            "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nX-Node: {}\r\n{}\r\n",
            reason(status),
            body.len(),
            s.name.trim(),
            if close { "Connection: close\r\n" } else { "" }
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        let w = r.get_mut();
        if w.write_all(&out).and_then(|_| w.flush()).is_err() || close {
            return;
        }
    }
}

/// The standard reason phrase of `status` (empty for a code without one).
fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// A port on 127.0.0.1 that refuses connections for as long as this value lives: a socket
/// bound to it that never listens. Unlike a released [`crate::free_port`], the port cannot be
/// handed to another socket meanwhile (another test's backend or proxy binding an ephemeral
/// port), so a dead node stays dead for the whole test.
pub struct RefusedPort {
    _socket: tokio::net::TcpSocket,
    addr: SocketAddr,
}

impl RefusedPort {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Backend {
    /// A dead node: an address that refuses connections until the returned value is dropped.
    pub fn refused() -> RefusedPort {
        Self::refused_on([127, 0, 0, 1])
    }

    /// A dead node on another loopback address (`127.0.0.0/8` is all loopback on Linux), so
    /// per-node metrics can tell it from the other nodes by IP.
    pub fn refused_on(ip: [u8; 4]) -> RefusedPort {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind((ip, 0).into()).expect("bind a refused port");
        let addr = socket.local_addr().expect("local addr");
        RefusedPort {
            _socket: socket,
            addr,
        }
    }
}
