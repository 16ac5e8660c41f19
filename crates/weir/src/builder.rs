//! [`Weir`] and its [`WeirBuilder`]: a validated configuration with everything registered,
//! ready to run as the `weir` binary does or to be added to your own Pingora `Server`.

use crate::Error;
use pingora::server::configuration::Opt;
use pingora::server::{RunArgs, Server};
use pingora::services::background::GenBackgroundService;
use pingora::services::{ServiceHandle, ServiceWithDependents};
use std::path::PathBuf;
use std::sync::Arc;
use weir_config::{Config, ConfigError, ConfigSource, Extensions, Resources};
use weir_discovery::Registry;
use weir_proxy::metrics::ReloadSource;
use weir_proxy::{Hook, SnapshotHandle, WeirProxy};
use weir_store::etcd::EtcdSource;
use weir_store::file::FileSource;
use weir_store::memory::MemorySource;
use weir_store::{Backend, Origin, Sink, Validator};

/// A typed plugin, waiting for the proxy it is added to.
struct TypedPlugin {
    ext: Extensions,
    add: Box<dyn FnOnce(WeirProxy) -> WeirProxy + Send>,
}

/// A selection algorithm, waiting for the handle's tables.
struct CustomAlgorithm {
    name: String,
    schema: Arc<dyn weir_config::Schema>,
    register: Box<dyn FnOnce(&weir_proxy::Tables) + Send>,
}

/// Where the configuration comes from.
enum Input {
    File(PathBuf),
    Yaml(String),
    Config(Box<Config>),
}

/// Collects the configuration and your registrations; [`build`](Self::build) validates them
/// into a [`Weir`]. Start with [`Weir::builder`].
///
/// ```no_run
/// let weir = weir::Weir::builder()
///     .config_file("conf/weir.yaml")
///     .build()
///     .expect("a valid configuration");
/// weir.run(Default::default()).expect("listeners");
/// ```
#[must_use = "a builder does nothing until `build` is called"]
#[derive(Default)]
pub struct WeirBuilder {
    input: Option<Input>,
    plugins: Vec<(String, Arc<dyn Hook>)>,
    typed: Vec<TypedPlugin>,
    hooks: Vec<Arc<dyn Hook>>,
    registries: Vec<(String, Arc<dyn Registry>)>,
    checks: Vec<(String, Arc<dyn weir_health::Check>)>,
    algorithms: Vec<CustomAlgorithm>,
    /// Registrations refused (reported by `build`).
    refused: Vec<String>,
}

