//! Limits on client (downstream) connections: `server.client_header_timeout`,
//! `client_body_timeout`, `keepalive_timeout`, `send_timeout`, `client_max_body_size`,
//! `large_client_header_buffers`, `max_connections` and the HTTP/2 limits (docs/hardening.md).
//!
//! [`DownstreamApp`] is the connection loop around Pingora's `HttpProxy`: it counts and caps
//! connections, wraps each one in [`io::Guarded`] (head deadlines and sizes), and serves
//! HTTP/1 requests one after another itself, as Pingora's loop does, so that it can re-arm the
//! wrapper before each request. HTTP/2 connections go to Pingora's own loop, with the idle
//! timeout and stream limits set on the `HttpProxy` ([`configure`]).
//!
//! Per request ([`on_request`], from the proxy's `request_filter`): the body and send timeouts
//! (Pingora's per-read and per-write timeouts) and the body size by `Content-Length`; per body
//! chunk ([`on_body`]): the size of a body without one.

mod io;

use async_trait::async_trait;
use pingora::apps::ReusedHttpStream;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Ssl, Stream, ALPN};
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weir_config::server::DownstreamLimits;

pub use io::Guarded;

/// What a connection loop and a request check need, shared by all connections.
#[derive(Debug)]
pub struct Limits {
    pub client_header_timeout: Duration,
    pub client_body_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub send_timeout: Duration,
    /// 0: unlimited.
    pub client_max_body_size: u64,
    pub header_buffers: HeaderBuffers,
    /// 0: unlimited.
    pub max_connections: usize,
    pub stats: Stats,
}

#[derive(Debug, Clone, Copy)]
pub struct HeaderBuffers {
    /// Longest request line or header line.
    pub size: usize,
    /// Largest request head.
    pub total: usize,
}

impl Limits {
    pub fn new(d: &DownstreamLimits) -> Self {
        let b = d.large_client_header_buffers;
        Limits {
            client_header_timeout: d.client_header_timeout,
            client_body_timeout: d.client_body_timeout,
            keepalive_timeout: d.keepalive_timeout,
            send_timeout: d.send_timeout,
            client_max_body_size: d.client_max_body_size,
            header_buffers: HeaderBuffers {
                size: b.size,
                total: b.count.saturating_mul(b.size),
            },
            max_connections: d.max_connections,
            stats: Stats::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(&DownstreamLimits::default())
    }
}

/// A deadline that closed a client connection or failed its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    Keepalive,
    Header,
    Body,
    Send,
}

/// A request refused for its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// 414: the request line is longer than `large_client_header_buffers.size`.
    UriTooLong,
    /// 431: a header line longer than `size`, or a head larger than `count × size`.
    HeaderTooLarge,
    /// 413: the body is larger than `client_max_body_size`.
    BodyTooLarge,
}

