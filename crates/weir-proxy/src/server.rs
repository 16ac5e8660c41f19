//! Building and running a Pingora `Server` for a Weir configuration.

use crate::control::ControlApi;
use crate::downstream;
use crate::drain::{Counted, Drain, OnDrained};
use crate::handle::SnapshotHandle;
use crate::proxy::WeirProxy;
use crate::tls::{listener_tls, CertStore};
use pingora::apps::HttpServerOptions;
use pingora::proxy::http_proxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::{background_service, GenBackgroundService};
use pingora::services::listening::Service;
use pingora::services::{ServiceHandle, ServiceWithDependents};
use std::sync::Arc;
use weir_accesslog::AccessLog;
use weir_config::Config;
use weir_discovery::DiscoveryService;
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
        // Without work stealing every worker thread is its own runtime, and a pooled upstream
        // connection can only be used on the runtime that made it: each worker then pools its
        // own (see `crate::pool::worker_salt`).
        work_stealing: s.work_stealing,
        ..ServerConf::default()
    }
}

/// A Pingora server with Weir's proxy on every `server.listen` address (HTTP/1.1 and h2c) and
/// every `server.tls_listen` address (HTTP/1.1 and h2 by ALPN), the health-check service and,
/// when configured, the control API, serving `handle`. Fails only on a listener certificate
/// that cannot be loaded.
pub fn build_server(
    cfg: &Config,
    opt: Option<Opt>,
    handle: Arc<SnapshotHandle>,
) -> Result<Server, String> {
    build_server_with(cfg, opt, WeirProxy::new(handle))
}

/// As [`build_server`], with a proxy already configured (hooks, plugins).
pub fn build_server_with(
    cfg: &Config,
    opt: Option<Opt>,
    weir: WeirProxy,
) -> Result<Server, String> {
    build_server_draining(cfg, opt, weir, None)
}

/// As [`build_server_with`]; in a graceful shutdown, `on_drained` runs as soon as no client
/// connection and no request is left, instead of waiting out `grace_period_seconds` (the
/// `weir` binary exits there). See [`crate::drain`].
pub fn build_server_draining(
    cfg: &Config,
    opt: Option<Opt>,
    weir: WeirProxy,
    on_drained: Option<OnDrained>,
) -> Result<Server, String> {
    build_server_after(cfg, opt, weir, on_drained, Vec::new())
}

/// As [`build_server_draining`], with `sources`: services the proxy's listeners wait for
/// (configuration sources whose first load must be in force before a request is accepted,
/// such as the etcd source). They are added to the server too.
pub fn build_server_after(
    cfg: &Config,
    opt: Option<Opt>,
    weir: WeirProxy,
    on_drained: Option<OnDrained>,
    sources: Vec<Box<dyn ServiceWithDependents>>,
) -> Result<Server, String> {
    let mut server = Server::new_with_opt_and_conf(opt, server_conf(cfg));
    server.bootstrap();
    add_services(&mut server, cfg, weir, on_drained, sources)?;
    Ok(server)
}

