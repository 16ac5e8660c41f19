//! A checker: the targets and settings of one upstream key, and the task that probes them on
//! their own schedules (docs/health-checks.md).

use crate::check::{CheckRegistry, BACKSTOP};
use crate::probe::{Outcome, ProbeSpec};
use crate::state::Report;
use crate::target::{Source, Target, TargetId, TargetSpec};
use arc_swap::ArcSwap;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The health of one upstream key's targets, and its probe settings.
pub struct Checker {
    key: Arc<str>,
    spec: ArcSwap<ProbeSpec>,
    /// Fingerprint of the settings `spec` was built from.
    version: AtomicU64,
    /// Bumped when the settings change: the probe schedule restarts.
    generation: AtomicU64,
    /// Targets in node order, one per identity.
    targets: ArcSwap<Vec<Arc<Target>>>,
    target_count: AtomicUsize,
    /// Targets currently down (kept in step by every state change).
    down: Arc<AtomicI64>,
    changed: Notify,
    /// The checks of the table, looked up by `spec.kind` at every probe.
    checks: Arc<CheckRegistry>,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker")
            .field("key", &self.key)
            .field("targets", &self.target_count)
            .field("down", &self.down)
            .finish_non_exhaustive()
    }
}

impl Checker {
    pub(crate) fn new(
        key: &str,
        version: u64,
        spec: ProbeSpec,
        checks: Arc<CheckRegistry>,
    ) -> Self {
        Checker {
            key: Arc::from(key),
            spec: ArcSwap::from_pointee(spec),
            version: AtomicU64::new(version),
            generation: AtomicU64::new(0),
            targets: ArcSwap::from_pointee(Vec::new()),
            target_count: AtomicUsize::new(0),
            down: Arc::new(AtomicI64::new(0)),
            changed: Notify::new(),
            checks,
        }
    }

    /// The upstream key (`upstreams/u1`, `routes/r1`, `services/s1`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// `checks.active.type`: the name of the check that probes.
    pub fn check_type(&self) -> Arc<str> {
        Arc::clone(&self.spec.load().kind)
    }

    /// The current targets, in node order.
    pub fn targets(&self) -> Arc<Vec<Arc<Target>>> {
        self.targets.load_full()
    }

    /// No target is down: selection need not consult health. One atomic load.
    #[inline]
    pub fn none_down(&self) -> bool {
        self.down.load(Ordering::Relaxed) <= 0
    }

    /// Every target is down: fail open, every node counts as up.
    #[inline]
    pub fn all_down(&self) -> bool {
        let n = self.target_count.load(Ordering::Relaxed) as i64;
        n > 0 && self.down.load(Ordering::Relaxed) >= n
    }

