//! `weir`: the edge-proxy binary. Parses the command line (README, docs/configuration.md), installs the logger,
//! validates the configuration and hands over to the proxy.

use clap::Parser;
use pingora::server::configuration::Opt;
use pingora::server::RunArgs;
use pingora::services::background::GenBackgroundService;
use pingora::services::ServiceWithDependents;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use weir_config::{ConfigSource, Resources};
use weir_proxy::server::build_server_after;
use weir_proxy::{SnapshotHandle, WeirProxy};
use weir_store::admin::admin_service;
use weir_store::etcd::EtcdSource;
use weir_store::file::FileSource;
use weir_store::{Backend, Sink, Validator};

/// glibc malloc/free were ~40% of the proxy's instructions per request; mimalloc's
/// thread-local free lists are much cheaper (see `make bench`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Weir: a programmable HTTP proxy on Pingora with APISIX-compatible upstreams.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about, long_about = None)]
struct Cli {
    /// Configuration file.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        default_value = "conf/weir.yaml"
    )]
    config: PathBuf,
    /// Validate the configuration and exit: prints `configuration OK`, or every error.
    #[arg(short = 't', long = "test")]
    test: bool,
    /// Run in the background (daemonize).
    #[arg(short = 'd', long = "daemon")]
    daemon: bool,
    /// Take over the listeners of a running instance (graceful upgrade).
    #[arg(short = 'u', long = "upgrade")]
    upgrade: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();

    let text = match std::fs::read_to_string(&cli.config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {}: {e}", cli.config.display());
            return ExitCode::FAILURE;
        }
    };
    let loaded = match weir_config::parse_yaml(&text) {
        Ok(l) => l,
        Err(errors) => {
            for e in errors.iter() {
                eprintln!("{e}");
            }
            eprintln!(
                "{}: {} error{}",
                cli.config.display(),
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            return ExitCode::FAILURE;
        }
    };
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    if cli.test {
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    run(&cli, loaded.config, text)
}

/// Serve `config` until a signal stops the process: SIGTERM drains gracefully (and exits as
/// soon as no request is in flight), SIGINT stops at once, SIGQUIT hands the listeners to a
/// process started with `-u`.
fn run(cli: &Cli, config: weir_config::Config, text: String) -> ExitCode {
    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        ..Opt::default()
    };
    let registries = Arc::new(weir_proxy::discovery::registries(&config.discovery));
    // With etcd the proxy starts empty; its listeners open once the first read is in force
    // (or failed: then it serves 404 while the source keeps trying).
    let initial = match &config.config_source {
        ConfigSource::File { .. } => config.resources.clone(),
        ConfigSource::Etcd(_) => Resources::default(),
    };
    let handle = SnapshotHandle::with_discovery(&initial, registries);
    let sink: Arc<dyn Sink> = {
        let h = Arc::clone(&handle);
        Arc::new(move |r: &Resources| h.apply(r))
    };
    let path = std::fs::canonicalize(&cli.config).unwrap_or_else(|_| cli.config.clone());
    let (source, backend): (Box<dyn ServiceWithDependents>, Arc<dyn Backend>) =
        match &config.config_source {
            ConfigSource::File { .. } => {
                let file = Arc::new(FileSource::new(path, text, config.clone(), sink));
                let svc = GenBackgroundService::new("weir config file".into(), Arc::clone(&file));
                (Box::new(svc), file)
            }
            ConfigSource::Etcd(etcd) => {
                let doc = weir_config::yaml_to_value(&text).unwrap_or_default();
                let source = Arc::new(EtcdSource::new(etcd.clone(), Validator::new(&doc), sink));
                let svc = GenBackgroundService::new("weir etcd".into(), Arc::clone(&source));
                (Box::new(svc), source)
            }
        };
    // A graceful shutdown exits as soon as nothing is in flight; `grace_period_seconds` is
    // only the upper bound.
    let exit_when_drained = Box::new(|| {
        log::info!("graceful shutdown complete, exiting");
        log::logger().flush();
        std::process::exit(0);
    });
    let weir = WeirProxy::new(Arc::clone(&handle));
    let mut server = match build_server_after(
        &config,
        Some(opt),
        weir,
        Some(exit_when_drained),
        vec![source],
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(admin) = &config.admin {
        server.add_service(admin_service(admin, backend));
    }
    let from = match &config.config_source {
        ConfigSource::File { .. } => cli.config.display().to_string(),
        ConfigSource::Etcd(e) => format!("etcd {} (prefix {})", e.endpoints.join(", "), e.prefix),
    };
    log::info!(
        "weir {} on {:?} (TLS: {:?}), admin API: {}, resources from {from}",
        env!("CARGO_PKG_VERSION"),
        config.server.listen,
        config
            .server
            .tls_listen
            .iter()
            .map(|l| l.addr)
            .collect::<Vec<_>>(),
        config
            .admin
            .as_ref()
            .map_or("off".to_owned(), |a| a.listen.to_string()),
    );
    server.run(RunArgs::default());
    ExitCode::SUCCESS
}
