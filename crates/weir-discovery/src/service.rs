//! [`DiscoveryService`]: one Pingora background service that runs every registry of a
//! [`DiscoveryRegistry`] as a task of its runtime, and tells the proxy when a catalog changed.

use crate::registry::DiscoveryRegistry;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;

/// What to run after a catalog changed (the proxy recompiles its snapshot).
pub type OnChange = Box<dyn Fn() + Send + Sync>;

/// Runs every registry until shutdown; calls `on_change` after catalog changes. Changes that
/// arrive while `on_change` runs are coalesced into one more call.
pub struct DiscoveryService {
    registries: Arc<DiscoveryRegistry>,
    on_change: OnChange,
}

impl DiscoveryService {
    pub fn new(registries: Arc<DiscoveryRegistry>, on_change: OnChange) -> Self {
        DiscoveryService {
            registries,
            on_change,
        }
    }
}

#[async_trait]
impl BackgroundService for DiscoveryService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut changes = self.registries.subscribe();
        let tasks: Vec<_> = self
            .registries
            .entries()
            .map(|(name, e)| {
                log::info!("discovery {name}: started");
                let (registry, feed) = (Arc::clone(&e.registry), Arc::clone(&e.feed));
                tokio::spawn(async move { registry.run(feed).await })
            })
            .collect();
        loop {
            tokio::select! {
                r = shutdown.changed() => {
                    if r.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
                r = changes.changed() => {
                    if r.is_err() {
                        break;
                    }
                    changes.borrow_and_update();
                    (self.on_change)();
                }
            }
        }
        for t in tasks {
            t.abort();
        }
    }
}
