//! [`Feed`]: what passes between one registry and the proxy. The registry publishes
//! [`Catalog`]s and errors into it; the proxy tells it which services the configuration
//! references and reads the catalog when it compiles a snapshot.

use crate::node::{Node, ServiceRef};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{watch, Notify};

/// An immutable view of what a registry knows: service key → nodes, in the registry's order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    pub services: HashMap<String, Arc<[Node]>>,
    /// At least one answer succeeded. Before that, every service is unknown (503).
    pub loaded: bool,
}

impl Catalog {
    /// The nodes of service `key`.
    pub fn get(&self, key: &str) -> Option<&Arc<[Node]>> {
        self.services.get(key)
    }
}

/// When the registry last succeeded and what its last error was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// Unix seconds of the last successful answer.
    pub last_update: Option<u64>,
    /// The error of the last failed answer; cleared by the next successful one.
    pub last_error: Option<String>,
    /// Successful answers so far (`discovery_updates_total{result="success"}`).
    pub successes: u64,
    /// Failed answers so far.
    pub failures: u64,
}

/// The channel between one registry and the proxy.
#[derive(Debug)]
pub struct Feed {
    name: String,
    catalog: ArcSwap<Catalog>,
    status: Mutex<Status>,
    wanted: ArcSwap<Vec<ServiceRef>>,
    wanted_changed: Notify,
    /// Bumped on every catalog change (shared by all feeds of a [`DiscoveryRegistry`]).
    ///
    /// [`DiscoveryRegistry`]: crate::DiscoveryRegistry
    changes: watch::Sender<u64>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Two catalogs hold the same nodes (host, port, weight and priority) for the same
/// services, order aside.
fn same_by_value(a: &Catalog, b: &Catalog) -> bool {
    if a.loaded != b.loaded || a.services.len() != b.services.len() {
        return false;
    }
    a.services.iter().all(|(k, x)| {
        b.services.get(k).is_some_and(|y| {
            if x.len() != y.len() {
                return false;
            }
            let mut xs: Vec<_> = x.iter().map(Node::identity).collect();
            let mut ys: Vec<_> = y.iter().map(Node::identity).collect();
            xs.sort_unstable();
            ys.sort_unstable();
            xs == ys
        })
    })
}

impl Feed {
    /// A feed named `name` (the `discovery_type` it serves) that signals changes on `changes`.
    pub fn new(name: &str, changes: watch::Sender<u64>) -> Feed {
        Feed {
            name: name.to_owned(),
            catalog: ArcSwap::from_pointee(Catalog::default()),
            status: Mutex::new(Status::default()),
            wanted: ArcSwap::from_pointee(Vec::new()),
            wanted_changed: Notify::new(),
            changes,
        }
    }

    /// A feed of its own, for tests and for registries used outside a [`DiscoveryRegistry`].
    ///
    /// [`DiscoveryRegistry`]: crate::DiscoveryRegistry
    pub fn standalone(name: &str) -> Feed {
        Feed::new(name, watch::channel(0).0)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current catalog.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.load_full()
    }