    /// Take the current settings. When their fingerprint (`checks.active`) changed, the
    /// schedule restarts; other changes (TLS material of the upstream) apply to the next
    /// probe. Targets keep their state either way.
    pub(crate) fn update_spec(&self, version: u64, spec: ProbeSpec) {
        self.spec.store(Arc::new(spec));
        if self.version.swap(version, Ordering::AcqRel) != version {
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Replace the target set: survivors keep their state, new targets start healthy, removed
    /// ones are no longer probed. Returns the target of each spec, in order.
    pub(crate) fn set_targets(&self, specs: &[TargetSpec]) -> Vec<Arc<Target>> {
        let old = self.targets.load_full();
        let mut by_id: HashMap<&TargetId, &Arc<Target>> = old.iter().map(|t| (&t.id, t)).collect();
        let mut list: Vec<Arc<Target>> = Vec::with_capacity(specs.len());
        let mut per_spec = Vec::with_capacity(specs.len());
        for s in specs {
            if let Some(t) = list.iter().find(|t| t.id == s.id) {
                // Same identity as an earlier node: one shared target.
                per_spec.push(Arc::clone(t));
                continue;
            }
            let t = match by_id.remove(&s.id) {
                Some(t) => Arc::clone(t),
                None => Arc::new(Target::new(
                    s.clone(),
                    Arc::clone(&self.key),
                    Arc::clone(&self.down),
                )),
            };
            list.push(Arc::clone(&t));
            per_spec.push(t);
        }
        self.target_count.store(list.len(), Ordering::Relaxed);
        self.targets.store(Arc::new(list));
        for gone in by_id.values() {
            gone.detach();
        }
        // Wake the task: new targets get their first due time, settings take effect.
        self.changed.notify_one();
        per_spec
    }

    /// The checker was removed: its targets no longer count anywhere.
    pub(crate) fn stop(&self) {
        for t in self.targets.load().iter() {
            t.detach();
        }
        self.target_count.store(0, Ordering::Relaxed);
    }

    /// Probe every target on its schedule, forever (the task is aborted when the checker is
    /// removed). The first probe of a target comes one interval after it was added; up targets
    /// are probed every `healthy.interval`, down ones every `unhealthy.interval`; at most
    /// `concurrency` probes are in flight. Each probe runs the check registered as
    /// `checks.active.type`, looked up when the probe starts.
    pub async fn run(self: Arc<Self>) {
        let mut due: HashMap<TargetId, Instant> = HashMap::new();
        let mut busy: HashSet<TargetId> = HashSet::new();
        let mut probes: JoinSet<(Arc<Target>, Outcome)> = JoinSet::new();
        // Which target each probe task is probing: a task that panicked frees its target too.
        let mut probing: HashMap<tokio::task::Id, TargetId> = HashMap::new();
        let mut generation = self.generation.load(Ordering::Acquire);
        // Name of the unregistered check last warned about, so the log says it once.
        let mut warned: Option<Arc<str>> = None;
        loop {
            let g = self.generation.load(Ordering::Acquire);
            if g != generation {
                generation = g;
                due.clear();
            }
            let spec = self.spec.load_full();
            let targets = self.targets.load_full();
            if due.len() > targets.len() {
                let live: HashSet<&TargetId> = targets.iter().map(|t| &t.id).collect();
                due.retain(|id, _| live.contains(id));
            }
            let now = Instant::now();
            let mut wake = now + std::time::Duration::from_secs(3600);
            for t in targets.iter() {
                if busy.contains(&t.id) {
                    continue;
                }
                let at = *due
                    .entry(t.id.clone())
                    .or_insert_with(|| now + interval(&spec, t));
                if at <= now && probes.len() < spec.concurrency.max(1) {
                    let Some(check) = self.checks.get(&spec.kind) else {
                        // Validation only lets registered names through; an embedder that
                        // validated against other names than it registered gets this.
                        if warned.as_deref() != Some(&*spec.kind) {
                            log::warn!(
                                "upstream {}: no health check {:?} is registered: not probing",
                                self.key,
                                spec.kind
                            );
                            warned = Some(Arc::clone(&spec.kind));
                        }
                        let next = now + interval(&spec, t);
                        due.insert(t.id.clone(), next);
                        wake = wake.min(next);
                        continue;
                    };
                    busy.insert(t.id.clone());
                    let (spec, t2) = (Arc::clone(&spec), Arc::clone(t));
                    let task = probes.spawn(async move {
                        let backstop = spec.timeout.saturating_mul(BACKSTOP);
                        let outcome = tokio::time::timeout(backstop, check.check(&t2, &spec))
                            .await
                            .unwrap_or(Some(Report::Timeout));
                        (t2, outcome)
                    });
                    probing.insert(task.id(), t.id.clone());
                } else if at > now {
                    wake = wake.min(at);
                }
            }
            tokio::select! {
                Some(done) = probes.join_next_with_id(), if !probes.is_empty() => {
                    let spec = self.spec.load();
                    match done {
                        Ok((task, (t, outcome))) => {
                            probing.remove(&task);
                            busy.remove(&t.id);
                            if let Some(report) = outcome {
                                t.report(report, &spec.thresholds, Source::Active);
                            }
                            due.insert(t.id.clone(), Instant::now() + interval(&spec, &t));
                        }
                        Err(e) => {
                            // A check that panicked: no report, probed again one interval on.
                            if let Some(id) = probing.remove(&e.id()) {
                                log::warn!(
                                    "upstream {}: health check {:?} of {id} failed: {e}",
                                    self.key,
                                    spec.kind
                                );
                                busy.remove(&id);
                                let period = targets
                                    .iter()
                                    .find(|t| t.id == id)
                                    .map_or(spec.healthy_interval, |t| interval(&spec, t));
                                due.insert(id, Instant::now() + period);
                            }
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
                _ = self.changed.notified() => {}
            }
        }
    }
}

fn interval(spec: &ProbeSpec, t: &Target) -> std::time::Duration {
    if t.is_up() {
        spec.healthy_interval
    } else {
        spec.unhealthy_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Report, Thresholds};
    use crate::status::StatusClasses;
    use std::time::Duration;

    fn spec() -> ProbeSpec {
        ProbeSpec {
            kind: Arc::from("tcp"),
            timeout: Duration::from_secs(1),
            concurrency: 1,
            method: http::Method::GET,
            path: "/".into(),
            body: bytes::Bytes::new(),
            headers: Vec::new(),
            verify_certificate: true,
            ca: None,
            client_cert_key: None,
            healthy_interval: Duration::from_secs(1),
            unhealthy_interval: Duration::from_secs(1),
            statuses: StatusClasses::default(),
            thresholds: TH,
        }
    }

    const TH: Thresholds = Thresholds {
        successes: 1,
        http_failures: 1,
        tcp_failures: 1,
        timeouts: 1,
    };

    fn ts(last: u8, port: u16) -> TargetSpec {
        let ip = std::net::IpAddr::from([10, 0, 0, last]);
        TargetSpec {
            id: TargetId {
                ip,
                port,
                hostname: ip.to_string(),
            },
            host: ip.to_string(),
        }
    }

    #[test]
    fn nodes_with_one_identity_share_a_target() {
        let c = Checker::new("upstreams/u", 1, spec(), Arc::default());
        let per = c.set_targets(&[ts(1, 80), ts(2, 80), ts(1, 80)]);
        assert_eq!(c.targets().len(), 2);
        assert!(Arc::ptr_eq(&per[0], &per[2]));
    }

    #[test]
    fn survivors_keep_state_and_removed_targets_leave_the_down_count() {
        let c = Checker::new("upstreams/u", 1, spec(), Arc::default());
        let per = c.set_targets(&[ts(1, 80), ts(2, 80), ts(3, 80)]);
        per[0].report(Report::TcpFailure, &TH, crate::Source::Passive);
        per[2].report(Report::TcpFailure, &TH, crate::Source::Passive);
        assert!(!c.none_down() && !c.all_down());
        let per2 = c.set_targets(&[ts(1, 80), ts(2, 80)]);
        assert!(Arc::ptr_eq(&per[0], &per2[0]));
        assert!(!per2[0].is_up());
        // One of two down: not all. Then the other goes down too: fail open.
        assert!(!c.all_down());
        per2[1].report(Report::Timeout, &TH, crate::Source::Passive);
        assert!(c.all_down());
        c.stop();
        assert!(c.none_down());
    }

    #[test]
    fn the_schedule_restarts_only_when_the_version_changes() {
        let c = Checker::new("upstreams/u", 1, spec(), Arc::default());
        c.update_spec(1, spec());
        assert_eq!(c.generation.load(Ordering::Relaxed), 0);
        c.update_spec(
            2,
            ProbeSpec {
                kind: Arc::from("http"),
                ..spec()
            },
        );
        assert_eq!(&*c.check_type(), "http");
        assert_eq!(c.generation.load(Ordering::Relaxed), 1);
    }
}
