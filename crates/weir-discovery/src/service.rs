//! [`DiscoveryService`]: one Pingora background service that runs every registry of a
//! [`DiscoveryRegistry`] as a task of its runtime, and tells the proxy when a catalog changed.

use crate::registry::DiscoveryRegistry;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::services::ServiceReadyNotifier;
use std::sync::Arc;
use std::time::Duration;

/// The longest the service waits for every registry's first answer before it reports ready
/// (services that depend on it, the proxy's listeners, start then).
pub const FIRST_LOAD_DEADLINE: Duration = Duration::from_secs(5);

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

impl DiscoveryService {
    /// Every registry has answered once (successfully or not), or is asked for nothing.
    fn settled(&self) -> bool {
        self.registries.entries().all(|(_, e)| {
            let s = e.feed.status();
            s.last_update.is_some() || s.last_error.is_some() || e.feed.wanted().is_empty()
        })
    }
}

#[async_trait]
impl BackgroundService for DiscoveryService {
    async fn start_with_ready_notifier(
        &self,
        mut shutdown: ShutdownWatch,
        ready: ServiceReadyNotifier,
    ) {
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
        // First load: apply changes as they come until every registry answered once.
        let deadline = tokio::time::Instant::now() + FIRST_LOAD_DEADLINE;
        while !self.settled() && tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                r = changes.changed() => {
                    if r.is_ok() {
                        changes.borrow_and_update();
                        (self.on_change)();
                    }
                }
            }
        }
        if !self.settled() {
            log::warn!(
                "discovery: not every registry answered within {FIRST_LOAD_DEADLINE:?}; serving what is known"
            );
        }
        changes.borrow_and_update();
        (self.on_change)();
        ready.notify_ready();
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
