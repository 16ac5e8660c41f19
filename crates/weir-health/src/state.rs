//! APISIX's four-state health machine (docs/health-checks.md), one per target, lock-free.
//!
//! The state and its four counters are packed into one `AtomicU64` and updated with a CAS
//! loop, so active probes and passive reports from every worker thread update a target without
//! a lock, and the data path reads "is it up?" with one atomic load.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// A target's health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthStatus {
    Healthy,
    MostlyHealthy,
    MostlyUnhealthy,
    Unhealthy,
}

impl HealthStatus {
    /// `healthy` and `mostly_healthy` targets are up: they get traffic.
    pub fn is_up(self) -> bool {
        matches!(self, HealthStatus::Healthy | HealthStatus::MostlyHealthy)
    }

    /// The name the control API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::MostlyHealthy => "mostly_healthy",
            HealthStatus::MostlyUnhealthy => "mostly_unhealthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }

    fn from_bits(b: u64) -> Self {
        match b & 3 {
            0 => HealthStatus::Healthy,
            1 => HealthStatus::MostlyHealthy,
            2 => HealthStatus::MostlyUnhealthy,
            _ => HealthStatus::Unhealthy,
        }
    }

    fn bits(self) -> u64 {
        match self {
            HealthStatus::Healthy => 0,
            HealthStatus::MostlyHealthy => 1,
            HealthStatus::MostlyUnhealthy => 2,
            HealthStatus::Unhealthy => 3,
        }
    }
}

/// What one probe or one request attempt says about a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    Success,
    HttpFailure,
    TcpFailure,
    Timeout,
}

impl Report {
    /// The counter's name, as the control API shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Report::Success => "success",
            Report::HttpFailure => "http_failure",
            Report::TcpFailure => "tcp_failure",
            Report::Timeout => "timeout_failure",
        }
    }
}

/// The counts that move a target between states. A threshold of 0 makes that kind of report a
/// no-op (passive checks only; active thresholds are 1..254).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub successes: u8,
    pub http_failures: u8,
    pub tcp_failures: u8,
    pub timeouts: u8,
}

/// A target's four counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub success: u8,
    pub http_failure: u8,
    pub tcp_failure: u8,
    pub timeout_failure: u8,
}

/// A state and its counters, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health {
    pub status: HealthStatus,
    pub counters: Counters,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            status: HealthStatus::Healthy,
            counters: Counters::default(),
        }
    }
}

const DETACHED: u64 = 1 << 34;

impl Health {
    fn pack(self) -> u64 {
        let c = self.counters;
        c.success as u64
            | (c.http_failure as u64) << 8
            | (c.tcp_failure as u64) << 16
            | (c.timeout_failure as u64) << 24
            | self.status.bits() << 32
    }

    fn unpack(w: u64) -> Self {
        Health {
            status: HealthStatus::from_bits(w >> 32),
            counters: Counters {
                success: w as u8,
                http_failure: (w >> 8) as u8,
                tcp_failure: (w >> 16) as u8,
                timeout_failure: (w >> 24) as u8,
            },
        }
    }

    /// The state after `report` under `th`, or `None` when the report changes nothing.
    pub fn apply(self, report: Report, th: &Thresholds) -> Option<Health> {
        let mut next = self;
        let c = &mut next.counters;
        match report {
            Report::Success => {
                if th.successes == 0 || self.status == HealthStatus::Healthy {
                    return None;
                }
                c.success = c.success.saturating_add(1).min(254);
                c.http_failure = 0;
                c.tcp_failure = 0;
                c.timeout_failure = 0;
                if c.success >= th.successes {
                    next.status = HealthStatus::Healthy;
                } else if self.status == HealthStatus::Unhealthy {
                    next.status = HealthStatus::MostlyUnhealthy;
                }
            }
            failure => {
                let (counter, limit) = match failure {
                    Report::HttpFailure => (&mut c.http_failure, th.http_failures),
                    Report::TcpFailure => (&mut c.tcp_failure, th.tcp_failures),
                    _ => (&mut c.timeout_failure, th.timeouts),
                };
                if limit == 0 || self.status == HealthStatus::Unhealthy {
                    return None;
                }
                *counter = counter.saturating_add(1).min(254);
                let reached = *counter >= limit;
                c.success = 0;
                if reached {
                    next.status = HealthStatus::Unhealthy;
                } else if self.status == HealthStatus::Healthy {
                    next.status = HealthStatus::MostlyHealthy;
                }
            }
        }
        Some(next)
    }
}

/// One target's health, shared by every thread, with the count of down targets of its checker
/// kept in step (for the O(1) "none down" / "all down" tests of the data path).
#[derive(Debug)]
pub struct TargetHealth {
    word: AtomicU64,
    down: Arc<AtomicI64>,
    /// How many times the target went from up to down (slow start ramps it when it is back).
    downs: AtomicU64,
}

impl TargetHealth {
    pub fn new(down: Arc<AtomicI64>) -> Self {
        TargetHealth {
            word: AtomicU64::new(Health::default().pack()),
            down,
            downs: AtomicU64::new(0),
        }
    }

    /// The current state and counters.
    pub fn get(&self) -> Health {
        Health::unpack(self.word.load(Ordering::Acquire))
    }

    /// Whether the target gets traffic. One atomic load.
    #[inline]
    pub fn is_up(&self) -> bool {
        HealthStatus::from_bits(self.word.load(Ordering::Relaxed) >> 32).is_up()
    }