impl WeirBuilder {
    /// Read the configuration from a YAML file. With the file source (the default) the file
    /// is watched and reloaded, and Admin API writes go back into it.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.input = Some(Input::File(path.into()));
        self
    }

    /// Take the configuration from YAML text. Resources are held in memory: Admin API writes
    /// apply at once and are not persisted.
    pub fn config_yaml(mut self, text: impl Into<String>) -> Self {
        self.input = Some(Input::Yaml(text.into()));
        self
    }

    /// Take an already validated configuration (no Admin API, no reloads).
    pub fn config(mut self, config: Config) -> Self {
        self.input = Some(Input::Config(Box::new(config)));
        self
    }

    /// Register `hook` as the plugin `name`: routes and services enable it with
    /// `plugins: {<name>: {...}}`, and the name is valid in configurations.
    pub fn plugin(mut self, name: &str, hook: impl Hook + 'static) -> Self {
        if self.builtin_plugin(name) {
            return self;
        }
        self.plugins.push((name.to_owned(), Arc::new(hook)));
        self
    }

    /// A built-in plugin's name cannot be taken ([`build`](Self::build) then fails).
    fn builtin_plugin(&mut self, name: &str) -> bool {
        let taken = weir_config::plugins::BUILTIN_PLUGINS.contains(&name);
        if taken {
            self.refused
                .push(format!("{name:?} cannot name a plugin: it is a built-in's"));
        }
        taken
    }

    /// Register a typed [`Plugin`](weir_proxy::Plugin): routes enable it with
    /// `plugins: {<name>: {...}}`, each block is deserialised into the plugin's `Config` when
    /// the configuration loads (an error names its path, e.g.
    /// `routes[0] (id "r1").plugins.add-header.value: missing field`), and the plugin's hooks
    /// get the route's parsed configuration.
    pub fn plugin_typed<P: weir_proxy::Plugin>(mut self, plugin: P) -> Self {
        if self.builtin_plugin(plugin.name()) {
            return self;
        }
        let ext = plugin.extension();
        self.typed.push(TypedPlugin {
            ext,
            add: Box::new(move |proxy: WeirProxy| proxy.with_typed_plugin(plugin)),
        });
        self
    }

    /// Run `hook` on every routed request, after the plugins.
    pub fn hook(mut self, hook: impl Hook + 'static) -> Self {
        self.hooks.push(Arc::new(hook));
        self
    }

    /// Register a discovery registry under `name`: upstreams use it with
    /// `discovery_type: <name>`.
    pub fn discovery(mut self, name: &str, registry: impl Registry) -> Self {
        self.registries.push((name.to_owned(), Arc::new(registry)));
        self
    }

    /// Register `check` as the health check `name`: upstreams use it with
    /// `checks: {active: {type: <name>}}` next to the built-in `http`, `https` and `tcp`
    /// (docs/health-checks.md, "Custom health checks"). Every `checks.active` option is
    /// validated as for the built-ins and handed to the check; thresholds and intervals work
    /// as for any type.
    pub fn health_check(mut self, name: &str, check: impl weir_health::Check) -> Self {
        self.checks.push((name.to_owned(), Arc::new(check)));
        self
    }

    /// Register `algorithm` as the selection algorithm `name`: upstreams use it with
    /// `type: <name>`, its parameters in the upstream's `<name>` block (`{}` when absent),
    /// checked against [`Algorithm::Params`](weir_balance::Algorithm::Params) when the
    /// configuration loads (an error names its path, e.g.
    /// `upstreams[0] (id "u1").first-healthy.skip: invalid type: ...`). Each priority level
    /// gets its own selector from [`Algorithm::build`](weir_balance::Algorithm::build)
    /// (docs/algorithms.md, "Custom algorithms").
    ///
    /// A built-in algorithm's name (`roundrobin`, `chash`, `least_conn`, `ewma`) or a member
    /// of the upstream object (`nodes`, `retries`, ...) cannot name one: [`build`](Self::build)
    /// then fails with [`Error::Registration`].
    pub fn algorithm<A: weir_balance::Algorithm>(mut self, name: &str, algorithm: A) -> Self {
        if weir_config::upstream::reserved_algorithm_name(name) {
            self.refused.push(format!(
                "{name:?} cannot name an algorithm: it is a built-in's or an upstream member"
            ));
            return self;
        }
        let owned = name.to_owned();
        self.algorithms.push(CustomAlgorithm {
            name: owned.clone(),
            schema: Arc::new(weir_config::Typed::<A::Params>::new()),
            register: Box::new(move |tables| tables.register_algorithm(&owned, algorithm)),
        });
        self
    }

    /// What validation accepts next to the built-ins: every registered name.
    fn extensions(&self) -> Extensions {
        let ext = self
            .plugins
            .iter()
            .fold(Extensions::new(), |e, (n, _)| e.plugin(n));
        let ext = self.typed.iter().fold(ext, |e, t| e.merge(&t.ext));
        let ext = self.checks.iter().fold(ext, |e, (n, _)| e.check(n));
        let ext = self.algorithms.iter().fold(ext, |e, a| {
            e.algorithm(&a.name, Some(Arc::clone(&a.schema)))
        });
        self.registries.iter().fold(ext, |e, (n, _)| e.discovery(n))
    }

    /// Validate the configuration against everything registered and compile it. Every error
    /// of the configuration is reported at once ([`Error::Config`]).
    pub fn build(self) -> Result<Weir, Error> {
        if let Some(why) = self.refused.first() {
            return Err(Error::Registration(why.clone()));
        }
        let ext = self.extensions();
        let input = self.input.ok_or(Error::NoConfig)?;
        let (config, warnings, text, origin) = match &input {
            Input::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::Read {
                    path: path.display().to_string(),
                    source: e,
                })?;
                let loaded = weir_config::parse_yaml_ext(&text, &ext).map_err(Error::Config)?;
                (
                    loaded.config,
                    loaded.warnings,
                    Some(text),
                    path.display().to_string(),
                )
            }
            Input::Yaml(text) => {
                let loaded = weir_config::parse_yaml_ext(text, &ext).map_err(Error::Config)?;
                (
                    loaded.config,
                    loaded.warnings,
                    Some(text.clone()),
                    "YAML text".into(),
                )
            }
            Input::Config(c) => ((**c).clone(), Vec::new(), None, "a Config value".into()),
        };

        let mut registries = weir_proxy::discovery::registries(&config.discovery);
        for (name, r) in &self.registries {
            registries.register(name, Arc::clone(r));
        }
        // With etcd the proxy starts empty; its listeners open once the first read is in
        // force (or failed: it then serves 404 while the source keeps trying).
        let etcd = matches!(config.config_source, ConfigSource::Etcd(_));
        let initial = if etcd {
            Resources::default()
        } else {
            config.resources.clone()
        };
        // Everything is registered before the resources are compiled the first time, so the
        // first snapshot already has every algorithm, check and plugin configuration.
        let handle = SnapshotHandle::with_discovery(&Resources::default(), Arc::new(registries));
        for (name, check) in self.checks {
            handle.tables().health.register_check(&name, check);
        }
        for a in self.algorithms {
            (a.register)(handle.tables());
        }
        let mut proxy = WeirProxy::new(Arc::clone(&handle));
        for (name, hook) in self.plugins {
            proxy = proxy.with_plugin(&name, hook);
        }
        for t in self.typed {
            proxy = (t.add)(proxy);
        }
        for hook in self.hooks {
            proxy = proxy.with_hook(hook);
        }
        // Metrics count from the first request when a control listener will show them.
        if config.control.is_some() {
            handle.tables().metrics.enable();
        }
        handle.apply(&initial);
        if !etcd {
            handle
                .tables()
                .metrics
                .process
                .reloaded(ReloadSource::File, true);
        }

        let sink: Arc<dyn Sink> = Arc::new(HandleSink(Arc::clone(&handle)));
        let doc = text
            .as_deref()
            .map(|t| weir_config::yaml_to_value(t).unwrap_or_default());
        let validator = doc
            .as_ref()
            .map(|d| Validator::new(d).with_extensions(&ext));
        let source: Option<(Box<dyn ServiceWithDependents>, Arc<dyn Backend>)> =
            match (&config.config_source, &input, text, validator) {
                (ConfigSource::Etcd(e), _, _, Some(v)) => {
                    let s = Arc::new(EtcdSource::new(e.clone(), v, sink));
                    let reachable = s.reachable_flag();
                    handle.tables().metrics.add_collector(Arc::new(
                        move |f: &mut weir_proxy::metrics::Families| {
                            let up = reachable.load(std::sync::atomic::Ordering::Relaxed);
                            f.gauge(
                                "etcd_reachable",
                                "Whether etcd answers: 1 yes, 0 no.",
                                &[],
                                if up { 1.0 } else { 0.0 },
                            );
                        },
                    ));
                    let svc = GenBackgroundService::new("weir etcd".into(), Arc::clone(&s));
                    Some((Box::new(svc), s))
                }
                (ConfigSource::File { .. }, Input::File(path), Some(text), _) => {
                    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                    let s = Arc::new(
                        FileSource::new(path, text, config.clone(), sink).with_extensions(&ext),
                    );
                    let svc = GenBackgroundService::new("weir config file".into(), Arc::clone(&s));
                    Some((Box::new(svc), s))
                }
                (_, Input::Yaml(_), Some(_), Some(v)) => {
                    let doc = doc.unwrap_or_default();
                    let s: Arc<dyn Backend> = Arc::new(MemorySource::new(&doc, v, sink));
                    // Nothing to run: writes apply from the Admin API itself.
                    Some((Box::new(Idle::service()), s))
                }
                _ => None,
            };
        if config.admin.is_some() && source.is_none() {
            return Err(Error::AdminWithoutSource);
        }
        Ok(Weir {
            config,
            warnings,
            origin,
            handle,
            proxy,
            source,
        })
    }
}

