//! `weir`: the edge-proxy binary. Parses the command line (README, docs/configuration.md), installs the logger,
//! validates the configuration and hands over to the proxy.

mod reload;

use clap::Parser;
use pingora::server::configuration::Opt;
use pingora::server::RunArgs;
use reload::FileReloader;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use weir_config::ConfigSource;
use weir_proxy::server::build_server_draining;
use weir_proxy::{SnapshotHandle, WeirProxy};

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
    let watch = match &config.config_source {
        ConfigSource::File { watch } => *watch,
        ConfigSource::Etcd(_) => {
            eprintln!("config_source.etcd is not supported by this build yet; use the file source");
            return ExitCode::FAILURE;
        }
    };
    if config.admin.is_some() {
        log::warn!("the Admin API is not implemented in this build yet; `admin` is ignored");
    }
    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        ..Opt::default()
    };
    let registries = Arc::new(weir_proxy::discovery::registries(&config.discovery));
    let handle = SnapshotHandle::with_discovery(&config.resources, registries);
    // A graceful shutdown exits as soon as nothing is in flight; `grace_period_seconds` is
    // only the upper bound.
    let exit_when_drained = Box::new(|| {
        log::info!("graceful shutdown complete, exiting");
        log::logger().flush();
        std::process::exit(0);
    });
    let weir = WeirProxy::new(Arc::clone(&handle));
    let server = match build_server_draining(&config, Some(opt), weir, Some(exit_when_drained)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let path = std::fs::canonicalize(&cli.config).unwrap_or_else(|_| cli.config.clone());
    if let Err(e) = FileReloader::new(path, handle, config.clone(), text).spawn(watch) {
        log::error!("configuration reload disabled: {e}");
    }
    log::info!(
        "weir {} serving {} route(s) on {:?} (TLS: {:?}) from {}",
        env!("CARGO_PKG_VERSION"),
        config.resources.routes.len(),
        config.server.listen,
        config
            .server
            .tls_listen
            .iter()
            .map(|l| l.addr)
            .collect::<Vec<_>>(),
        cli.config.display()
    );
    server.run(RunArgs::default());
    ExitCode::SUCCESS
}
