//! The seams of a configuration source: [`Sink`] (where valid sets go) and [`Backend`]
//! (what the Admin API reads and writes through).

use crate::set::{Kind, ResourceSet};
use crate::validate::Validator;
use async_trait::async_trait;
use serde_json::Value;
use std::fmt;
use weir_config::{ConfigErrors, Resources};

/// Where a source delivers every valid resource set it arrives at: the running proxy. Called
/// from the source's own task; implementations swap their configuration and return.
pub trait Sink: Send + Sync + 'static {
    fn apply(&self, resources: &Resources);

    /// A load from `origin` ended: applied (`ok`), or refused while the running configuration
    /// stays (a file or an etcd revision that does not validate). For metrics; the default
    /// does nothing.
    fn loaded(&self, origin: Origin, ok: bool) {
        let _ = (origin, ok);
    }
}

/// Where a load came from (`config_reloads_total{source}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file (its first load, a change, SIGHUP).
    File,
    /// etcd: the first read, a relist or watch events (Admin API writes, with the etcd source,
    /// arrive this way too).
    Etcd,
    /// An Admin API write applied by a file or in-memory source.
    Admin,
}

impl<F: Fn(&Resources) + Send + Sync + 'static> Sink for F {
    fn apply(&self, resources: &Resources) {
        self(resources)
    }
}

/// One write of the Admin API.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put {
        kind: Kind,
        id: String,
        value: Value,
    },
    Delete {
        kind: Kind,
        id: String,
    },
}

impl Change {
    pub fn kind(&self) -> Kind {
        match self {
            Change::Put { kind, .. } | Change::Delete { kind, .. } => *kind,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Change::Put { id, .. } | Change::Delete { id, .. } => id,
        }
    }

    /// `set` with this change made.
    pub fn applied_to(&self, set: &ResourceSet) -> ResourceSet {
        let mut out = set.clone();
        match self {
            Change::Put { kind, id, value } => {
                out.put(*kind, id, value.clone());
            }
            Change::Delete { kind, id } => {
                out.remove(*kind, id);
            }
        }
        out
    }
}

/// The resources a write starts from and the validator for the result.
#[derive(Debug, Clone)]
pub struct Base {
    pub set: ResourceSet,
    pub validator: Validator,
    /// The store's revision `set` was read at (etcd), 0 where there is none.
    pub revision: i64,
}

/// Why a source could not read or store.
#[derive(Debug)]
pub enum StoreError {
    /// The stored configuration itself is invalid (a hand-edited file with errors), so no
    /// write can be validated against it.
    Invalid(ConfigErrors),
    /// The store could not be reached or refused the operation.
    Unavailable(String),
    /// Someone else changed the store since the write was validated; nothing was written.
    Conflict(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Invalid(e) => {
                write!(f, "the stored configuration is invalid: {}", e.joined())
            }
            StoreError::Unavailable(e) | StoreError::Conflict(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for StoreError {}

/// A source the Admin API writes through. Writes are serialised by the caller.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The resources in force on this instance, for reads.
    fn current(&self) -> std::sync::Arc<ResourceSet>;

    /// The resources as the source holds them now (the valid set in force) and the validator
    /// writes are checked with.
    async fn base(&self) -> Result<Base, StoreError>;

    /// Store `change`, already validated against `base`: `resulting` is `base.set` with the
    /// change made. Returns once the change is live on this instance.
    async fn commit(
        &self,
        base: &Base,
        change: &Change,
        resulting: &ResourceSet,
    ) -> Result<(), StoreError>;
}
