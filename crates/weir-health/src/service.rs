//! [`HealthService`]: every checker of the process as tasks of one Pingora background service
//! (one runtime, not a thread per upstream).

use crate::checker::Checker;
use crate::table::HealthTable;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// Runs one task per checker of a [`HealthTable`], starting and stopping tasks as checkers come
/// and go.
pub struct HealthService {
    table: Arc<HealthTable>,
}

impl HealthService {
    pub fn new(table: Arc<HealthTable>) -> Self {
        HealthService { table }
    }
}

#[async_trait]
impl BackgroundService for HealthService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tasks: HashMap<String, (Arc<Checker>, JoinHandle<()>)> = HashMap::new();
        loop {
            let current = self.table.checkers();
            tasks.retain(|key, (checker, handle)| {
                let live = current
                    .iter()
                    .any(|c| c.key() == key && Arc::ptr_eq(c, checker));
                if !live {
                    handle.abort();
                }
                live
            });
            for c in current {
                if !tasks.contains_key(c.key()) {
                    let handle = tokio::spawn(Arc::clone(&c).run());
                    tasks.insert(c.key().to_owned(), (c, handle));
                }
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = self.table.changed() => {}
            }
        }
        for (_, (_, handle)) in tasks {
            handle.abort();
        }
    }
}
