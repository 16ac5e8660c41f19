//! [`Guarded`]: the client connection as Pingora reads it, with the deadlines and size limits
//! Pingora does not have.
//!
//! Pingora 0.9 applies its keepalive timeout to every read of a request head, so a client
//! that sends one header line every few seconds is never closed; it also buffers a head of up
//! to 1 MiB. `Guarded` watches the bytes of each request head as they are read:
//!
//! - before a head's first byte, the connection may be idle for `keepalive_timeout`;
//! - from that byte on, the whole head must arrive within `client_header_timeout`;
//! - a request line longer than `large_client_header_buffers.size` is answered 414, a longer
//!   header line or a head larger than `count × size` 431, before Pingora buffers more.
//!
//! When the head is complete (its empty line seen), reads pass through untouched: the body
//! and send timeouts are Pingora's per-read and per-write timeouts, set for each request. The
//! connection loop ([`super::DownstreamApp`]) re-arms the wrapper before each request.
//!
//! Cost: one timer per connection, reset (not re-created) for each request; the scan is one
//! pass over the head's bytes, without allocation.

use super::{Limits, Reject, TimeoutKind};
use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How long a refused connection is read (and the bytes discarded) after its error response,
/// so that the client reads the response instead of a reset (nginx's lingering close).
const LINGER: Duration = Duration::from_secs(2);
/// At most this many bytes are discarded while lingering.
const LINGER_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the first byte of a request head (`keepalive_timeout`).
    Idle,
    /// Inside a request head (`client_header_timeout` from its first byte).
    Head,
    /// The head is complete: reads pass through until the next request.
    Body,
    /// Not HTTP/1 (HTTP/2 after the preface): Pingora's and h2's limits apply.
    Passthrough,
    /// Writing a refusal, then lingering.
    Refusing(Phase),
    /// Timed out or refused: every read is end of stream.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Write(usize),
    Flush,
    Shutdown,
    Drain(usize),
}

/// Where the scan of a request head stands.
#[derive(Debug, Default, Clone, Copy)]
struct Scan {
    /// Bytes of the head so far (leading empty lines included).
    head: usize,
    /// Bytes of the current line so far.
    line: usize,
    /// The current line has a byte other than CR.
    content: bool,
    /// The request line has ended.
    request_line: bool,
    /// Header lines so far.
    headers: usize,
}

/// Pingora parses at most this many header lines (and answers 400 beyond): refused with 431
/// here first.
const MAX_HEADERS: usize = 256;

impl Scan {
    /// Scan `bytes`, the next bytes of a head: `Ok(true)` once the head's empty line is in
    /// them (the bytes after it are the body's), `Ok(false)` if the head goes on.
    ///
    /// Hand-written rather than parsed with httparse: it must see the limits cross as the
    /// bytes arrive, without a buffer, and httparse only parses a buffered head.
    fn feed(&mut self, bytes: &[u8], size: usize, total: usize) -> Result<bool, Reject> {
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'\n' {
                if self.content {
                    if self.request_line {
                        self.headers += 1;
                        if self.headers > MAX_HEADERS {
                            return Err(Reject::HeaderTooLarge);
                        }
                    }
                    self.request_line = true;
                } else if self.request_line {
                    // The empty line that ends the head (httparse skips empty lines before
                    // the request line, so do we).
                    self.head += i + 1;
                    if self.head > total {
                        return Err(Reject::HeaderTooLarge);
                    }
                    return Ok(true);
                }
                self.line = 0;
                self.content = false;
                continue;
            }
            self.line += 1;
            self.content |= b != b'\r';
            if self.line > size {
                return Err(if self.request_line {
                    Reject::HeaderTooLarge
                } else {
                    Reject::UriTooLong
                });
            }
        }
        self.head += bytes.len();
        if self.head > total {
            return Err(Reject::HeaderTooLarge);
        }
        Ok(false)
    }
}

/// A client connection with Weir's head deadlines and size limits (module docs).
pub struct Guarded {
    inner: Stream,
    state: State,
    scan: Scan,
    refusal: &'static [u8],
    /// Allocated once per connection; reset for each deadline.
    timer: Pin<Box<Sleep>>,
    limits: Arc<Limits>,
    /// The first bytes, read to tell HTTP/2's preface from HTTP/1 and served again to the
    /// first reads (`prefix_len` read, `prefix_pos` served).
    prefix: [u8; PREFACE.len()],
    prefix_len: usize,
    prefix_pos: usize,
    /// Set when a limit ended the connection while Pingora was reading a head (a timeout,
    /// or a refusal once sent): reads then stay pending and the connection loop, which
    /// watches this flag, drops the request instead of letting Pingora report a broken
    /// head (one error line per connection an attacker opens). One allocation per
    /// connection.
    ended: Arc<AtomicBool>,
}

