//! The DNS registry's loop: which names are wanted, when each is due, and what an answer
//! changes in the feed.
//!
//! One task serves every name. Each name carries the instant it is due again (its clamped TTL
//! after a success, a growing retry delay after a failure); the loop sleeps until the earliest
//! one, a finished resolution, or a change of the wanted set, so it never spins. At most
//! [`MAX_IN_FLIGHT`] names resolve at once.
//!
//! Invariants: a name's catalog entry changes only by a successful resolution of that name
//! (`Feed::update` for that key alone) or by the name no longer being wanted (removed); a
//! failure leaves the entry as it was and is recorded with `Feed::failed`. The result of a
//! resolution that started before its name was dropped (or dropped and wanted again) is
//! ignored.

use super::records::{self, Target};
use super::resolve::{self, Resolved};
use super::DnsConfig;
use crate::feed::Feed;
use crate::node::{Node, ServiceRef};
use futures_util::stream::{FuturesUnordered, StreamExt};
use hickory_resolver::TokioResolver;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Names resolving at the same time, at most (each is up to a few queries).
pub const MAX_IN_FLIGHT: usize = 8;

/// One wanted name.
struct Entry {
    /// `None`: the name is invalid and never resolved.
    target: Option<Target>,
    /// When to resolve next; `None` while a resolution runs, or never (literals, invalid).
    due: Option<Instant>,
    /// Failed resolutions in a row.
    failures: u32,
    /// SRV names: the addresses of the targets of the last answer.
    targets: HashMap<String, Vec<IpAddr>>,
    /// Tells the results of this entry's resolutions from those of an earlier entry.
    generation: u64,
}

type Done = (String, u64, Resolved);
type Running = FuturesUnordered<Pin<Box<dyn Future<Output = Done> + Send>>>;

pub struct Scheduler {
    resolver: TokioResolver,
    config: DnsConfig,
    names: HashMap<String, Entry>,
    generation: u64,
    /// The wanted list last applied (compared by pointer: `Feed::want` stores a new one).
    applied: Option<Arc<Vec<ServiceRef>>>,
}

impl Scheduler {
    pub fn new(resolver: TokioResolver, config: DnsConfig) -> Scheduler {
        Scheduler {
            resolver,
            config,
            names: HashMap::new(),
            generation: 0,
            applied: None,
        }
    }

    /// Serve `feed` forever.
    pub async fn run(mut self, feed: &Feed) {
        let mut running: Running = FuturesUnordered::new();
        loop {
            self.apply_wanted(feed);
            self.start_due(&mut running);
            let next = if running.len() < MAX_IN_FLIGHT {
                self.next_due()
            } else {
                None
            };
            let wake = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(86400));
            tokio::select! {
                Some((key, generation, r)) = running.next(), if !running.is_empty() => {
                    self.finish(feed, key, generation, r);
                }
                () = feed.wanted_changed() => {}
                () = tokio::time::sleep_until(wake), if next.is_some() => {}
            }
        }
    }

    /// Track the wanted set: new names are due at once (literals published at once), names
    /// no longer wanted leave the catalog.
    fn apply_wanted(&mut self, feed: &Feed) {
        let wanted = feed.wanted();
        if self
            .applied
            .as_ref()
            .is_some_and(|a| Arc::ptr_eq(a, &wanted))
        {
            return;
        }
        let keep: HashSet<&str> = wanted.iter().map(|s| s.name.as_str()).collect();
        let gone: Vec<String> = self
            .names
            .keys()
            .filter(|k| !keep.contains(k.as_str()))
            .cloned()
            .collect();
        let catalog = feed.catalog();
        let mut changes: Vec<(String, Option<Vec<Node>>)> = Vec::new();
        for k in gone {
            self.names.remove(&k);
            if catalog.get(&k).is_some() {
                changes.push((k, None));
            }
        }
        for s in wanted.iter() {
            if self.names.contains_key(&s.name) {
                continue;
            }
            self.generation += 1;
            let mut e = Entry {
                target: None,
                due: None,
                failures: 0,
                targets: HashMap::new(),
                generation: self.generation,
            };
            match records::parse_target(&s.name) {
                Ok(Target::Literal(ip, port)) => {
                    let node = Node::new(ip.to_string(), port, self.config.default_weight, 0);
                    changes.push((s.name.clone(), Some(vec![node])));
                    e.target = Some(Target::Literal(ip, port));
                }
                Ok(t) => {
                    e.target = Some(t);
                    e.due = Some(Instant::now());
                }
                Err(err) => feed.failed(format!("{err}: never resolved")),
            }
            self.names.insert(s.name.clone(), e);
        }
        if !changes.is_empty() {
            feed.update(changes);
        }
        self.applied = Some(wanted);
    }

    /// Start the names that are due, the longest overdue first, up to [`MAX_IN_FLIGHT`]
    /// running.
    fn start_due(&mut self, running: &mut Running) {
        let now = Instant::now();
        let mut due: Vec<(Instant, String)> = self
            .names
            .iter()
            .filter_map(|(k, e)| e.due.filter(|d| *d <= now).map(|d| (d, k.clone())))
            .collect();
        due.sort_unstable();
        due.truncate(MAX_IN_FLIGHT.saturating_sub(running.len()));
        // A whole resolution (SRV, then its targets; each query tried twice) is bounded.
        let limit = self.config.timeout.saturating_mul(6) + Duration::from_secs(1);
        let weight = self.config.default_weight;
        for (_, key) in due {
            let Some(e) = self.names.get_mut(&key) else {
                continue;
            };
            let Some(target) = e.target.clone() else {
                continue;
            };
            e.due = None;
            let (r, known, key, generation) = (
                self.resolver.clone(),
                e.targets.clone(),
                key.clone(),
                e.generation,
            );
            running.push(Box::pin(async move {
                let res =
                    tokio::time::timeout(limit, resolve::resolve(&r, &target, weight, &known))
                        .await
                        .unwrap_or_else(|_| Resolved::failed("timed out"));
                (key, generation, res)
            }));
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.names.values().filter_map(|e| e.due).min()
    }

    /// Apply one resolution: success replaces the name's nodes and waits for its TTL;
    /// failure keeps them and retries later.
    fn finish(&mut self, feed: &Feed, key: String, generation: u64, r: Resolved) {
        let (min, max) = (self.config.min_ttl, self.config.max_ttl);
        let Some(e) = self
            .names
            .get_mut(&key)
            .filter(|e| e.generation == generation)
        else {
            return;
        };
        match r.result {
            Ok((nodes, ttl)) => {
                let refresh = records::refresh_after(ttl, min, max);
                e.targets = r.targets;
                let delay = if r.partial.is_empty() {
                    e.failures = 0;
                    refresh
                } else {
                    e.failures = e.failures.saturating_add(1);
                    records::retry_after(e.failures, min, max).min(refresh)
                };
                e.due = Some(Instant::now() + delay);
                let count = nodes.len();
                if feed.update([(key.clone(), Some(nodes))]) {
                    log::info!("discovery dns: {key}: {count} node(s)");
                }
                if !r.partial.is_empty() {
                    feed.failed(format!("{key}: {}", r.partial.join("; ")));
                }
            }
            Err(why) => {
                e.failures = e.failures.saturating_add(1);
                e.due = Some(Instant::now() + records::retry_after(e.failures, min, max));
                feed.failed(format!("{key}: {why}"));
            }
        }
    }
}
