//! [`SnapshotHandle`]: the live configuration behind an `ArcSwap`, and the state tables every
//! snapshot is compiled against.

use crate::snapshot::{Snapshot, Tables};
use arc_swap::ArcSwap;
use std::sync::Arc;
use weir_config::Resources;

/// The live configuration: the current snapshot plus the state tables new snapshots are
/// compiled against. Swapping is atomic; requests finish on the snapshot they started with.
#[derive(Debug)]
pub struct SnapshotHandle {
    pub(crate) current: ArcSwap<Snapshot>,
    tables: Tables,
}

impl Default for SnapshotHandle {
    fn default() -> Self {
        SnapshotHandle {
            current: ArcSwap::from_pointee(Snapshot::empty()),
            tables: Tables::default(),
        }
    }
}

impl SnapshotHandle {
    pub fn new(res: &Resources) -> Arc<Self> {
        let h = Arc::new(Self::default());
        h.apply(res);
        h
    }

    /// Compile `res` and make it the live configuration.
    pub fn apply(&self, res: &Resources) {
        let snap = Snapshot::compile(res, &self.tables);
        self.current.store(Arc::new(snap));
    }

    /// The state shared across snapshots (health table, per-node state).
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The live snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }
}
