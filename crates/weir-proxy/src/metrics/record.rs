//! Counting one request, once it has ended (`logging`), and classifying failed attempts.

use super::{MetricsTables, RouteMetrics};
use pingora::prelude::*;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How an attempt without a usable response failed: its `outcome` label
/// (`upstream_attempts_total`), by index into [`super::OUTCOMES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fail {
    /// The TCP connection could not be made (refused, unreachable, reset during connect).
    Connect = 1,
    /// The TLS handshake failed or the certificate was refused.
    Tls = 2,
    /// Connect, write or read timed out.
    Timeout = 3,
    /// The connection broke after it was made (closed, reset, write or read error, a
    /// malformed response header).
    Reset = 4,
}

impl Fail {
    /// The class of `e`, the error of an attempt that failed `connecting` or later.
    pub(crate) fn of(e: &Error, timed_out: bool, connecting: bool) -> Fail {
        if timed_out {
            return Fail::Timeout;
        }
        match e.etype() {
            ErrorType::TLSHandshakeFailure
            | ErrorType::TLSWantX509Lookup
            | ErrorType::InvalidCert
            | ErrorType::HandshakeError => Fail::Tls,
            _ if connecting => Fail::Connect,
            _ => Fail::Reset,
        }
    }

    pub(crate) fn timed_out(self) -> bool {
        self == Fail::Timeout
    }
}

/// What a finished request contributes to the route families.
pub(crate) struct Finished {
    /// The status the client received.
    pub status: u16,
    /// The (host, uri) pair of the route that matched.
    pub pair: usize,
    /// Index of the last node attempted in the route's upstream.
    pub node: Option<usize>,
    /// Consumer number (key-auth) or name (an embedder's hook).
    pub consumer_id: Option<u32>,
    pub consumer: Option<std::sync::Arc<str>>,
    pub request_time: Duration,
    /// The last attempt's time to its response header, when one was relayed.
    pub upstream_time: Option<Duration>,
    pub ingress: u64,
    pub egress: u64,
}

/// Count a finished request: `http_requests_total`, and for the route (or the no-route cell)
/// `http_status`, `http_latency` and `bandwidth`.
pub(crate) fn record_request(m: &MetricsTables, route: Option<&RouteMetrics>, f: &Finished) {
    m.process.requests.fetch_add(1, Ordering::Relaxed);
    let cell = match route {
        Some(r) => match r.cell(f.pair, f.node) {
            Some(c) => c,
            None => return,
        },
        None => &m.no_route,
    };
    let consumer = f.consumer_id.unwrap_or_else(|| match (&f.consumer, route) {
        // A consumer an embedder's hook set: its number from the configuration, if it is
        // a configured consumer (others count as no consumer, which bounds the label).
        (Some(name), Some(r)) => r.consumer_ids.get(name).map_or(u32::MAX, |&id| id),
        _ => u32::MAX,
    });
    let c = if consumer == u32::MAX {
        cell.by_consumer.get_or_insert_with(1, Box::default)
    } else {
        cell.consumer(consumer)
    };
    c.codes
        .get_or_default(u64::from(f.status))
        .fetch_add(1, Ordering::Relaxed);
    c.latency[0].observe(f.request_time);
    if let Some(u) = f.upstream_time {
        c.latency[1].observe(u);
    }
    c.latency[2].observe(
        f.request_time
            .saturating_sub(f.upstream_time.unwrap_or_default()),
    );
    c.bandwidth[0].fetch_add(f.ingress, Ordering::Relaxed);
    c.bandwidth[1].fetch_add(f.egress, Ordering::Relaxed);
}

/// Count the finished request in the metrics (see [`crate::metrics`]).
pub(crate) fn count_request(
    metrics: &MetricsTables,
    session: &pingora::proxy::Session,
    ctx: &crate::ctx::RequestCtx,
) {
    let resp = session.response_written();
    // nginx's 499: the client went away before a response.
    let status = resp.map_or(499, |r| r.status.as_u16());
    let request_time = ctx.start.map(|s| s.elapsed()).unwrap_or_default();
    let route = ctx.hook.route();
    if let Some(m) = ctx.upstream.as_ref().and_then(|u| u.metrics.as_ref()) {
        m.requests.fetch_add(1, Ordering::Relaxed);
    }
    let egress =
        resp.map_or(0, super::response_head_size) + session.as_ref().body_bytes_sent() as u64;
    let ingress =
        super::request_head_size(session.req_header()) + session.as_ref().body_bytes_read() as u64;
    let finished = Finished {
        status,
        pair: ctx.hook.pair,
        node: ctx.tries.last_node,
        consumer_id: ctx.hook.consumer_id,
        consumer: ctx.hook.consumer_arc().cloned(),
        request_time,
        upstream_time: ctx.tries.upstream_time,
        ingress,
        egress,
    };
    record_request(metrics, route.and_then(|r| r.metrics.as_ref()), &finished);
}
