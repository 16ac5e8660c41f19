//! The etcd source: resources under `<prefix>/<kind>/<id>` in etcd, each value the resource's
//! JSON (an `id` inside is optional and must equal the key's; the key's is filled in), shared by
//! every instance that reads the same prefix. See `docs/etcd.md`.
//!
//! - Start-up: the prefix is read in pages at one revision and settled
//!   ([`Validator::settle`]): invalid entries, and those depending on them, are skipped with
//!   logged errors while the rest loads. Then the prefix is watched from that revision + 1.
//! - Each watch batch is applied to the stored set and settled against the set in force: a
//!   key whose new value is invalid keeps its previous value; the rest goes live.
//! - etcd unreachable at start: the proxy serves an empty set (404) and the source keeps
//!   trying. Connection loss keeps the last good set; reconnection backs off from 1 s to
//!   30 s, cycling the endpoints, and resumes from the last seen revision, or re-reads
//!   everything when that revision was compacted.
//! - Admin API writes are etcd `PUT`s and `DELETE`s of one key; a write returns once this
//!   instance's watch has applied it, and every other instance applies it from its own watch.

pub mod client;

use crate::set::{references, with_id, Kind, ResourceSet};
use crate::source::{Backend, Base, Change, Origin, Sink, StoreError};
use crate::validate::{Outcome, Rejection, Validator};
use async_trait::async_trait;
use client::{EtcdConn, EtcdError, Event, Listing, WatchItem};
use log::{error, info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir_config::EtcdSource as EtcdConfig;

/// Keys read per range request at start-up and on a re-list.
const PAGE: i64 = 500;
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the source holds.
#[derive(Default)]
struct State {
    /// Every parsable value stored under the prefix, valid or not.
    stored: ResourceSet,
    /// The settled, valid set in force.
    live: Arc<ResourceSet>,
    /// The etcd revision `live` reflects; 0 before the first read.
    revision: i64,
    /// Why the last session with etcd ended, until the next read or watch succeeds.
    last_error: Option<String>,
}

/// Resources from etcd, applied to a [`Sink`]; run it as a Pingora background service and hand
/// it to the Admin API as its [`Backend`].
pub struct EtcdSource {
    cfg: EtcdConfig,
    sink: Arc<dyn Sink>,
    validator: Validator,
    state: Mutex<State>,
    reachable: Arc<AtomicBool>,
    /// The revision applied locally, for writes that wait to be live.
    applied: tokio::sync::watch::Sender<i64>,
    writer: tokio::sync::Mutex<Writer>,
}

/// Why a session with etcd ended.
enum End {
    Shutdown,
}

impl EtcdSource {
    /// A source reading `cfg`, validating what it reads under `validator` (the file's process
    /// settings).
    pub fn new(cfg: EtcdConfig, validator: Validator, sink: Arc<dyn Sink>) -> Self {
        EtcdSource {
            cfg,
            sink,
            validator,
            state: Mutex::new(State::default()),
            reachable: Arc::new(AtomicBool::new(false)),
            applied: tokio::sync::watch::Sender::new(0),
            writer: tokio::sync::Mutex::new(Writer::default()),
        }
    }

    /// Whether the last attempt to talk to etcd succeeded (`etcd_reachable` in metrics).
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Relaxed)
    }

    /// The flag behind [`reachable`](Self::reachable), for a metrics exporter.
    pub fn reachable_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.reachable)
    }

    /// The etcd revision of the set in force (0 before the first read).
    pub fn revision(&self) -> i64 {
        self.lock().revision
    }

    /// Why the last attempt to read or watch etcd failed; `None` once one succeeds.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait (at most the request timeout) until this instance's watch has applied `revision`.
    async fn wait_applied(&self, revision: i64) -> bool {
        let mut applied = self.applied.subscribe();
        let seen =
            tokio::time::timeout(self.cfg.timeout, applied.wait_for(|r| *r >= revision)).await;
        matches!(seen, Ok(Ok(_)))
    }

    /// The range every key lives under: `<prefix>/`.
    fn range(&self) -> String {
        format!("{}/", self.cfg.prefix)
    }

    fn key_of(&self, kind: Kind, id: &str) -> String {
        format!("{}/{}/{id}", self.cfg.prefix, kind.as_str())
    }

    /// `(kind, id)` of a key under the prefix, or why it is not a resource key.
    fn parse_key<'k>(&self, key: &'k str) -> Result<(Kind, &'k str), String> {
        let rest = key.strip_prefix(&self.range()).unwrap_or(key);
        let Some((kind, id)) = rest.split_once('/') else {
            return Err("not a <prefix>/<kind>/<id> key".into());
        };
        let Some(kind) = Kind::parse(kind) else {
            return Err(format!(
                "unknown kind {kind:?} (one of routes, services, upstreams, consumers, certificates, ca_certificates)"
            ));
        };
        if id.is_empty() || id.contains('/') {
            return Err(format!("invalid id {id:?}"));
        }
        Ok((kind, id))
    }

    /// The JSON value of a stored resource, or why it is not one.
    fn parse_value(value: &[u8]) -> Result<serde_json::Value, String> {
        match serde_json::from_slice::<serde_json::Value>(value) {
            Ok(v @ serde_json::Value::Object(_)) => Ok(v),
            Ok(_) => Err("the value must be a JSON object".into()),
            Err(e) => Err(format!("invalid JSON: {e}")),
        }
    }

    /// Make a full listing the stored set, settle it against the set in force and apply it.
    fn apply_listing(&self, listing: Listing) {
        let mut stored = ResourceSet::new();
        for kv in &listing.kvs {
            let parsed = self
                .parse_key(&kv.key)
                .and_then(|(kind, id)| Ok((kind, id, Self::parse_value(&kv.value)?)));
            match parsed {
                Ok((kind, id, v)) => {
                    stored.put(kind, id, with_id(kind, id, &v));
                }
                Err(e) => error!("etcd key {}: {e}; skipped", kv.key),
            }
        }
        // Resources keep the order they had (new ones after them), so a re-read validates in
        // the same document order as the watch did.
        let previous = Arc::clone(&self.lock().live);
        let mut ordered = ResourceSet::new();
        for kind in Kind::ALL {
            for (id, _) in previous.list(kind) {
                if let Some(v) = stored.get(kind, id) {
                    ordered.put(kind, id, v.clone());
                }
            }
            for (id, v) in stored.list(kind) {
                if ordered.get(kind, id).is_none() {
                    ordered.put(kind, id, v.clone());
                }
            }
        }
        self.settle_and_apply(ordered, listing.revision, None);
    }

    /// Apply one watch batch to the stored set, settle and apply it.
    fn apply_batch(&self, revision: i64, events: Vec<Event>) {
        let mut stored = self.lock().stored.clone();
        let mut touched = HashSet::new();
        for ev in events {
            let key = match &ev {
                Event::Put(kv) => kv.key.clone(),
                Event::Delete { key, .. } => key.clone(),
            };
            let (kind, id) = match self.parse_key(&key) {
                Ok(k) => k,
                Err(e) => {
                    error!("etcd key {key}: {e}; ignored");
                    continue;
                }
            };
            match ev {
                Event::Put(kv) => match Self::parse_value(&kv.value) {
                    Ok(v) => {
                        stored.put(kind, id, with_id(kind, id, &v));
                    }
                    Err(e) => {
                        error!("etcd key {key}: {e}; it keeps its previous value");
                        continue;
                    }
                },
                Event::Delete { .. } => {
                    stored.remove(kind, id);
                }
            }
            touched.insert((kind, id.to_owned()));
        }
        self.settle_and_apply(stored, revision, Some(&touched));
    }

    /// Settle `stored` against the set in force, apply the result, and log what was rejected
    /// (only for `touched` keys after the first read: the others were reported already).
    fn settle_and_apply(
        &self,
        stored: ResourceSet,
        revision: i64,
        touched: Option<&HashSet<(Kind, String)>>,
    ) {
        let previous = Arc::clone(&self.lock().live);
        let settled = match self.validator.settle(stored.clone(), &previous) {
            Ok(s) => s,
            Err(errors) => {
                error!(
                    "etcd revision {revision}: rejected ({}); the running configuration stays in force",
                    errors.joined()
                );
                let mut st = self.lock();
                st.stored = stored;
                st.revision = revision;
                drop(st);
                self.sink.loaded(Origin::Etcd, false);
                self.applied.send_replace(revision);
                return;
            }
        };
        for r in &settled.rejected {
            if touched.is_none_or(|t| t.contains(&(r.kind, r.id.clone()))) {
                self.log_rejection(r);
            }
        }
        let changed = *previous != settled.set;
        {
            let mut st = self.lock();
            st.stored = stored;
            st.live = Arc::new(settled.set);
            st.revision = revision;
        }
        if changed || touched.is_none() {
            self.sink.apply(&settled.config.resources);
            self.sink.loaded(Origin::Etcd, true);
            let r = &settled.config.resources;
            info!(
                "etcd revision {revision}: configuration applied ({} routes, {} services, {} upstreams)",
                r.routes.len(),
                r.services.len(),
                r.upstreams.len()
            );
        }
        self.applied.send_replace(revision);
    }

    fn log_rejection(&self, r: &Rejection) {
        let what = match r.outcome {
            Outcome::KeptPrevious => "it keeps its previous value",
            Outcome::Skipped => "skipped",
            Outcome::Restored => "its deletion is not applied",
        };
        error!(
            "etcd key {}: {}; {what}",
            self.key_of(r.kind, &r.id),
            r.message()
        );
    }

    /// One connection's life: read (first time, or after a compaction), then watch until the
    /// connection is lost or the process shuts down.
    async fn session(
        &self,
        endpoint: &str,
        shutdown: &mut ShutdownWatch,
        ready: &mut Option<ServiceReadyNotifier>,
        watched: &mut bool,
    ) -> Result<End, EtcdError> {
        let mut conn = EtcdConn::connect(&self.cfg, endpoint).await?;
        let range = self.range();
        let mut from = self.revision();
        if from == 0 {
            let listing = conn.list(&range, PAGE).await?;
            self.reachable.store(true, Ordering::Relaxed);
            from = listing.revision;
            self.apply_listing(listing);
        }
        self.reachable.store(true, Ordering::Relaxed);
        self.lock().last_error = None;
        if let Some(r) = ready.take() {
            r.notify_ready();
        }
        loop {
            let mut watch = conn.watch(&range, from + 1).await?;
            *watched = true;
            info!(
                "etcd {endpoint}: watching {range} from revision {}",
                from + 1
            );
            loop {
                let item = tokio::select! {
                    r = shutdown.changed() => {
                        if r.is_err() || *shutdown.borrow() {
                            return Ok(End::Shutdown);
                        }
                        continue;
                    }
                    item = watch.next() => item?,
                };
                match item {
                    WatchItem::Batch { revision, events } => {
                        self.apply_batch(revision, events);
                        from = revision;
                    }
                    WatchItem::Compacted { compact_revision } => {
                        warn!(
                            "etcd {endpoint}: revision {} was compacted (now {compact_revision}); re-reading {range}",
                            from + 1
                        );
                        let listing = conn.list(&range, PAGE).await?;
                        from = listing.revision;
                        self.apply_listing(listing);
                        break;
                    }
                }
            }
        }
    }

    /// Connect, read and watch until shutdown, reconnecting with backoff across the
    /// endpoints. `ready` is notified after the first read, or after the first failed attempt
    /// (the proxy then serves an empty set while this keeps trying).
    pub async fn run(&self, mut shutdown: ShutdownWatch, ready: Option<ServiceReadyNotifier>) {
        // SIGHUP reloads the file source; here resources are always live, and without a
        // handler the signal would end the process.
        let hup = tokio::spawn(async {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::hangup()) {
                Ok(mut s) => {
                    while s.recv().await.is_some() {
                        info!("SIGHUP: resources come from etcd and are always live; nothing to reload (process settings need a restart)");
                    }
                }
                Err(e) => warn!("cannot handle SIGHUP: {e}"),
            }
        });
        self.follow(&mut shutdown, ready).await;
        hup.abort();
    }

    async fn follow(&self, shutdown: &mut ShutdownWatch, ready: Option<ServiceReadyNotifier>) {
        let mut ready = ready;
        let mut backoff = BACKOFF_START;
        let endpoints = self.cfg.endpoints.clone();
        let mut i = 0usize;
        loop {
            let Some(endpoint) = endpoints.get(i % endpoints.len().max(1)) else {
                error!("etcd: no endpoints configured");
                return;
            };
            let had = self.revision();
            let mut watched = false;
            match self
                .session(endpoint, shutdown, &mut ready, &mut watched)
                .await
            {
                Ok(End::Shutdown) => return,
                Err(e) => {
                    self.reachable.store(false, Ordering::Relaxed);
                    self.lock().last_error = Some(e.to_string());
                    if watched {
                        // The session got as far as watching: start the backoff over.
                        backoff = BACKOFF_START;
                    }
                    if had == 0 && self.revision() == 0 {
                        warn!("{e}; serving an empty configuration until etcd answers (retry in {backoff:?})");
                    } else {
                        warn!("{e}; keeping the last good configuration (retry in {backoff:?})");
                    }
                    if let Some(r) = ready.take() {
                        r.notify_ready();
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
            i += 1;
        }
    }

    /// Run `op` on the connection for writes: made on first use, replaced when it fails, the
    /// next endpoint tried after a failed one (every endpoint once, plus one retry for a
    /// cached connection that went stale).
    async fn write(&self, op: &WriteOp<'_>) -> Result<Result<i64, i64>, StoreError> {
        let mut guard = self.writer.lock().await;
        let n = self.cfg.endpoints.len();
        let mut last = None;
        for _ in 0..=n {
            if guard.conn.is_none() {
                let Some(ep) = self.cfg.endpoints.get(guard.next % n.max(1)) else {
                    break;
                };
                match EtcdConn::connect(&self.cfg, ep).await {
                    Ok(c) => guard.conn = Some(c),
                    Err(e) => {
                        guard.next = guard.next.wrapping_add(1);
                        last = Some(e);
                        continue;
                    }
                }
            }
            let Some(conn) = guard.conn.as_mut() else {
                continue;
            };
            match op.run(conn, &self.range()).await {
                Ok(rev) => return Ok(rev),
                Err(e) => {
                    guard.conn = None;
                    guard.next = guard.next.wrapping_add(1);
                    last = Some(e);
                }
            }
        }
        Err(StoreError::Unavailable(last.map_or_else(
            || "etcd: no endpoints".into(),
            |e| e.to_string(),
        )))
    }
}

/// The connection Admin API writes use, and the endpoint to try next.
#[derive(Default)]
struct Writer {
    conn: Option<EtcdConn>,
    next: usize,
}

/// One conditional write to etcd (see [`EtcdConn::write_if`]).
struct WriteOp<'a> {
    key: &'a str,
    value: Option<Vec<u8>>,
    since: i64,
    existing: Vec<String>,
    create: bool,
}

impl WriteOp<'_> {
    async fn run(&self, conn: &mut EtcdConn, range: &str) -> Result<Result<i64, i64>, EtcdError> {
        conn.write_if(
            range,
            self.since,
            &self.existing,
            self.create,
            self.key,
            self.value.as_deref(),
        )
        .await
    }
}

