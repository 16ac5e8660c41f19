//! A small HTTP/1.1 server for fakes: keepalive, a thread of its own running a tokio
//! runtime, an async handler per request, [`Fault`] injection, a log of every request, and
//! stop/restart on the same port (while stopped, the port stays reserved and refuses
//! connections).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the server misbehaves, for every request that arrives while it is set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    /// Answer normally.
    #[default]
    None,
    /// Answer this status with a text body.
    Status(u16),
    /// Read the request and never answer; the connection is closed when the fault is
    /// cleared or the server stops.
    Hang,
    /// Answer 200 `application/json` with a body that is not JSON.
    Garbage,
}

/// One request as the server received it.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    pub method: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// The query parameters, decoded, in order.
    pub query: Vec<(String, String)>,
    /// Lower-cased names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    pub fn json(status: u16, v: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: v.to_string().into_bytes(),
        }
    }

    pub fn with_header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }
}

pub type Handler =
    Arc<dyn Fn(Recorded) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync>;

enum Listening {
    Yes(JoinHandle<()>),
    /// Bound, not listening: connections are refused and the port stays ours.
    No(TcpSocket),
}

struct Shared {
    handler: Handler,
    fault: Mutex<Fault>,
    requests: Mutex<Vec<Recorded>>,
    /// Bumped by `stop`: open connections close.
    generation: watch::Sender<u64>,
    live: AtomicUsize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running server. Dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    listening: Mutex<Option<Listening>>,
    rt: Option<Runtime>,
}

fn socket(addr: SocketAddr) -> TcpSocket {
    let s = TcpSocket::new_v4().expect("socket");
    s.set_reuseaddr(true).expect("SO_REUSEADDR");
    s.bind(addr).expect("bind the fake's port");
    s
}

impl Server {
    /// Start on an ephemeral port of 127.0.0.1.
    pub fn start(handler: Handler) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fake-registry")
            .enable_all()
            .build()
            .expect("runtime");
        let s = socket(([127, 0, 0, 1], 0).into());
        let addr = s.local_addr().expect("local addr");
        let server = Server {
            addr,
            shared: Arc::new(Shared {
                handler,
                fault: Mutex::new(Fault::None),
                requests: Mutex::new(Vec::new()),
                generation: watch::channel(0).0,
                live: AtomicUsize::new(0),
            }),
            listening: Mutex::new(Some(Listening::No(s))),
            rt: Some(rt),
        };
        server.restart();
        server
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_fault(&self, f: Fault) {
        *lock(&self.shared.fault) = f;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
    }

    /// Close the listener and every open connection; the port refuses connections.
    pub fn stop(&self) {
        let Some(rt) = &self.rt else { return };
        let mut l = lock(&self.listening);
        if let Some(Listening::Yes(task)) = l.take() {
            task.abort();
            let _ = rt.block_on(task);
            *l = Some(Listening::No(socket(self.addr)));
        }
        self.shared.generation.send_modify(|g| *g += 1);
        for _ in 0..400 {
            if self.shared.live.load(Ordering::SeqCst) == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Listen again on the same port (no-op when listening).
    pub fn restart(&self) {
        let Some(rt) = &self.rt else { return };
        let mut l = lock(&self.listening);
        let Some(Listening::No(s)) = l.take() else {
            return;
        };
        let _guard = rt.enter();
        let listener = s.listen(1024).expect("listen");
        let shared = Arc::clone(&self.shared);
        *l = Some(Listening::Yes(rt.spawn(accept(listener, shared))));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let s = Arc::clone(&shared);
        s.live.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let generation = s.generation.subscribe();
            connection(stream, &s, generation).await;
            s.live.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// `%XX` and `+` decoding of a query component.
pub fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_target(target: &str) -> (String, Vec<(String, String)>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    (decode(path), query)
}

async fn read_request<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Option<Recorded> {
    let mut line = String::new();
    if r.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let (path, query) = parse_target(parts.next()?);
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).await.ok()? == 0 {
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
    let mut body = vec![0; len.min(1 << 20)];
    r.read_exact(&mut body).await.ok()?;
    Some(Recorded {
        method,
        path,
        query,
        headers,
        body,
    })
}

fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

async fn connection(stream: TcpStream, s: &Shared, mut generation: watch::Receiver<u64>) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    loop {
        let req = tokio::select! {
            req = read_request(&mut r) => req,
            _ = generation.changed() => return,
        };
        let Some(req) = req else { return };
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        lock(&s.requests).push(req.clone());
        let fault = lock(&s.fault).clone();
        let reply = match fault {
            Fault::None => tokio::select! {
                reply = (s.handler)(req) => reply,
                _ = generation.changed() => return,
            },
            Fault::Status(code) => Reply::text(code, "injected failure"),
            Fault::Garbage => Reply {
                status: 200,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: b"<html>{\"not\": json".to_vec(),
            },
            Fault::Hang => {
                while *lock(&s.fault) == Fault::Hang {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                        _ = generation.changed() => return,
                    }
                }
                return;
            }
        };
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Length: {}\r\n",
            reply.status,
            reason(reply.status),
            reply.body.len()
        );
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&reply.body);
        if w.write_all(&out).await.is_err() || w.flush().await.is_err() || close {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_targets() {
        let (p, q) = parse_target("/v1/health/service/a%20b?passing=true&x=%2Fy+z&flag");
        assert_eq!(p, "/v1/health/service/a b");
        assert_eq!(
            q,
            [
                ("passing".to_owned(), "true".to_owned()),
                ("x".to_owned(), "/y z".to_owned()),
                ("flag".to_owned(), String::new())
            ]
        );
        assert_eq!(decode("%zz%4"), "%zz%4");
    }
}
