//! The access log's view of a finished request: [`weir_accesslog::Entry`] over Pingora's
//! session and Weir's request context, borrowing everything (docs/observability.md).

use crate::ctx::RequestCtx;
use crate::proxy::request_host;
use crate::request_id::RequestIdValue;
use pingora::proxy::Session;
use smallvec::SmallVec;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};
use weir_accesslog::{AttemptRecord, Entry};

/// One finished request, for [`weir_accesslog::AccessLog::log`].
pub(crate) struct Finished<'a> {
    session: &'a Session,
    ctx: &'a RequestCtx,
    attempts: SmallVec<[AttemptRecord; 4]>,
    /// The last attempt's node, for `$upstream_host`.
    node: Option<&'a crate::upstream::NodeRuntime>,
    now: SystemTime,
}

impl<'a> Finished<'a> {
    pub(crate) fn new(session: &'a Session, ctx: &'a RequestCtx) -> Self {
        let up = ctx.upstream.as_deref();
        let attempts = match up {
            Some(up) => ctx
                .tries
                .log
                .iter()
                .filter_map(|a| {
                    let node = up.nodes.get(a.node as usize)?;
                    Some(AttemptRecord {
                        addr: node.addr,
                        status: Some(a.status),
                        elapsed: a.elapsed,
                    })
                })
                .collect(),
            None => SmallVec::new(),
        };
        let node = up
            .zip(ctx.tries.last_node)
            .and_then(|(u, i)| u.nodes.get(i));
        Finished {
            session,
            ctx,
            attempts,
            node,
            now: SystemTime::now(),
        }
    }
}

fn header<'h>(h: &'h http::HeaderMap, name: &str) -> Option<&'h [u8]> {
    h.get(name).map(|v| v.as_bytes())
}

impl Entry for Finished<'_> {
    fn remote_addr(&self) -> Option<IpAddr> {
        self.session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
    }

    fn method(&self) -> &str {
        self.session.req_header().method.as_str()
    }

    fn request_uri(&self) -> &str {
        self.session
            .req_header()
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
    }

    fn uri(&self) -> &str {
        self.session.req_header().uri.path()
    }

    fn version(&self) -> &str {
        match self.session.req_header().version {
            http::Version::HTTP_09 => "HTTP/0.9",
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2.0",
            http::Version::HTTP_3 => "HTTP/3.0",
            _ => "HTTP/1.1",
        }
    }

    fn host(&self) -> Option<&str> {
        Some(request_host(self.session)).filter(|h| !h.is_empty())
    }

    fn request_header(&self, name: &str) -> Option<&[u8]> {
        let req = self.session.req_header();
        match header(&req.headers, name) {
            None if name == "host" => req.uri.authority().map(|a| a.as_str().as_bytes()),
            v => v,
        }
    }

    /// The relayed response's headers, as the client received them (Weir's own filters add
    /// only `X-Weir-Upstream-Status` and the plugins' headers); nothing when no upstream
    /// response was relayed.
    fn upstream_header(&self, name: &str) -> Option<&[u8]> {
        self.ctx.tries.upstream_time?;
        header(&self.session.response_written()?.headers, name)
    }

    fn status(&self) -> Option<u16> {
        self.session.response_written().map(|r| r.status.as_u16())
    }

    fn body_bytes_sent(&self) -> u64 {
        self.session.as_ref().body_bytes_sent() as u64
    }

    fn request_time(&self) -> Duration {
        self.ctx.start.map(|s| s.elapsed()).unwrap_or_default()
    }

    fn attempts(&self) -> &[AttemptRecord] {
        &self.attempts
    }

    fn upstream_scheme(&self) -> Option<&str> {
        self.node?;
        let up = self.ctx.upstream.as_deref()?;
        Some(match up.conf.scheme {
            weir_config::Scheme::Http => "http",
            weir_config::Scheme::Https => "https",
            weir_config::Scheme::Grpc => "grpc",
            weir_config::Scheme::Grpcs => "grpcs",
        })
    }

    fn upstream_host(&self) -> Option<&str> {
        let node = self.node?;
        let up = self.ctx.upstream.as_deref()?;
        match up.host_header(node) {
            Some(h) => Some(h),
            None => self
                .session
                .req_header()
                .headers
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .or_else(|| {
                    self.session
                        .req_header()
                        .uri
                        .authority()
                        .map(|a| a.as_str())
                }),
        }
    }

    fn upstream_uri(&self) -> Option<&str> {
        self.node?;
        Some(self.request_uri())
    }

    fn route_id(&self) -> Option<&str> {
        self.ctx.hook.route_id()
    }

    fn service_id(&self) -> Option<&str> {
        self.ctx.hook.service_id()
    }

    fn consumer_name(&self) -> Option<&str> {
        self.ctx.hook.consumer()
    }

    fn request_id(&self) -> Option<&str> {
        self.ctx
            .hook
            .extensions()
            .get::<RequestIdValue>()
            .map(|v| v.0.as_str())
    }

    fn time(&self) -> SystemTime {
        self.now
    }
}