/// Add Weir to an existing Pingora `server`: the proxy on every `server.listen` address
/// (HTTP/1.1 and h2c) and `server.tls_listen` address (HTTP/1.1 and h2 by ALPN), the
/// health-check and discovery services, the control API when configured, the drain watcher
/// when `on_drained` is given, and `sources` (services the listeners wait for). Nothing is
/// added when a listener certificate cannot be loaded. Returns the proxy service's handle (add
/// your own dependencies to it).
pub fn add_services(
    server: &mut Server,
    cfg: &Config,
    mut weir: WeirProxy,
    on_drained: Option<OnDrained>,
    sources: Vec<Box<dyn ServiceWithDependents>>,
) -> Result<ServiceHandle, String> {
    let handle = Arc::clone(weir.handle());
    if !cfg.server.work_stealing {
        weir = weir.with_per_worker_pools();
    }
    if weir.access_log().is_none() {
        let started = AccessLog::start(&cfg.server.access_log)
            .map_err(|e| format!("server.access_log: {e}"))?;
        if let Some(log) = started {
            weir = weir.with_access_log(log);
        }
    }
    if let Some(log) = weir.access_log() {
        let l = Arc::clone(log);
        handle
            .tables()
            .metrics
            .add_collector(Arc::new(move |f: &mut crate::metrics::Families| {
                f.counter(
                    "access_log_dropped_total",
                    "Access log lines dropped: the buffer was full or the write failed.",
                    &[],
                    l.dropped(),
                );
            }));
        server.add_service(background_service(
            "weir access log reopen",
            ReopenOnSigusr1(Arc::clone(log)),
        ));
    }
    let limits = Arc::new(downstream::Limits::new(&cfg.server.downstream));
    let l = Arc::clone(&limits);
    handle
        .tables()
        .metrics
        .add_collector(Arc::new(move |f: &mut crate::metrics::Families| {
            l.stats.collect(f)
        }));
    weir = weir.with_downstream_limits(Arc::clone(&limits));
    let tracker = weir.tracker().clone();
    let mut app = http_proxy(&server.configuration, weir);
    // Cleartext listeners serve HTTP/1.1 and h2c (prior knowledge, detected by preface).
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    app.server_options = Some(options);
    downstream::configure(&mut app, &cfg.server.downstream);
    let app = downstream::DownstreamApp::new(app, limits);
    let mut proxy = Service::new("weir".to_owned(), Counted::new(app, tracker.clone()));
    for addr in &cfg.server.listen {
        // No L4 read buffer on cleartext listeners: Pingora's default is 64 KiB per client
        // connection, most of an idle keep-alive connection's memory, and here it saves no
        // read (the HTTP/1 parser reads heads and bodies into buffers of its own). TLS
        // listeners keep it: OpenSSL reads 16 KiB records through it (docs/performance.md).
        let endpoint = pingora::listeners::ListenerConfig::tcp(addr.to_string()).l4_buffer(
            pingora::protocols::l4::stream::L4BufferSettings {
                read: Some(0),
                write: None,
            },
        );
        proxy.add_listener(endpoint);
    }
    let certs = CertStore::new(&cfg.resources);
    for (i, l) in cfg.server.tls_listen.iter().enumerate() {
        let path = format!("server.tls_listen[{i}]");
        let cert = certs.certificate(l.certificate.as_str()).ok_or_else(|| {
            format!(
                "{path}.certificate: unknown certificate {:?}",
                l.certificate
            )
        })?;
        let settings = listener_tls(&cert.cert, cert.key.expose())
            .map_err(|e| format!("{path} (certificate {:?}): {e}", l.certificate))?;
        proxy.add_tls_with_settings(&l.addr.to_string(), None, settings);
    }

    let sources = server.add_services(sources);
    server.add_service(health_service(&handle));
    // The proxy listens once every registry has answered once (or its first-load deadline
    // passed), so the first requests already see discovered nodes.
    let discovery = server.add_service(discovery_service(&handle));
    if let Some(control) = &cfg.control {
        // Counting starts with the control listener that shows the counts.
        if !handle.tables().metrics.enabled() {
            handle.tables().metrics.enable();
            handle.refresh();
        }
        server.add_service(control_service(&handle, control));
    }
    if let Some(action) = on_drained {
        server.add_service(background_service(
            "weir drain",
            Drain::new(tracker, action),
        ));
    }
    let proxy = server.add_service(proxy);
    proxy.add_dependency(&discovery);
    for s in &sources {
        proxy.add_dependency(s);
    }
    Ok(proxy)
}

/// The background service running every discovery registry of `handle` (one service for all
/// registries); each catalog change recompiles `handle`'s snapshot. Embedders add it to their
/// own Pingora server.
pub fn discovery_service(handle: &Arc<SnapshotHandle>) -> GenBackgroundService<DiscoveryService> {
    let h = Arc::clone(handle);
    background_service(
        "weir discovery",
        DiscoveryService::new(
            Arc::clone(handle.registries()),
            Box::new(move || h.refresh()),
        ),
    )
}

/// The background service running every health checker of `handle`'s configurations (one
/// service for all upstreams). Embedders add it to their own Pingora server.
pub fn health_service(handle: &Arc<SnapshotHandle>) -> GenBackgroundService<HealthService> {
    background_service(
        "weir health checks",
        HealthService::new(Arc::clone(&handle.tables().health)),
    )
}

/// The read-only control API (`/v1/healthcheck`, `/metrics`, `/v1/status`, `/ui/`) as
/// `control` configures it.
pub fn control_service(
    handle: &Arc<SnapshotHandle>,
    control: &weir_config::ControlConfig,
) -> Service<ControlApi> {
    let mut svc = Service::new(
        "weir control API".into(),
        ControlApi::new(Arc::clone(handle)).with_metric_prefix(&control.metric_prefix),
    );
    svc.add_tcp(&control.listen.to_string());
    svc
}

/// Reopens the access log file on SIGUSR1 (after logrotate moved it).
struct ReopenOnSigusr1(Arc<AccessLog>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for ReopenOnSigusr1 {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut usr1 = match signal(SignalKind::user_defined1()) {
            Ok(s) => s,
            Err(e) => {
                log::warn!(
                    "access log: cannot listen for SIGUSR1 ({e}); the file is not reopened on it"
                );
                return;
            }
        };
        loop {
            tokio::select! {
                got = usr1.recv() => {
                    if got.is_none() {
                        return;
                    }
                    log::info!("SIGUSR1: reopening the access log");
                    self.0.reopen();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
