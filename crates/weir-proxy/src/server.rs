//! Building and running a Pingora `Server` for a Weir configuration.

use crate::control::ControlApi;
use crate::proxy::{SnapshotHandle, WeirProxy};
use async_trait::async_trait;
use pingora::proxy::http_proxy_service_with_name;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::sync::Arc;
use weir_config::Config;
use weir_health::HealthService;

/// Pingora process settings from Weir's `server` block.
pub fn server_conf(cfg: &Config) -> ServerConf {
    let s = &cfg.server;
    ServerConf {
        threads: s.threads,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        grace_period_seconds: Some(s.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(s.graceful_shutdown_timeout_seconds),
        upstream_keepalive_pool_size: s.upstream_keepalive_pool_size,
        // Weir counts attempts itself (`retries`); Pingora's cap must never cut them short.
        max_retries: usize::MAX,
        // Keep Pingora's work-stealing runtime. Its no-steal runtime measured ~10% less CPU per
        // request with one thread, but with several threads pooled upstream connections move
        // between runtimes and cannot be reused ("failed to acquire reusable stream").
        work_stealing: true,
        ..ServerConf::default()
    }
}

/// A Pingora server with Weir's proxy on every `server.listen` address, serving `handle`.
pub fn build_server(cfg: &Config, opt: Option<Opt>, handle: Arc<SnapshotHandle>) -> Server {
    build_server_with(cfg, opt, WeirProxy::new(handle))
}

/// As [`build_server`], with a proxy already configured (hooks, plugins).
pub fn build_server_with(cfg: &Config, opt: Option<Opt>, weir: WeirProxy) -> Server {
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(cfg));
    server.bootstrap();
    let handle = Arc::clone(weir.handle());
    // Every checker of every upstream runs in this one background service.
    server.add_service(background_service(
        "weir health checks",
        HealthService::new(Arc::clone(&handle.tables().health)),
    ));
    if let Some(control) = &cfg.control {
        let mut svc = Service::new("weir control API".into(), ControlApi::new(handle));
        svc.add_tcp(&control.listen.to_string());
        server.add_service(svc);
    }
    let mut proxy = http_proxy_service_with_name(&server.configuration, weir, "weir");
    for addr in &cfg.server.listen {
        proxy.add_tcp(&addr.to_string());
    }
    server.add_service(proxy);
    server
}

/// A shutdown trigger for running a server in-process (tests, embedding).
#[derive(Clone, Default)]
pub struct ShutdownTrigger(Arc<tokio::sync::Notify>);

impl ShutdownTrigger {
    /// Ask the server to stop at once.
    pub fn fire(&self) {
        self.0.notify_one();
    }

    /// Run arguments whose shutdown signal is this trigger.
    pub fn run_args(&self) -> RunArgs {
        RunArgs {
            shutdown_signal: Box::new(self.clone()),
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for ShutdownTrigger {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::FastShutdown
    }
}