/// A background service that does nothing (the memory source needs none).
struct Idle;

impl Idle {
    fn service() -> GenBackgroundService<Idle> {
        GenBackgroundService::new("weir memory source".into(), Arc::new(Idle))
    }
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Idle {
    async fn start(&self, _shutdown: pingora::server::ShutdownWatch) {}
}

/// A validated, compiled Weir: its configuration, the live snapshot handle, and the services
/// that serve it. [`run`](Self::run) it as the `weir` binary does, or
/// [`add_to`](Self::add_to) your own Pingora `Server`.
pub struct Weir {
    config: Config,
    warnings: Vec<ConfigError>,
    origin: String,
    handle: Arc<SnapshotHandle>,
    proxy: WeirProxy,
    source: Option<(Box<dyn ServiceWithDependents>, Arc<dyn Backend>)>,
}

impl Weir {
    /// A builder: give it the configuration and your registrations.
    pub fn builder() -> WeirBuilder {
        WeirBuilder::default()
    }

    /// The validated configuration (process settings and the resources it started with).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What validation found valid but suspicious (each with its path).
    pub fn warnings(&self) -> &[ConfigError] {
        &self.warnings
    }

    /// The live configuration: the compiled snapshot behind an `ArcSwap`, and the state that
    /// survives reloads. Apply new resources to it from anywhere.
    pub fn handle(&self) -> &Arc<SnapshotHandle> {
        &self.handle
    }

