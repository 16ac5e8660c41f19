//! Reloading resources from the configuration file (docs/configuration.md): on SIGHUP
//! always, and when the file changes if `config_source.file.watch` is true.
//!
//! Change detection polls the file once a second (length, modification time and content), which
//! needs no platform notification API and catches editors that replace the file by rename. A
//! change is re-read after 100 ms so a writer that is still writing is not caught half way. An
//! invalid file never replaces the running configuration: every error is logged and the
//! previous snapshot stays in force.

use log::{error, info, warn};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use weir_config::Config;
use weir_proxy::SnapshotHandle;

const POLL: Duration = Duration::from_secs(1);
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Watches one configuration file and applies its resources to a running proxy.
pub struct FileReloader {
    path: PathBuf,
    handle: Arc<SnapshotHandle>,
    /// The process settings in force (changes to them need a restart).
    running: Config,
    last_text: String,
}

impl FileReloader {
    pub fn new(path: PathBuf, handle: Arc<SnapshotHandle>, running: Config, text: String) -> Self {
        FileReloader {
            path,
            handle,
            running,
            last_text: text,
        }
    }

    /// Run in a thread of its own until the process exits.
    pub fn spawn(self, watch: bool) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("weir-reload".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        error!("config reload disabled: cannot start its runtime: {e}");
                        return;
                    }
                };
                rt.block_on(self.run(watch));
            })
            .map(|_| ())
    }

    async fn run(mut self, watch: bool) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!("SIGHUP reload disabled: {e}");
                None
            }
        };
        let mut tick = tokio::time::interval(POLL);
        loop {
            let forced = tokio::select! {
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => true,
                _ = tick.tick(), if watch => false,
            };
            self.check(forced).await;
        }
    }

    /// Re-read the file; apply it if it changed (or if `forced`, on SIGHUP).
    async fn check(&mut self, forced: bool) {
        let Some(text) = self.read() else { return };
        if text == self.last_text && !forced {
            return;
        }
        // Let a writer finish, then take what is there.
        tokio::time::sleep(DEBOUNCE).await;
        let Some(text) = self.read() else { return };
        self.last_text = text.clone();
        match weir_config::parse_yaml(&text) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    warn!("{}: {w}", self.path.display());
                }
                let new = loaded.config;
                if new.server != self.running.server
                    || new.admin != self.running.admin
                    || new.control != self.running.control
                    || new.config_source != self.running.config_source
                    || new.discovery != self.running.discovery
                {
                    warn!(
                        "{}: changes to server, admin, control, config_source or discovery take effect after a restart or graceful upgrade",
                        self.path.display()
                    );
                }
                self.handle.apply(&new.resources);
                info!(
                    "{}: configuration reloaded ({} routes, {} upstreams)",
                    self.path.display(),
                    new.resources.routes.len(),
                    new.resources.upstreams.len()
                );
            }
            Err(errors) => {
                for e in errors.iter() {
                    error!("{}: {e}", self.path.display());
                }
                error!(
                    "{}: reload rejected ({} error{}); the running configuration stays in force",
                    self.path.display(),
                    errors.len(),
                    if errors.len() == 1 { "" } else { "s" }
                );
            }
        }
    }

    fn read(&self) -> Option<String> {
        match std::fs::read_to_string(&self.path) {
            Ok(t) => Some(t),
            Err(e) => {
                error!("{}: cannot read for reload: {e}", self.path.display());
                None
            }
        }
    }
}
