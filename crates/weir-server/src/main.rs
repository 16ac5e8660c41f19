//! `weir`: the edge-proxy binary. Parses the command line (README, docs/configuration.md),
//! installs the logger, and hands over to the `weir` crate, which validates the configuration
//! and runs it.

use clap::Parser;
use pingora::server::configuration::Opt;
use std::path::PathBuf;
use std::process::ExitCode;

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

    let weir = match weir::Weir::builder().config_file(&cli.config).build() {
        Ok(w) => w,
        Err(weir::Error::Config(errors)) => {
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
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for w in weir.warnings() {
        eprintln!("warning: {w}");
    }
    if cli.test {
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        ..Opt::default()
    };
    match weir.run(opt) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
