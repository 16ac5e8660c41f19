//! [`SnapshotHandle`]: the live configuration behind an `ArcSwap`, the state tables every
//! snapshot is compiled against, and the discovery registries it reads nodes from.

use crate::snapshot::{Snapshot, Tables};
use arc_swap::ArcSwap;
use std::sync::{Arc, Mutex};
use weir_config::Resources;
use weir_discovery::DiscoveryRegistry;

/// The live configuration: the current snapshot plus the state tables new snapshots are
/// compiled against. Swapping is atomic; requests finish on the snapshot they started with.
///
/// A snapshot is compiled when resources are applied and again whenever a registry's catalog
/// changes ([`refresh`](Self::refresh)), from the last applied resources.
#[derive(Debug)]
pub struct SnapshotHandle {
    pub(crate) current: ArcSwap<Snapshot>,
    tables: Tables,
    registries: Arc<DiscoveryRegistry>,
    /// The last applied resources; held while compiling, so compilations never interleave.
    resources: Mutex<Resources>,
}

impl Default for SnapshotHandle {
    fn default() -> Self {
        Self::with_registries(Arc::new(DiscoveryRegistry::new()))
    }
}

impl SnapshotHandle {
    /// A handle with no discovery registries: discovered upstreams and host-name nodes have
    /// no nodes. See [`with_discovery`](Self::with_discovery).
    pub fn new(res: &Resources) -> Arc<Self> {
        let h = Arc::new(Self::default());
        h.apply(res);
        h
    }

    /// A handle whose snapshots take nodes from `registries` (which a
    /// [`weir_discovery::DiscoveryService`] must run; `crate::server` adds it).
    pub fn with_discovery(res: &Resources, registries: Arc<DiscoveryRegistry>) -> Arc<Self> {
        let h = Arc::new(Self::with_registries(registries));
        h.apply(res);
        h
    }

    fn with_registries(registries: Arc<DiscoveryRegistry>) -> Self {
        SnapshotHandle {
            current: ArcSwap::from_pointee(Snapshot::empty()),
            tables: Tables::default(),
            registries,
            resources: Mutex::new(Resources::default()),
        }
    }

    /// Compile `res` and make it the live configuration.
    pub fn apply(&self, res: &Resources) {
        let mut held = self.resources.lock().unwrap_or_else(|p| p.into_inner());
        *held = res.clone();
        self.compile(&held);
    }

    /// Recompile the last applied resources against the registries' current catalogs (after
    /// a discovery change). Staying nodes keep their state.
    pub fn refresh(&self) {
        let held = self.resources.lock().unwrap_or_else(|p| p.into_inner());
        self.compile(&held);
    }

    fn compile(&self, res: &Resources) {
        let snap = Snapshot::compile_with(res, &self.tables, &self.registries);
        self.current.store(Arc::new(snap));
    }

    /// The state shared across snapshots (health table, per-node state).
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The discovery registries snapshots read nodes from.
    pub fn registries(&self) -> &Arc<DiscoveryRegistry> {
        &self.registries
    }

    /// The live snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}