/// The HTTP/2 client connection preface (RFC 9113, 3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("inner", &self.inner)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Guarded {
    /// Wrap a new connection, waiting for its first request.
    pub fn new(inner: Stream, limits: Arc<Limits>) -> Self {
        let deadline = Instant::now() + limits.keepalive_timeout;
        Guarded {
            inner,
            state: State::Idle,
            scan: Scan::default(),
            refusal: b"",
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            limits,
            prefix: [0; PREFACE.len()],
            prefix_len: 0,
            prefix_pos: 0,
            ended: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The flag set when a limit ended the connection during a head (see the field).
    pub fn ended(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.ended)
    }

    /// Wait for the next request on this connection (after a response).
    pub fn rearm(&mut self) {
        if matches!(self.state, State::Closed | State::Refusing(_)) {
            return;
        }
        self.state = State::Idle;
        self.scan = Scan::default();
        let deadline = Instant::now() + self.limits.keepalive_timeout;
        self.timer.as_mut().reset(deadline);
    }

    /// Stop watching: the connection speaks HTTP/2.
    pub fn pass_through(&mut self) {
        self.state = State::Passthrough;
    }

    /// Whether the connection starts with the HTTP/2 preface: its first bytes are read (under
    /// the idle deadline, then the head's) until they cannot be the preface or are all of it,
    /// and are served again to the next reads. Unlike Pingora's peek, which waits for 24
    /// bytes, a short HTTP/1 request is told apart by its first byte that differs. `Err`: the
    /// connection closed or a deadline passed.
    pub async fn starts_with_preface(&mut self) -> io::Result<bool> {
        std::future::poll_fn(|cx| self.poll_preface(cx)).await
    }

    fn poll_preface(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        loop {
            let have = self.prefix_len;
            if self.prefix[..have] != PREFACE[..have] {
                return Poll::Ready(Ok(false));
            }
            if have == PREFACE.len() {
                return Poll::Ready(Ok(true));
            }
            let mut rb = ReadBuf::new(&mut self.prefix[have..]);
            match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
                    }
                    if self.state == State::Idle {
                        self.head_started();
                    }
                    self.prefix_len += n;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if self.expired(cx) {
                        return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Read into `buf`: the bytes kept by [`Self::starts_with_preface`] first.
    fn poll_fill(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.prefix_pos < self.prefix_len {
            let n = (self.prefix_len - self.prefix_pos).min(buf.remaining());
            buf.put_slice(&self.prefix[self.prefix_pos..self.prefix_pos + n]);
            self.prefix_pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }

    /// The head's first byte arrived: its deadline starts.
    fn head_started(&mut self) {
        self.state = State::Head;
        let deadline = Instant::now() + self.limits.client_header_timeout;
        self.timer.as_mut().reset(deadline);
    }

    /// Whether the running deadline passed (and the connection is closed by it).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        let kind = if self.state == State::Idle {
            TimeoutKind::Keepalive
        } else {
            TimeoutKind::Header
        };
        self.limits.stats.timed_out(kind);
        self.state = State::Closed;
        true
    }

    fn refuse(&mut self, r: Reject) {
        self.limits.stats.rejected(r);
        self.refusal = r.response();
        self.state = State::Refusing(Phase::Write(0));
        self.timer.as_mut().reset(Instant::now() + LINGER);
    }

    /// Drive a refusal: write the response, end the write side, then read and discard what
    /// the client still sends until it closes or [`LINGER`] passes.
    fn poll_refusal(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let State::Refusing(phase) = self.state else {
                return Poll::Ready(());
            };
            let next = match phase {
                Phase::Write(done) if done < self.refusal.len() => {
                    match ready!(Pin::new(&mut self.inner).poll_write(cx, &self.refusal[done..])) {
                        Ok(n) if n > 0 => Phase::Write(done + n),
                        _ => {
                            self.state = State::Closed;
                            return Poll::Ready(());
                        }
                    }
                }
                Phase::Write(_) => Phase::Flush,
                Phase::Flush => match ready!(Pin::new(&mut self.inner).poll_flush(cx)) {
                    Ok(()) => Phase::Shutdown,
                    Err(_) => {
                        self.state = State::Closed;
                        return Poll::Ready(());
                    }
                },
                Phase::Shutdown => {
                    // Errors only mean the client is gone already.
                    let _ = ready!(Pin::new(&mut self.inner).poll_shutdown(cx));
                    Phase::Drain(0)
                }
                Phase::Drain(n) => {
                    let mut scratch = [0u8; 2048];
                    let mut rb = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
                        Poll::Ready(Ok(())) if !rb.filled().is_empty() => {
                            let n = n + rb.filled().len();
                            if n > LINGER_BYTES {
                                self.state = State::Closed;
                                return Poll::Ready(());
                            }
                            Phase::Drain(n)
                        }
                        Poll::Ready(_) => {
                            self.state = State::Closed;
                            return Poll::Ready(());
                        }
                        Poll::Pending => {
                            if self.timer.as_mut().poll(cx).is_ready() {
                                self.state = State::Closed;
                                return Poll::Ready(());
                            }
                            return Poll::Pending;
                        }
                    }
                }
            };
            self.state = State::Refusing(next);
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match this.state {
                State::Body | State::Passthrough => return this.poll_fill(cx, buf),
                State::Closed => {
                    // The connection loop sees the flag in the same poll and drops the
                    // request (no waker needed: it polls the flag right after this read).
                    this.ended.store(true, Ordering::Relaxed);
                    return Poll::Pending;
                }
                State::Refusing(_) => {
                    ready!(this.poll_refusal(cx));
                    continue;
                }
                State::Idle | State::Head => {}
            }
            let before = buf.filled().len();
            match this.poll_fill(cx, buf) {
                Poll::Ready(Ok(())) => {
                    if buf.filled().len() == before {
                        return Poll::Ready(Ok(()));
                    }
                    if this.state == State::Idle {
                        this.head_started();
                    }
                    let l = &this.limits.header_buffers;
                    let fed = this.scan.feed(&buf.filled()[before..], l.size, l.total);
                    match fed {
                        Ok(true) => this.state = State::Body,
                        Ok(false) => {}
                        Err(r) => {
                            // Pingora never sees the offending bytes.
                            buf.set_filled(before);
                            this.refuse(r);
                            continue;
                        }
                    }
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if this.expired(cx) {
                        // Closed: the loop above ends the request.
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if matches!(this.state, State::Refusing(_)) {
            ready!(this.poll_refusal(cx));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Guarded {
    async fn shutdown(&mut self) {
        use tokio::io::AsyncWriteExt;
        if let Err(e) = AsyncWriteExt::shutdown(self).await {
            log::debug!("failed to shut down a client connection: {e}");
        }
    }
}

impl UniqueID for Guarded {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Guarded {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Guarded {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Guarded {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest);
    }
}

impl GetSocketDigest for Guarded {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest);
    }
}

#[async_trait]
impl Peek for Guarded {
    /// The bytes [`Guarded::starts_with_preface`] kept, if they fill `buf`; otherwise no
    /// peeking (`false`). Never waits.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        let kept = &self.prefix[self.prefix_pos..self.prefix_len];
        if buf.len() > kept.len() {
            return Ok(false);
        }
        buf.copy_from_slice(&kept[..buf.len()]);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]], size: usize, total: usize) -> Result<bool, Reject> {
        let mut s = Scan::default();
        let mut done = false;
        for c in chunks {
            done = s.feed(c, size, total)?;
        }
        Ok(done)
    }

    #[test]
    fn finds_the_end_of_a_head_across_reads() {
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"], 64, 256),
            Ok(true)
        );
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\r\nHo", b"st: x\r\n\r", b"\n"], 64, 256),
            Ok(true)
        );
        assert_eq!(scan(&[b"\r\n\r\nGET / HTTP/1.1\n\n"], 64, 256), Ok(true));
        assert_eq!(
            scan(&[b"GET / HTTP/1.1\r\nHost: x\r\n"], 64, 256),
            Ok(false)
        );
    }

    #[test]
    fn refuses_long_lines_and_large_heads() {
        let long_uri = format!("GET /{} HTTP/1.1\r\n", "a".repeat(100));
        assert_eq!(
            scan(&[long_uri.as_bytes()], 64, 256),
            Err(Reject::UriTooLong)
        );
        let long_header = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(100));
        assert_eq!(
            scan(&[long_header.as_bytes()], 64, 256),
            Err(Reject::HeaderTooLarge)
        );
        let many: Vec<&[u8]> = std::iter::once(&b"GET / HTTP/1.1\r\n"[..])
            .chain(std::iter::repeat_n(&b"X-A: 0123456789\r\n"[..], 20))
            .collect();
        assert_eq!(scan(&many, 64, 256), Err(Reject::HeaderTooLarge));
        let whole: Vec<u8> = many.concat().into_iter().chain(*b"\r\n").collect();
        assert_eq!(scan(&[&whole], 64, 256), Err(Reject::HeaderTooLarge));
        let lots: Vec<&[u8]> = std::iter::once(&b"GET / HTTP/1.1\r\n"[..])
            .chain(std::iter::repeat_n(&b"X: 0\r\n"[..], 257))
            .collect();
        assert_eq!(scan(&lots, 64, 1 << 20), Err(Reject::HeaderTooLarge));
        assert_eq!(scan(&lots[..257], 64, 1 << 20), Ok(false));
    }

    #[test]
    fn refusals_are_well_formed() {
        for r in [
            Reject::UriTooLong,
            Reject::HeaderTooLarge,
            Reject::BodyTooLarge,
        ] {
            let text = std::str::from_utf8(r.response()).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(
                head.contains(&format!("Content-Length: {}\r\n", body.len())),
                "{head}"
            );
        }
    }
}