impl Reject {
    /// The complete response a refused head gets, written by [`Guarded`] (Pingora has not
    /// parsed the head, so it cannot answer). `Content-Length` is checked by a test.
    fn response(self) -> &'static [u8] {
        match self {
            Reject::UriTooLong => b"HTTP/1.1 414 URI Too Long\r\nContent-Type: application/json\r\nContent-Length: 33\r\nConnection: close\r\n\r\n{\"error_msg\":\"414 URI Too Long\"}\n",
            Reject::BodyTooLarge => b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json\r\nContent-Length: 45\r\nConnection: close\r\n\r\n{\"error_msg\":\"413 Request Entity Too Large\"}\n",
            Reject::HeaderTooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\nContent-Length: 52\r\nConnection: close\r\n\r\n{\"error_msg\":\"431 Request Header Fields Too Large\"}\n",
        }
    }
}

/// Counters of what the limits did (`weir_downstream_*` metrics).
#[derive(Debug, Default)]
pub struct Stats {
    open: AtomicUsize,
    refused: AtomicU64,
    timeouts: [AtomicU64; 4],
    rejected: [AtomicU64; 3],
}

impl Stats {
    pub fn timed_out(&self, k: TimeoutKind) {
        self.timeouts[k as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self, r: Reject) {
        self.rejected[r as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Open client connections.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections refused by `max_connections`.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub fn timeouts(&self, k: TimeoutKind) -> u64 {
        self.timeouts[k as usize].load(Ordering::Relaxed)
    }

    pub fn rejections(&self, r: Reject) -> u64 {
        self.rejected[r as usize].load(Ordering::Relaxed)
    }

    /// Add the `downstream_*` families to a scrape.
    pub fn collect(&self, f: &mut crate::metrics::Families) {
        f.gauge(
            "downstream_connections",
            "Open client connections.",
            &[],
            self.open() as f64,
        );
        f.counter(
            "downstream_connections_refused_total",
            "Client connections closed at once because server.max_connections were open.",
            &[],
            self.refused(),
        );
        for (k, name) in [
            (TimeoutKind::Keepalive, "keepalive"),
            (TimeoutKind::Header, "header"),
            (TimeoutKind::Body, "body"),
            (TimeoutKind::Send, "send"),
        ] {
            f.counter(
                "downstream_timeouts_total",
                "Client connections closed or requests failed by a server.*_timeout, by kind.",
                &[("kind", name)],
                self.timeouts(k),
            );
        }
        for (r, name) in [
            (Reject::UriTooLong, "uri_too_long"),
            (Reject::HeaderTooLarge, "header_too_large"),
            (Reject::BodyTooLarge, "body_too_large"),
        ] {
            f.counter(
                "downstream_rejected_total",
                "Requests refused for their size (414, 431, 413), by reason.",
                &[("reason", name)],
                self.rejections(r),
            );
        }
    }
}

/// An open connection in [`Stats`]; dropping it closes it in the count.
struct Open<'a>(&'a Stats);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Set the HTTP/2 options and server options of Weir's `HttpProxy` from `d`.
pub fn configure<S, C: pingora::connectors::http::custom::Connector>(
    app: &mut pingora::proxy::HttpProxy<S, C>,
    d: &DownstreamLimits,
) {
    let mut options = app.server_options.take().unwrap_or_default();
    options.h2_idle_timeout = Some(d.http2_idle_timeout);
    app.server_options = Some(options);
    app.h2_options = Some(h2_options(d));
}

/// h2's limits, set explicitly rather than left to h2's and Pingora's defaults. The reset
/// limits bound the work a client can cause with streams it opens and cancels at once
/// (CVE-2023-44487, "rapid reset") or makes Weir reset (CVE-2024-27316-like floods).
pub fn h2_options(d: &DownstreamLimits) -> pingora::protocols::http::v2::server::H2Options {
    let mut o = pingora::protocols::http::v2::server::H2Options::new();
    o.max_concurrent_streams(d.http2_max_concurrent_streams)
        // The decoded header list; nginx's large_client_header_buffers bound HTTP/1 heads.
        .max_header_list_size(
            u32::try_from(d.large_client_header_buffers.count * d.large_client_header_buffers.size)
                .unwrap_or(u32::MAX),
        )
        // Streams reset by the client before Weir accepted them: beyond this the connection
        // is closed with ENHANCE_YOUR_CALM (h2's default, 20).
        .max_pending_accept_reset_streams(20)
        // Streams Weir reset for the client's errors, per connection (h2's default, 1024).
        .max_local_error_reset_streams(Some(1024))
        // Remembered reset streams (h2's default, 10).
        .max_concurrent_reset_streams(10)
        // Queued response data per stream (h2's default, 400 KiB).
        .max_send_buffer_size(400 * 1024);
    o
}

/// The connection loop around `inner` (module docs).
pub struct DownstreamApp<A> {
    inner: Arc<A>,
    limits: Arc<Limits>,
    /// `true` once the graceful shutdown closes idle connections (`cleanup`): a connection
    /// that has not sent its first byte yet is then closed like an idle keep-alive one.
    closing: tokio::sync::watch::Sender<bool>,
}

impl<A> DownstreamApp<A> {
    pub fn new(inner: A, limits: Arc<Limits>) -> Self {
        DownstreamApp {
            inner: Arc::new(inner),
            limits,
            closing: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> DownstreamApp<A> {
    /// One HTTP/1 request on a [`Guarded`] connection; `None` as soon as a limit ended the
    /// connection during its head (`ended`): the request is dropped quietly, the limit
    /// already counted it, and Pingora does not log a broken head for each such connection.
    async fn serve(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
        ended: &AtomicBool,
    ) -> Option<ReusedHttpStream> {
        tokio::select! {
            // Pingora first: the read that sets `ended` happens in this poll, and the flag
            // is checked right after it.
            biased;
            r = self.inner.process_new_http(session, shutdown) => r,
            () = std::future::poll_fn(|_| {
                if ended.load(Ordering::Relaxed) {
                    std::task::Poll::Ready(())
                } else {
                    std::task::Poll::Pending
                }
            }) => {
                log::debug!("client connection ended by a downstream limit");
                None
            }
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for DownstreamApp<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let stats = &self.limits.stats;
        let open = stats.open.fetch_add(1, Ordering::Relaxed) + 1;
        let _open = Open(stats);
        let max = self.limits.max_connections;
        if max > 0 && open > max {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            // Dropping the stream closes it.
            return None;
        }
        let mut guarded = Guarded::new(stream, Arc::clone(&self.limits));
        let ended = guarded.ended();
        let options = self.inner.server_options();
        let tls = guarded.get_ssl_digest().is_some();
        let h2 = if tls {
            matches!(guarded.selected_alpn_proto(), Some(ALPN::H2))
        } else if options.is_some_and(|o| o.h2c) {
            let mut closing = self.closing.subscribe();
            if *closing.borrow_and_update() {
                return None;
            }
            tokio::select! {
                biased;
                first = guarded.starts_with_preface() => match first {
                    Ok(h2) => h2,
                    // Closed, or silent past keepalive_timeout / client_header_timeout.
                    Err(_) => return None,
                },
                // A graceful shutdown closing idle connections: this one has sent nothing.
                _ = closing.changed() => return None,
            }
        } else {
            false
        };
        if h2 {
            guarded.pass_through();
            // Pingora's own loop: it peeks the preface again (Guarded kept it) and serves
            // HTTP/2 with the options `configure` set.
            return ServerApp::process_new(&self.inner, Box::new(guarded), shutdown).await;
        }
        let mut session = ServerSession::new_http1(Box::new(guarded));
        if *shutdown.borrow() {
            session.set_keepalive(None);
        } else {
            // No timeout from Pingora (0): the idle wait is Guarded's keepalive_timeout, which
            // may have fractions of a second.
            session.set_keepalive(Some(0));
        }
        session.set_keepalive_reuses_remaining(options.and_then(|o| o.keepalive_request_limit));
        let mut result = self.serve(session, shutdown, &ended).await;
        while let Some((stream, settings)) = result.map(|r| r.consume()) {
            // The stream is the `Guarded` boxed above: take it back (no allocation) to wait
            // for the next request under keepalive_timeout.
            let mut g = match stream.into_any().downcast::<Guarded>() {
                Ok(g) => g,
                Err(_) => {
                    log::error!("client connection of an unexpected type; closed");
                    return None;
                }
            };
            g.rearm();
            let mut session = ServerSession::new_http1(g);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            result = self.serve(session, shutdown, &ended).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.closing.send_replace(true);
        self.inner.http_cleanup().await;
    }
}

/// Per request, before routing: the body and send timeouts, and `client_max_body_size` by
/// `Content-Length`. `Ok(true)`: refused with 413 (the response is sent, the connection will
/// close), nothing reached a node.
pub async fn on_request(limits: &Limits, session: &mut Session) -> Result<bool> {
    session.set_read_timeout(Some(limits.client_body_timeout));
    session.set_write_timeout(Some(limits.send_timeout));
    let max = limits.client_max_body_size;
    if max == 0 {
        return Ok(false);
    }
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        limits.stats.rejected(Reject::BodyTooLarge);
        // The body is not read: the connection cannot be reused.
        session.set_keepalive(None);
        crate::respond::respond_json(
            session,
            413,
            r#"{"error_msg":"413 Request Entity Too Large"}"#,
            None,
        )
        .await?;
        return Ok(true);
    }
    Ok(false)
}

/// Per chunk of request body, before it is sent on: a body without a `Content-Length` that
/// grows past `client_max_body_size` fails with 413 (if the response has not started) and the
/// node never gets the rest, so it never sees a complete request.
pub fn on_body(limits: &Limits, session: &Session) -> Result<()> {
    let max = limits.client_max_body_size;
    if max > 0 && session.body_bytes_read() as u64 > max {
        limits.stats.rejected(Reject::BodyTooLarge);
        let mut e = Error::explain(
            ErrorType::HTTPStatus(413),
            "request body larger than server.client_max_body_size",
        );
        // The client's doing: never retried, not the node's failure.
        e.as_down();
        e.set_retry(false);
        return Err(e);
    }
    Ok(())
}

/// Count a request's failure if a downstream timeout caused it (from the proxy's logging).
pub fn on_error(limits: &Limits, e: &Error) {
    if *e.esource() != ErrorSource::Downstream {
        return;
    }
    match e.etype() {
        ErrorType::ReadTimedout => limits.stats.timed_out(TimeoutKind::Body),
        ErrorType::WriteTimedout => limits.stats.timed_out(TimeoutKind::Send),
        _ => {}
    }
}
