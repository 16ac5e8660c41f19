//! The process-wide health table: one [`Checker`] per upstream key with `checks`, shared by
//! every snapshot and request and by the background service that runs the probes.

use crate::check::{Check, CheckRegistry};
use crate::checker::Checker;
use crate::probe::ProbeSpec;
use crate::target::{Target, TargetSpec};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Checkers by upstream key, and the checks they probe with by name (`checks.active.type`:
/// `http`, `https` and `tcp` are registered by default, [`register_check`](Self::register_check)
/// adds more). The lock is taken when a configuration is compiled and when the service
/// reconciles its tasks, never on the request path.
#[derive(Debug, Default)]
pub struct HealthTable {
    checkers: Mutex<BTreeMap<String, Arc<Checker>>>,
    changed: Notify,
    checks: Arc<CheckRegistry>,
}

impl HealthTable {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Checker>>> {
        self.checkers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register `check` as the `checks.active.type` `name`, next to the built-ins (`http`,
    /// `https`, `tcp`); a name registered again is replaced, a built-in too. Checkers look
    /// their check up at every probe: a registration applies from the next probe on, also to
    /// checkers created before it. Validation must accept the name as well
    /// (`weir_config::Extensions::check`).
    pub fn register_check(&self, name: &str, check: Arc<dyn Check>) {
        self.checks.register(name, check);
    }

    /// The check registered as `name`.
    pub fn check(&self, name: &str) -> Option<Arc<dyn Check>> {
        self.checks.get(name)
    }

    /// Every registered check name, built-ins included, sorted.
    pub fn check_names(&self) -> Vec<String> {
        self.checks.names()
    }

    /// Create or update the checker of `key` with `spec`. `version` fingerprints
    /// `checks.active`: the probe schedule restarts only when it changed.
    /// Returns the checker and the target of each of `targets`, in order.
    pub fn sync(
        &self,
        key: &str,
        version: u64,
        spec: ProbeSpec,
        targets: &[TargetSpec],
    ) -> (Arc<Checker>, Vec<Arc<Target>>) {
        let mut map = self.lock();
        let checker = match map.get(key) {
            Some(c) => {
                c.update_spec(version, spec);
                Arc::clone(c)
            }
            None => {
                let c = Arc::new(Checker::new(key, version, spec, Arc::clone(&self.checks)));
                map.insert(key.to_owned(), Arc::clone(&c));
                self.changed.notify_one();
                c
            }
        };
        drop(map);
        let per_target = checker.set_targets(targets);
        (checker, per_target)
    }

    /// Stop and drop every checker whose key is not in `keep` (upstream deleted, or `checks`
    /// removed): its state is dropped and its targets are no longer probed.
    pub fn retain(&self, keep: &HashSet<String>) {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|k, c| {
            let stays = keep.contains(k);
            if !stays {
                c.stop();
            }
            stays
        });
        let removed = before != map.len();
        drop(map);
        if removed {
            self.changed.notify_one();
        }
    }

    /// The checker of an upstream key.
    pub fn get(&self, key: &str) -> Option<Arc<Checker>> {
        self.lock().get(key).cloned()
    }

    /// Every checker, by key.
    pub fn checkers(&self) -> Vec<Arc<Checker>> {
        self.lock().values().cloned().collect()
    }

    /// Resolves when checkers were added or removed since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}
