//! Your own `ProxyHttp` driving Weir's router and balancers: Weir compiles the configuration
//! (routes, upstreams, node selection, health), your proxy decides everything else.
//!
//! `cargo run -p weir --example own_proxy -- conf/weir.yaml 127.0.0.1:9198` routes requests
//! on 127.0.0.1:9198 with the file's routes and balancers, adds `X-Picked-By: own-proxy`, and
//! answers 404 itself for requests no route matches.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use std::sync::Arc;
use weir::proxy::upstream::Walk;
use weir::proxy::SnapshotHandle;

/// Your proxy, with Weir's live configuration.
pub struct OwnProxy {
    pub handle: Arc<SnapshotHandle>,
}

/// Your per-request state: Weir's node walk (tried nodes, priority level) is part of it.
#[derive(Default)]
pub struct Ctx {
    walk: Walk,
}

#[async_trait]
impl ProxyHttp for OwnProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<bool> {
        let snapshot = self.handle.load();
        let req = session.req_header();
        let host = req
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if snapshot.route(host, req.uri.path(), &req.method).is_none() {
            session.respond_error(404).await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let snapshot = self.handle.load();
        let req = session.req_header();
        let host = req
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let route = snapshot
            .route(host, req.uri.path(), &req.method)
            .ok_or_else(|| Error::explain(HTTPStatus(404), "no route"))?;
        let upstream = route
            .upstream
            .as_ref()
            .ok_or_else(|| Error::explain(HTTPStatus(503), "route without an upstream"))?;
        // Weir's balancer for this upstream (roundrobin, chash, least_conn or ewma, with
        // priority levels and health); the key only matters for chash.
        let index = upstream
            .pick(b"", &mut ctx.walk)
            .ok_or_else(|| Error::explain(HTTPStatus(502), "no node can be picked"))?;
        let node = &upstream.nodes[index];
        Ok(Box::new(node.peer.clone()))
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        _ctx: &mut Ctx,
    ) -> Result<()> {
        resp.insert_header("X-Picked-By", "own-proxy")
    }
}

/// A Pingora server with [`OwnProxy`] on `addr` over `handle`, plus Weir's health-check and
/// discovery services for it.
pub fn server(handle: Arc<SnapshotHandle>, addr: &str) -> Server {
    let mut server = Server::new(None).expect("a Pingora server");
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        OwnProxy {
            handle: Arc::clone(&handle),
        },
    );
    proxy.add_tcp(addr);
    server.add_service(proxy);
    server.add_service(weir::proxy::server::health_service(&handle));
    server.add_service(weir::proxy::server::discovery_service(&handle));
    server
}

fn main() {
    env_logger::init();
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "conf/weir.yaml".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9198".into());
    let weir = match weir::Weir::builder().config_file(&path).build() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    server(Arc::clone(weir.handle()), &addr).run_forever();
}