    /// Add every Weir service to `server`: the proxy on its listeners, health checks,
    /// discovery, the control API and the Admin API when configured, and the configuration
    /// source (file watcher or etcd). Returns the proxy service's handle.
    pub fn add_to(self, server: &mut Server) -> Result<ServiceHandle, Error> {
        self.add(server, None)
    }

    fn add(
        self,
        server: &mut Server,
        on_drained: Option<weir_proxy::drain::OnDrained>,
    ) -> Result<ServiceHandle, Error> {
        let (sources, backend) = match self.source {
            Some((svc, backend)) => (vec![svc], Some(backend)),
            None => (Vec::new(), None),
        };
        let proxy =
            weir_proxy::server::add_services(server, &self.config, self.proxy, on_drained, sources)
                .map_err(Error::Listener)?;
        if let (Some(admin), Some(backend)) = (&self.config.admin, backend) {
            server.add_service(weir_store::admin::admin_service(admin, backend));
        }
        Ok(proxy)
    }

    /// A Pingora `Server` configured from the `server` block with every Weir service added,
    /// not yet running.
    pub fn into_server(self, opt: Option<Opt>) -> Result<Server, Error> {
        let mut server =
            Server::new_with_opt_and_conf(opt, weir_proxy::server::server_conf(&self.config));
        server.bootstrap();
        self.add(&mut server, None)?;
        Ok(server)
    }

    /// Run as the `weir` binary does, until a signal stops the process: SIGTERM drains
    /// gracefully and **exits the process** as soon as no request is in flight (at the latest
    /// after `server.grace_period_seconds`), SIGINT stops at once, SIGQUIT hands the listeners
    /// to a process started with `-u`. Returns only when the listeners cannot be set up.
    pub fn run(self, opt: Opt) -> Result<(), Error> {
        let mut server =
            Server::new_with_opt_and_conf(Some(opt), weir_proxy::server::server_conf(&self.config));
        server.bootstrap();
        let exit_when_drained = Box::new(|| {
            log::info!("graceful shutdown complete, exiting");
            log::logger().flush();
            std::process::exit(0);
        });
        let cfg = self.config.clone();
        let origin = self.origin.clone();
        self.add(&mut server, Some(exit_when_drained))?;
        let from = match &cfg.config_source {
            ConfigSource::File { .. } => origin,
            ConfigSource::Etcd(e) => {
                format!("etcd {} (prefix {})", e.endpoints.join(", "), e.prefix)
            }
        };
        log::info!(
            "weir {} on {:?} (TLS: {:?}), admin API: {}, resources from {from}",
            env!("CARGO_PKG_VERSION"),
            cfg.server.listen,
            cfg.server
                .tls_listen
                .iter()
                .map(|l| l.addr)
                .collect::<Vec<_>>(),
            cfg.admin
                .as_ref()
                .map_or("off".to_owned(), |a| a.listen.to_string()),
        );
        server.run(RunArgs::default());
        Ok(())
    }
}

/// The sink every configuration source delivers to: the handle's snapshot, and the reload
/// counts of `/metrics`.
struct HandleSink(Arc<SnapshotHandle>);

impl Sink for HandleSink {
    fn apply(&self, resources: &Resources) {
        self.0.apply(resources);
    }

    fn loaded(&self, origin: Origin, ok: bool) {
        let source = match origin {
            Origin::File => ReloadSource::File,
            Origin::Etcd => ReloadSource::Etcd,
            Origin::Admin => ReloadSource::Admin,
        };
        self.0.tables().metrics.process.reloaded(source, ok);
    }
}