    pub fn status(&self) -> Status {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// A successful answer: `services` becomes the whole catalog (the previous content is
    /// replaced, so a service missing here is gone). Returns whether anything changed.
    pub fn publish(&self, services: HashMap<String, Vec<Node>>) -> bool {
        let next = Catalog {
            services: services
                .into_iter()
                .map(|(k, v)| (k, Arc::from(v)))
                .collect(),
            loaded: true,
        };
        self.swap_in(next)
    }

    /// A successful answer about some services only: each entry replaces that service
    /// (`None` removes it); the others stay. Returns whether anything changed.
    pub fn update(&self, changes: impl IntoIterator<Item = (String, Option<Vec<Node>>)>) -> bool {
        let mut next = Catalog::clone(&self.catalog.load());
        next.loaded = true;
        for (k, v) in changes {
            match v {
                Some(nodes) => {
                    next.services.insert(k, Arc::from(nodes));
                }
                None => {
                    next.services.remove(&k);
                }
            }
        }
        self.swap_in(next)
    }

    fn swap_in(&self, next: Catalog) -> bool {
        if let Ok(mut s) = self.status.lock() {
            s.last_update = Some(now_secs());
            s.last_error = None;
            s.successes += 1;
        }
        if same_by_value(&self.catalog.load(), &next) {
            return false;
        }
        self.catalog.store(Arc::new(next));
        self.changes.send_modify(|v| *v = v.wrapping_add(1));
        true
    }

    /// A failed answer: the catalog stays as it is (last good wins); the error is kept for
    /// the control API and logged.
    pub fn failed(&self, error: impl std::fmt::Display) {
        let text = error.to_string();
        log::warn!(
            "discovery {}: {text}; keeping the last good nodes",
            self.name
        );
        if let Ok(mut s) = self.status.lock() {
            s.last_error = Some(text);
            s.failures += 1;
        }
    }

    /// The services the configuration references now.
    pub fn wanted(&self) -> Arc<Vec<ServiceRef>> {
        self.wanted.load_full()
    }

    /// Set the referenced services (the proxy does, on every configuration change). Wakes a
    /// registry waiting in [`wanted_changed`](Self::wanted_changed) when the set changed.
    pub fn want(&self, mut services: Vec<ServiceRef>) {
        services.sort();
        services.dedup();
        if **self.wanted.load() == services {
            return;
        }
        self.wanted.store(Arc::new(services));
        self.wanted_changed.notify_one();
    }

    /// Resolves when the referenced services change (a registry that fetches only what is
    /// referenced fetches a new service at once).
    pub async fn wanted_changed(&self) {
        self.wanted_changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(list: &[(&str, u16, u32)]) -> Vec<Node> {
        list.iter()
            .map(|&(h, p, w)| Node::new(h, p, w, 0))
            .collect()
    }

    #[test]
    fn publishes_changes_by_value_only() {
        let (tx, rx) = watch::channel(0);
        let f = Feed::new("t", tx);
        assert!(!f.catalog().loaded);
        let one = HashMap::from([("web".to_owned(), nodes(&[("a", 1, 1), ("b", 1, 1)]))]);
        assert!(f.publish(one));
        assert_eq!(*rx.borrow(), 1);
        // The same nodes in another order are no change.
        let again = HashMap::from([("web".to_owned(), nodes(&[("b", 1, 1), ("a", 1, 1)]))]);
        assert!(!f.publish(again));
        assert_eq!(*rx.borrow(), 1);
        // A weight is a change.
        let heavier = HashMap::from([("web".to_owned(), nodes(&[("b", 1, 2), ("a", 1, 1)]))]);
        assert!(f.publish(heavier));
        assert_eq!(*rx.borrow(), 2);
        assert!(f.status().last_update.is_some());
    }

    #[test]
    fn a_priority_swap_is_a_change() {
        let f = Feed::standalone("t");
        let at = |a: i64, b: i64| {
            HashMap::from([(
                "srv".to_owned(),
                vec![Node::new("a", 80, 1, a), Node::new("b", 80, 1, b)],
            )])
        };
        assert!(f.publish(at(-10, -20)));
        assert!(f.publish(at(-20, -10)), "the preferred target changed");
        assert!(!f.publish(at(-20, -10)));
    }

    #[test]
    fn a_failure_keeps_the_last_good_catalog() {
        let f = Feed::standalone("t");
        f.publish(HashMap::from([("web".to_owned(), nodes(&[("a", 1, 1)]))]));
        let before = f.catalog();
        f.failed("connection refused");
        assert_eq!(f.catalog(), before);
        assert_eq!(f.status().last_error.as_deref(), Some("connection refused"));
        f.update([("web".to_owned(), Some(nodes(&[("a", 1, 1)])))]);
        assert_eq!(f.status().last_error, None, "cleared by the next success");
    }

    #[test]
    fn updates_touch_only_their_services() {
        let f = Feed::standalone("t");
        f.publish(HashMap::from([
            ("a".to_owned(), nodes(&[("x", 1, 1)])),
            ("b".to_owned(), nodes(&[("y", 1, 1)])),
        ]));
        assert!(f.update([("a".to_owned(), None)]));
        let c = f.catalog();
        assert!(c.get("a").is_none());
        assert_eq!(c.get("b").map(|n| n.len()), Some(1));
    }

    #[test]
    fn wanted_services_are_a_set() {
        let f = Feed::standalone("t");
        f.want(vec![
            ServiceRef::named("b"),
            ServiceRef::named("a"),
            ServiceRef::named("b"),
        ]);
        assert_eq!(
            *f.wanted(),
            vec![ServiceRef::named("a"), ServiceRef::named("b")]
        );
    }
}
