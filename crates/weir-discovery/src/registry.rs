//! [`Registry`]: the trait every discovery source implements, and [`DiscoveryRegistry`]: the
//! registries of a process by `discovery_type` name.

use crate::feed::{Catalog, Feed};
use crate::node::{Node, ServiceRef};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

/// A discovery source, shaped after Pingora's `ServiceDiscovery` but serving many services:
/// it runs in the background and publishes [`Catalog`]s into its [`Feed`].
///
/// Implementations must keep the rules of this crate (see the crate documentation): publish
/// only successful answers, call [`Feed::failed`] for the others and retry with backoff, and
/// skip invalid instances with a warning.
#[async_trait]
pub trait Registry: Send + Sync + 'static {
    /// Load, watch and publish until the returned future is dropped (at shutdown). It should
    /// never return on its own; a registry that has nothing left to do may wait forever.
    async fn run(&self, feed: Arc<Feed>);

    /// The nodes of `service` in `catalog`, in the order the balancer gets them. `None` when
    /// the service is unknown. The default looks the service up by its name.
    fn lookup(&self, catalog: &Catalog, service: &ServiceRef) -> Option<Arc<[Node]>> {
        catalog.get(&service.name).cloned()
    }

    /// The registry's configuration as the control API shows it, with every secret replaced
    /// by [`MASK`](crate::MASK).
    fn config_dump(&self) -> serde_json::Value {
        serde_json::Value::Object(Default::default())
    }
}

/// One registered registry and its feed.
#[derive(Clone)]
pub struct Entry {
    pub registry: Arc<dyn Registry>,
    pub feed: Arc<Feed>,
}

/// The registries of a process, by `discovery_type` name. The built-ins are registered the
/// same way as an embedder's own (`discovery_type: my-registry`).
pub struct DiscoveryRegistry {
    entries: BTreeMap<String, Entry>,
    changes: watch::Sender<u64>,
}

impl Default for DiscoveryRegistry {
    fn default() -> Self {
        DiscoveryRegistry {
            entries: BTreeMap::new(),
            changes: watch::channel(0).0,
        }
    }
}

impl DiscoveryRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `registry` under `name`, replacing any registry of that name.
    pub fn register(&mut self, name: &str, registry: Arc<dyn Registry>) -> &mut Self {
        let feed = Arc::new(Feed::new(name, self.changes.clone()));
        self.entries
            .insert(name.to_owned(), Entry { registry, feed });
        self
    }

    /// The registry of `name` and its feed.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The nodes of `service` in registry `name`: `None` when the registry is unknown, has
    /// not loaded yet, or does not know the service.
    pub fn lookup(&self, name: &str, service: &ServiceRef) -> Option<Arc<[Node]>> {
        let e = self.entries.get(name)?;
        let catalog = e.feed.catalog();
        if !catalog.loaded {
            return None;
        }
        e.registry.lookup(&catalog, service)
    }

    /// A receiver that sees a new value whenever any registry's catalog changed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}

impl std::fmt::Debug for DiscoveryRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoveryRegistry")
            .field("names", &self.entries.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fixed;

    #[async_trait]
    impl Registry for Fixed {
        async fn run(&self, feed: Arc<Feed>) {
            feed.publish(HashMap::from([(
                "web".to_owned(),
                vec![Node::new("10.0.0.1", 80, 1, 0)],
            )]));
            std::future::pending::<()>().await;
        }
    }

    #[tokio::test]
    async fn looks_up_registered_registries_once_loaded() {
        let mut r = DiscoveryRegistry::new();
        r.register("fixed", Arc::new(Fixed));
        assert_eq!(r.names().collect::<Vec<_>>(), ["fixed"]);
        let web = ServiceRef::named("web");
        assert!(r.lookup("fixed", &web).is_none(), "not loaded yet");
        let mut changes = r.subscribe();
        let e = r.get("fixed").cloned().expect("registered");
        let task = tokio::spawn(async move { e.registry.run(e.feed).await });
        changes.changed().await.expect("a change");
        assert_eq!(r.lookup("fixed", &web).map(|n| n.len()), Some(1));
        assert!(r.lookup("fixed", &ServiceRef::named("nope")).is_none());
        assert!(r.lookup("other", &web).is_none());
        task.abort();
    }
}