    /// Apply a report; returns `(before, after)` when it changed anything.
    pub fn report(&self, report: Report, th: &Thresholds) -> Option<(Health, Health)> {
        let mut cur = self.word.load(Ordering::Acquire);
        loop {
            let before = Health::unpack(cur);
            let after = before.apply(report, th)?;
            let new = after.pack() | (cur & DETACHED);
            match self
                .word
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if cur & DETACHED == 0 {
                        match (before.status.is_up(), after.status.is_up()) {
                            (true, false) => {
                                self.down.fetch_add(1, Ordering::AcqRel);
                                self.downs.fetch_add(1, Ordering::Relaxed);
                            }
                            (false, true) => {
                                self.down.fetch_sub(1, Ordering::AcqRel);
                            }
                            _ => {}
                        }
                    }
                    return Some((before, after));
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// How many times the target went from up to down.
    pub fn downs(&self) -> u64 {
        self.downs.load(Ordering::Relaxed)
    }

    /// The target left its checker: it no longer counts in the checker's down count.
    pub fn detach(&self) {
        let prev = self.word.fetch_or(DETACHED, Ordering::AcqRel);
        if prev & DETACHED == 0 && !Health::unpack(prev).status.is_up() {
            self.down.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HealthStatus::*;

    const ACTIVE: Thresholds = Thresholds {
        successes: 2,
        http_failures: 5,
        tcp_failures: 2,
        timeouts: 3,
    };

    fn run(reports: &[Report], th: &Thresholds) -> (Health, Vec<HealthStatus>) {
        let down = Arc::new(AtomicI64::new(0));
        let t = TargetHealth::new(Arc::clone(&down));
        let mut seen = Vec::new();
        for r in reports {
            t.report(*r, th);
            seen.push(t.get().status);
        }
        let h = t.get();
        assert_eq!(down.load(Ordering::Relaxed), i64::from(!h.status.is_up()));
        (h, seen)
    }

    #[test]
    fn two_tcp_failures_make_a_target_unhealthy() {
        let (h, seen) = run(&[Report::TcpFailure, Report::TcpFailure], &ACTIVE);
        assert_eq!(seen, [MostlyHealthy, Unhealthy]);
        assert_eq!(h.counters.tcp_failure, 2);
    }

    #[test]
    fn failures_of_other_kinds_keep_their_counts_and_success_resets_all() {
        let (h, _) = run(
            &[Report::HttpFailure, Report::Timeout, Report::HttpFailure],
            &ACTIVE,
        );
        assert_eq!(h.status, MostlyHealthy);
        assert_eq!(
            h.counters,
            Counters {
                success: 0,
                http_failure: 2,
                tcp_failure: 0,
                timeout_failure: 1
            }
        );
        let (h, seen) = run(
            &[Report::HttpFailure, Report::Timeout, Report::Success],
            &ACTIVE,
        );
        // One success of two: still mostly healthy, failure counters cleared.
        assert_eq!(seen.last(), Some(&MostlyHealthy));
        assert_eq!(
            h.counters,
            Counters {
                success: 1,
                ..Counters::default()
            }
        );
    }

    #[test]
    fn recovery_passes_through_mostly_unhealthy() {
        let (h, seen) = run(
            &[
                Report::TcpFailure,
                Report::TcpFailure,
                Report::TcpFailure, // ignored: already unhealthy
                Report::Success,
                Report::Success,
            ],
            &ACTIVE,
        );
        assert_eq!(
            seen,
            [
                MostlyHealthy,
                Unhealthy,
                Unhealthy,
                MostlyUnhealthy,
                Healthy
            ]
        );
        // The state change does not reset counters: success stays at 2.
        assert_eq!(h.counters.success, 2);
        assert_eq!(h.counters.tcp_failure, 0);
    }

    #[test]
    fn a_failure_while_mostly_unhealthy_resets_success() {
        let (h, seen) = run(
            &[
                Report::TcpFailure,
                Report::TcpFailure,
                Report::Success,
                Report::HttpFailure,
            ],
            &ACTIVE,
        );
        assert_eq!(seen[2..], [MostlyUnhealthy, MostlyUnhealthy]);
        assert_eq!(h.counters.success, 0);
        assert_eq!(h.counters.http_failure, 1);
    }

    #[test]
    fn success_on_a_healthy_target_is_ignored() {
        let t = TargetHealth::new(Arc::default());
        assert!(t.report(Report::Success, &ACTIVE).is_none());
        assert_eq!(t.get(), Health::default());
    }

    #[test]
    fn a_zero_threshold_disables_that_kind() {
        let th = Thresholds {
            successes: 0,
            http_failures: 0,
            tcp_failures: 2,
            timeouts: 7,
        };
        let (h, _) = run(&[Report::HttpFailure; 10], &th);
        assert_eq!(h, Health::default());
    }

    #[test]
    fn a_detached_target_no_longer_counts_as_down() {
        let down = Arc::new(AtomicI64::new(0));
        let t = TargetHealth::new(Arc::clone(&down));
        t.report(Report::TcpFailure, &ACTIVE);
        t.report(Report::TcpFailure, &ACTIVE);
        assert_eq!(down.load(Ordering::Relaxed), 1);
        t.detach();
        assert_eq!(down.load(Ordering::Relaxed), 0);
        t.report(Report::Success, &ACTIVE);
        t.report(Report::Success, &ACTIVE);
        t.detach();
        assert_eq!(down.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn counters_never_exceed_254() {
        let th = Thresholds {
            successes: 254,
            http_failures: 254,
            tcp_failures: 254,
            timeouts: 254,
        };
        let (h, _) = run(&[Report::HttpFailure; 300], &th);
        assert_eq!(h.counters.http_failure, 254);
        assert_eq!(h.status, Unhealthy);
    }
}