#[async_trait]
impl BackgroundService for EtcdSource {
    async fn start_with_ready_notifier(
        &self,
        shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
        self.run(shutdown, Some(ready)).await;
    }
}

#[async_trait]
impl Backend for EtcdSource {
    fn current(&self) -> Arc<ResourceSet> {
        Arc::clone(&self.lock().live)
    }

    /// The set in force, refused while this instance does not follow etcd (before the first
    /// read, or while the watch is down): a write must not be validated against stale data.
    async fn base(&self) -> Result<Base, StoreError> {
        let st = self.lock();
        if st.revision == 0 || !self.reachable() {
            return Err(StoreError::Unavailable(
                "etcd is not reachable from this instance; writes are refused until it is".into(),
            ));
        }
        Ok(Base {
            set: (*st.live).clone(),
            validator: self.validator.clone(),
            revision: st.revision,
        })
    }

    /// One etcd transaction: the write happens only if nothing under the prefix changed since
    /// the revision it was validated at, what it references still exists, and a new key was
    /// not created meanwhile. Otherwise 409: another instance (or etcdctl) wrote first.
    async fn commit(
        &self,
        base: &Base,
        change: &Change,
        _resulting: &ResourceSet,
    ) -> Result<(), StoreError> {
        let (kind, id) = (change.kind(), change.id());
        let key = self.key_of(kind, id);
        let (value, existing) = match change {
            Change::Put { value, .. } => (
                Some(
                    serde_json::to_vec(value)
                        .map_err(|e| StoreError::Unavailable(format!("cannot encode: {e}")))?,
                ),
                references(kind, value)
                    .into_iter()
                    .map(|(k, i)| self.key_of(k, &i))
                    .collect(),
            ),
            Change::Delete { .. } => (None, Vec::new()),
        };
        let op = WriteOp {
            key: &key,
            value,
            since: base.revision,
            existing,
            create: base.set.get(kind, id).is_none() && matches!(change, Change::Put { .. }),
        };
        let revision = match self.write(&op).await? {
            Ok(revision) => revision,
            Err(_current) => {
                // Catch up first (the change that got in the way is under the prefix, past the
                // base's revision), so that redoing the request validates against it. Bounded:
                // a referenced key missing from etcd leaves nothing to wait for.
                let mut applied = self.applied.subscribe();
                let _ = tokio::time::timeout(
                    self.cfg.timeout.min(Duration::from_secs(1)),
                    applied.wait_for(|r| *r > base.revision),
                )
                .await;
                return Err(StoreError::Conflict(format!(
                    "{key} was not written: the configuration in etcd changed since revision {} (another instance or a direct write); read it again and retry",
                    base.revision
                )));
            }
        };
        // Live here before the answer: wait for this instance's watch to apply the write.
        if !self.wait_applied(revision).await {
            warn!(
                "etcd {key}: written at revision {revision}, not yet seen by this instance's watch"
            );
        }
        Ok(())
    }
}
