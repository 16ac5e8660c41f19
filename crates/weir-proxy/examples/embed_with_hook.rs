//! Embedding Weir in your own Pingora server, with a custom hook.
//!
//! `cargo run -p weir-proxy --example embed_with_hook -- conf/weir.yaml`
//! serves the file's routes on its listeners and adds `X-Served-By: weir-example` to every
//! response, and `X-Request-Start` (in microseconds) to every upstream request.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::{http_proxy_service, Session};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use weir_proxy::server::{discovery_service, health_service, server_conf};
use weir_proxy::{Hook, HookCtx, SnapshotHandle, WeirProxy};

struct Stamp;

#[async_trait]
impl Hook for Stamp {
    fn name(&self) -> &str {
        "stamp"
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut HookCtx,
    ) -> Result<()> {
        let us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or(0);
        req.insert_header("X-Request-Start", us.to_string())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        _ctx: &mut HookCtx,
    ) -> Result<()> {
        resp.insert_header("X-Served-By", "weir-example")
    }
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "conf/weir.yaml".into());
    let config = match weir_config::load_file(&path) {
        Ok(loaded) => loaded.config,
        Err(errors) => {
            eprintln!("{errors}");
            std::process::exit(1);
        }
    };
    // The registries of the `discovery:` block (and `dns`, which resolves host-name nodes).
    let registries = Arc::new(weir_proxy::discovery::registries(&config.discovery));
    let handle = SnapshotHandle::with_discovery(&config.resources, registries);
    let mut server = Server::new_with_opt_and_conf(None, server_conf(&config));
    server.bootstrap();
    let proxy = WeirProxy::new(Arc::clone(&handle)).with_hook(Arc::new(Stamp));
    let mut service = http_proxy_service(&server.configuration, proxy);
    for addr in &config.server.listen {
        service.add_tcp(&addr.to_string());
    }
    server.add_service(service);
    // Health checks of every upstream with `checks`, in one background service.
    server.add_service(health_service(&handle));
    // Every discovery registry, in one background service; it recompiles on changes.
    server.add_service(discovery_service(&handle));
    // `handle.apply(&resources)` swaps in a new configuration at any time.
    server.run_forever();
}
