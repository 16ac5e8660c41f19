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

/// Run a registry for ever: if its task ends (it panicked, or returned), the failure is
/// recorded in its feed — the catalog stays as it was — and it is started again after a
/// pause that grows to a minute.
async fn supervise(registry: Arc<dyn crate::Registry>, feed: Arc<crate::Feed>) {
    let mut backoff = crate::Backoff::doubling(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let (r, f) = (Arc::clone(&registry), Arc::clone(&feed));
        let outcome = tokio::spawn(async move { r.run(f).await }).await;
        let why = match outcome {
            Ok(()) => "the registry task ended".to_owned(),
            Err(e) if e.is_panic() => "the registry task panicked".to_owned(),
            Err(e) => format!("the registry task failed: {e}"),
        };
        let pause = backoff.next_delay();
        feed.failed(format!("{why}; restarting it in {pause:?}"));
        tokio::time::sleep(pause).await;
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
                tokio::spawn(supervise(registry, feed))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Feed, Node, Registry};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Publishes, then panics on its first run; publishes again on the next.
    struct Fragile(AtomicUsize);

    #[async_trait]
    impl Registry for Fragile {
        async fn run(&self, feed: Arc<Feed>) {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            feed.publish(HashMap::from([(
                "web".to_owned(),
                vec![Node::new("10.0.0.1", 80, 1 + n as u32, 0)],
            )]));
            if n == 0 {
                panic!("a bug in a registry");
            }
            std::future::pending::<()>().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_registry_that_panics_is_restarted_and_its_nodes_kept() {
        let r: Arc<dyn Registry> = Arc::new(Fragile(AtomicUsize::new(0)));
        let feed = Arc::new(Feed::standalone("fragile"));
        let task = tokio::spawn(supervise(Arc::clone(&r), Arc::clone(&feed)));
        while feed.status().last_error.is_none() {
            tokio::task::yield_now().await;
        }
        assert!(feed
            .status()
            .last_error
            .is_some_and(|e| e.contains("panicked")));
        assert_eq!(feed.catalog().get("web").map(|n| n[0].weight), Some(1));
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            feed.catalog().get("web").map(|n| n[0].weight),
            Some(2),
            "restarted"
        );
        task.abort();
    }
}
