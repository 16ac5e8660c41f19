//! The file source: resources in the YAML configuration file itself.
//!
//! - Reloads on SIGHUP always, and when the file changes if `config_source.file.watch` is
//!   true. Change detection polls once a second (content compared), which needs no platform
//!   notification API and catches editors that replace the file by rename; a change is
//!   re-read after 100 ms so a writer still writing is not caught half way.
//! - A reload validates the whole file: valid, its resources go to the [`Sink`]; invalid,
//!   every error is logged and the running set stays in force.
//! - Admin API writes ([`Backend`]) rewrite the file's resource sections atomically
//!   ([`writeback`]): the process settings sections keep their text and comments, and a
//!   reader sees the old file or the new one, never a torn one.

pub mod writeback;

use crate::set::ResourceSet;
use crate::source::{Backend, Base, Change, Origin, Sink, StoreError};
use crate::validate::Validator;
use async_trait::async_trait;
use log::{error, info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir_config::{Config, ConfigErrors, Extensions, Loaded};

const POLL: Duration = Duration::from_secs(1);
const DEBOUNCE: Duration = Duration::from_millis(100);

/// What the source last read or wrote.
struct State {
    /// The file's text as last seen (applied, rejected or written).
    text: String,
    /// The resources in force and the settings they were validated under.
    set: Arc<ResourceSet>,
    validator: Validator,
    /// Whether `set` is `text`'s (false after `text` was rejected).
    valid: bool,
}

/// Resources from one YAML file, applied to a [`Sink`]; run it as a Pingora background
/// service (it watches the file) and hand it to the Admin API as its [`Backend`].
pub struct FileSource {
    path: PathBuf,
    watch: bool,
    sink: Arc<dyn Sink>,
    /// The process settings in force (changes to them need a restart).
    running: Config,
    ext: Extensions,
    state: Mutex<State>,
}

impl FileSource {
    /// A source for `path`, whose content `text` was loaded as `running` and is in force.
    pub fn new(
        path: impl Into<PathBuf>,
        text: String,
        running: Config,
        sink: Arc<dyn Sink>,
    ) -> Self {
        let doc = weir_config::yaml_to_value(&text).unwrap_or_default();
        let watch = match running.config_source {
            weir_config::ConfigSource::File { watch } => watch,
            weir_config::ConfigSource::Etcd(_) => false,
        };
        FileSource {
            path: path.into(),
            watch,
            sink,
            running,
            ext: Extensions::new(),
            state: Mutex::new(State {
                text,
                set: Arc::new(ResourceSet::from_document(&doc)),
                validator: Validator::new(&doc),
                valid: true,
            }),
        }
    }

    /// Also accept what the embedder registered (plugins, registries, algorithms, checks).
    pub fn with_extensions(mut self, ext: &Extensions) -> Self {
        self.ext = ext.clone();
        let mut st = self.lock();
        st.validator = st.validator.clone().with_extensions(ext);
        drop(st);
        self
    }

    /// Whether the file is polled for changes (`config_source.file.watch`).
    pub fn watches(&self) -> bool {
        self.watch
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn parse(&self, text: &str) -> Result<Loaded, ConfigErrors> {
        weir_config::parse_yaml_ext(text, &self.ext)
    }

    fn validator_for(&self, doc: &serde_json::Value) -> Validator {
        Validator::new(doc).with_extensions(&self.ext)
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

    /// Re-read the file; apply it if it changed (or if `forced`, on SIGHUP).
    pub async fn check(&self, forced: bool) {
        let Some(text) = self.read() else { return };
        if !forced && text == self.lock().text {
            return;
        }
        // Let a writer finish, then take what is there.
        tokio::time::sleep(DEBOUNCE).await;
        let Some(text) = self.read() else { return };
        self.reload(text);
    }

    /// Validate `text` and, when valid, make its resources the ones in force.
    fn reload(&self, text: String) {
        let shown = self.path.display();
        match self.parse(&text) {
            Ok(loaded) => {
                for w in &loaded.warnings {
                    warn!("{shown}: {w}");
                }
                let new = &loaded.config;
                let r = &self.running;
                if new.server != r.server
                    || new.admin != r.admin
                    || new.control != r.control
                    || new.config_source != r.config_source
                    || new.discovery != r.discovery
                {
                    warn!(
                        "{shown}: changes to server, admin, control, config_source or discovery take effect after a restart or graceful upgrade"
                    );
                }
                let doc = weir_config::yaml_to_value(&text).unwrap_or_default();
                // Swap and apply under the state lock, so an Admin API write never interleaves;
                // a file that changed again since it was read is left to the next check.
                let mut st = self.lock();
                if std::fs::read_to_string(&self.path).ok().as_deref() != Some(text.as_str()) {
                    return;
                }
                st.set = Arc::new(ResourceSet::from_document(&doc));
                st.validator = self.validator_for(&doc);
                st.text = text;
                st.valid = true;
                self.sink.apply(&new.resources);
                self.sink.loaded(Origin::File, true);
                drop(st);
                info!(
                    "{shown}: configuration reloaded ({} routes, {} upstreams)",
                    new.resources.routes.len(),
                    new.resources.upstreams.len()
                );
            }
            Err(errors) => {
                {
                    let mut st = self.lock();
                    st.text = text;
                    st.valid = false;
                }
                self.sink.loaded(Origin::File, false);
                for e in errors.iter() {
                    error!("{shown}: {e}");
                }
                error!(
                    "{shown}: reload rejected ({} error{}); the running configuration stays in force",
                    errors.len(),
                    if errors.len() == 1 { "" } else { "s" }
                );
            }
        }
    }

    /// Watch the file until `shutdown`: SIGHUP always reloads, and with `watch` a change does.
    /// `ready` is notified once SIGHUP is handled (a SIGHUP before that would end the
    /// process), so a proxy that depends on this service never listens before.
    pub async fn run(&self, mut shutdown: ShutdownWatch, ready: Option<ServiceReadyNotifier>) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!("SIGHUP reload disabled: {e}");
                None
            }
        };
        if let Some(r) = ready {
            r.notify_ready();
        }
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => None } } => true,
                _ = tick.tick(), if self.watch => false,
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        return;
                    }
                    continue;
                }
            };
            self.check(forced).await;
        }
    }
}

#[async_trait]
impl BackgroundService for FileSource {
    async fn start_with_ready_notifier(
        &self,
        shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        self.run(shutdown, Some(ready)).await;
    }
}

#[async_trait]
impl Backend for FileSource {
    fn current(&self) -> Arc<ResourceSet> {
        Arc::clone(&self.lock().set)
    }

    /// The file as it is now: a write builds on hand edits not yet reloaded, and is refused
    /// while the file has errors (fixing them is the operator's call, not the API's).
    async fn base(&self) -> Result<Base, StoreError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| {
            StoreError::Unavailable(format!("cannot read {}: {e}", self.path.display()))
        })?;
        {
            let st = self.lock();
            if st.valid && st.text == text {
                return Ok(Base {
                    set: (*st.set).clone(),
                    validator: st.validator.clone(),
                    revision: 0,
                });
            }
        }
        self.parse(&text).map_err(StoreError::Invalid)?;
        let doc = weir_config::yaml_to_value(&text).unwrap_or_default();
        Ok(Base {
            set: ResourceSet::from_document(&doc),
            validator: self.validator_for(&doc),
            revision: 0,
        })
    }

    /// Rewrite the file and apply it, all under the state lock (a reload never interleaves).
    async fn commit(
        &self,
        base: &Base,
        _change: &Change,
        resulting: &ResourceSet,
    ) -> Result<(), StoreError> {
        let unavailable =
            |e: String| StoreError::Unavailable(format!("{}: {e}", self.path.display()));
        let mut st = self.lock();
        let text = std::fs::read_to_string(&self.path).map_err(|e| unavailable(e.to_string()))?;
        let doc = weir_config::yaml_to_value(&text).map_err(StoreError::Invalid)?;
        if ResourceSet::from_document(&doc) != base.set {
            return Err(StoreError::Conflict(format!(
                "{}: the file changed while the write was being validated; retry",
                self.path.display()
            )));
        }
        let sections = match resulting.to_document(&serde_json::Map::new()) {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        let new_text = writeback::rewrite(&text, &sections).map_err(unavailable)?;
        // What is written is what goes live: the file as a whole must load.
        let loaded = self.parse(&new_text).map_err(StoreError::Invalid)?;
        writeback::write_atomic(&self.path, &new_text)
            .map_err(|e| unavailable(format!("cannot write: {e}")))?;
        st.set = Arc::new(resulting.clone());
        st.validator = base.validator.clone();
        st.text = new_text;
        st.valid = true;
        self.sink.apply(&loaded.config.resources);
        self.sink.loaded(Origin::Admin, true);
        Ok(())
    }
}
