//! Outlier detection: a node that keeps failing is ejected (not picked) for a while.
//!
//! # Outcomes and consecutive counters
//!
//! Every attempt on a node reports one [`Outcome`]: `Status(code)` when a response arrived,
//! `LocalFailure` when none did (connect or TLS failure, reset or timeout before a response).
//! Each node keeps three consecutive counters ([`Counters`]), moved by [`next_counters`]:
//!
//! | outcome | consecutive 5xx | consecutive gateway failure | consecutive local-origin failure |
//! |---|---|---|---|
//! | status 500..=599 other than 502, 503, 504 | +1 | reset | reset |
//! | status 502, 503, 504 | +1 | +1 | reset |
//! | `LocalFailure` | unchanged | +1 | +1 |
//! | any other status (< 500, or > 599) | reset | reset | reset |
//!
//! A gateway failure means "no usable response": a 502/503/504 or no response at all. A local
//! failure is not a response, so it neither counts toward nor resets the 5xx counter. A
//! threshold of 0 disables its kind (its counter stays 0). Reaching a threshold ejects the
//! node at once and resets all three counters (also when the ejection is refused by
//! `max_ejection_percent`: another full run of failures is needed to try again). When one
//! outcome reaches several thresholds, the most specific kind is the reason: local-origin,
//! then gateway, then 5xx. Counters saturate at [`COUNTER_MAX`]; a larger threshold acts as
//! [`COUNTER_MAX`].
//!
//! # Failure percentage
//!
//! With `failure_threshold > 0` each node also counts attempts and failures (a 5xx or a local
//! failure) in the current interval. [`sweep`], called by the proxy every `interval_ms`,
//! judges the upstream only when at least `minimum_hosts` nodes had at least
//! `request_volume` attempts (and at least one) in the interval, ejects each such node whose
//! failures are at least `failure_threshold` percent of its attempts, and resets every node's
//! interval counters whether or not it judged.
//!
//! # Ejection time and its decay
//!
//! The `n`-th ejection of a node lasts [`ejection_ms`]`(n) = min(base × n, max(max, base))`:
//! never shorter than `base`, never longer than `max` (or `base` when `max < base`); a `base`
//! of 0 acts as 1 ms. `n` (the node's *ejection level*) decays: it falls by one for every
//! `base` the node spends un-ejected, computed lazily at its next ejection from the time its
//! previous ejection ended ([`decayed`]). `n` stops growing at [`level_cap`], the first level
//! whose ejection time is the maximum (as Envoy does), so a node that flapped for hours needs
//! only `cap × base` of good behaviour to be back at level 0. The node is eligible again the
//! moment its ejection ends: [`NodeOutlier::is_ejected`] is one atomic load and a compare, no
//! sweep un-ejects. Reports on an ejected node (stragglers sent before the ejection) are
//! ignored, so a node comes back with clean counters.
//!
//! # `max_ejection_percent`
//!
//! An ejection that would make the ejected share of the upstream's nodes exceed
//! `max_ejection_percent` is not made: it yields [`Verdict::Overflow`] (for the overflow
//! metric). One node may always be ejected from an upstream of two or more nodes (even at 0
//! percent); the only node of a one-node upstream is ejected only at 100 percent
//! ([`ejection_allowed`]). The ejected count is computed at ejection time from the upstream's
//! nodes, which the caller passes: a node counts while `now < ejected_until`, so ejections
//! that have expired never count, and a node set changed by a reload is always current.
//! Concurrent ejections in one upstream are made exact by [`UpstreamOutlier`]: an ejector
//! reserves its ejection in the upstream's word (a version and a count of pending ejections)
//! by compare-and-swap before marking its node, and counts the pending ones as ejected, so
//! two nodes ejected at once by two threads never exceed the share together.
//!
//! # State
//!
//! A [`NodeOutlier`] is three `AtomicU64` words and a counter: the ejection (end time in the
//! low 44 bits, level in the next 19, and an "ejection in progress" bit), the three
//! consecutive counters (21 bits each), the interval counters (attempts low, failures high),
//! and the total ejection count. Reports update them with compare-and-swap loops (no lock, no
//! allocation). An ejection first claims its node with one compare-and-swap on the ejection
//! word (from "not ejected, not claimed" to "claimed"), so when two threads cross a threshold
//! at once, or a sweep and a reporter race, exactly one ejects the node and the other gets
//! `None`, never waiting. Each upstream has one [`UpstreamOutlier`], shared by its nodes'
//! ejections and its sweeps.

use std::sync::atomic::{AtomicU64, Ordering};

/// The outlier-detection settings of one upstream, as plain data (the proxy maps its
/// configuration into it). Thresholds of 0 disable their rule. [`Default`] is all zeros:
/// nothing is ever ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutlierParams {
    /// Consecutive responses 500..=599 that eject the node; 0 = off.
    pub consecutive_5xx: u32,
    /// Consecutive 502, 503, 504 or local failures that eject the node; 0 = off.
    pub consecutive_gateway_failure: u32,
    /// Consecutive local failures (no response) that eject the node; 0 = off.
    pub consecutive_local_origin_failure: u32,
    /// Failure share (percent) at or above which a sweep ejects a node; 0 = off.
    pub failure_threshold: u32,
    /// Nodes that must each reach `request_volume` in an interval for a sweep to judge.
    pub minimum_hosts: u32,
    /// Attempts a node needs in the interval to be judged by a sweep (at least 1 is needed).
    pub request_volume: u32,
    /// The sweep period; the proxy's scheduling uses it, no function here does.
    pub interval_ms: u64,
    /// Length of a first ejection (0 acts as 1 ms).
    pub base_ejection_ms: u64,
    /// Longest ejection (acts as `base_ejection_ms` when smaller).
    pub max_ejection_ms: u64,
    /// Largest share (percent) of the upstream's nodes ejected at once.
    pub max_ejection_percent: u32,
}

/// What one attempt on a node says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status arrived.
    Status(u16),
    /// No response: connect failure, TLS failure, reset or timeout before a response.
    LocalFailure,
}

impl Outcome {
    /// A failure for the failure percentage: a status 500..=599 or a local failure.
    pub fn is_failure(self) -> bool {
        match self {
            Outcome::Status(s) => is_5xx(s),
            Outcome::LocalFailure => true,
        }
    }
}

fn is_5xx(s: u16) -> bool {
    (500..=599).contains(&s)
}

/// Why a node was ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EjectReason {
    Consecutive5xx,
    ConsecutiveGatewayFailure,
    ConsecutiveLocalOriginFailure,
    FailurePercentage,
}

impl EjectReason {
    /// The metric label: `consecutive_5xx`, `consecutive_gateway_failure`,
    /// `consecutive_local_origin_failure`, `failure_percentage`.
    pub fn as_str(self) -> &'static str {
        match self {
            EjectReason::Consecutive5xx => "consecutive_5xx",
            EjectReason::ConsecutiveGatewayFailure => "consecutive_gateway_failure",
            EjectReason::ConsecutiveLocalOriginFailure => "consecutive_local_origin_failure",
            EjectReason::FailurePercentage => "failure_percentage",
        }
    }
}

/// An ejection that was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    pub reason: EjectReason,
    /// The node is eligible again from this time on (ms of the process clock).
    pub until_ms: u64,
}

/// What an ejection attempt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The node is ejected.
    Ejected(Ejection),
    /// The node deserved ejection for this reason, but `max_ejection_percent` forbade it.
    Overflow(EjectReason),
}

/// Largest value of a consecutive counter (21 bits).
pub const COUNTER_MAX: u32 = (1 << 21) - 1;

/// A node's consecutive counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub consecutive_5xx: u32,
    pub consecutive_gateway_failure: u32,
    pub consecutive_local_origin_failure: u32,
}

impl Counters {
    fn pack(self) -> u64 {
        let m = u64::from(COUNTER_MAX);
        (u64::from(self.consecutive_5xx) & m)
            | (u64::from(self.consecutive_gateway_failure) & m) << 21
            | (u64::from(self.consecutive_local_origin_failure) & m) << 42
    }

    fn unpack(w: u64) -> Self {
        let m = u64::from(COUNTER_MAX);
        Counters {
            consecutive_5xx: (w & m) as u32,
            consecutive_gateway_failure: (w >> 21 & m) as u32,
            consecutive_local_origin_failure: (w >> 42 & m) as u32,
        }
    }
}

/// The counters after outcome `o` under `p`, and the reason to eject when a threshold is
/// reached (then the counters returned are all 0). See the module doc for the table.
pub fn next_counters(
    c: Counters,
    o: Outcome,
    p: &OutlierParams,
) -> (Counters, Option<EjectReason>) {
    let bump = |v: u32, threshold: u32| {
        if threshold == 0 {
            0
        } else {
            v.saturating_add(1).min(COUNTER_MAX)
        }
    };
    let n = match o {
        Outcome::Status(s) if is_5xx(s) => Counters {
            consecutive_5xx: bump(c.consecutive_5xx, p.consecutive_5xx),
            consecutive_gateway_failure: if matches!(s, 502..=504) {
                bump(c.consecutive_gateway_failure, p.consecutive_gateway_failure)
            } else {
                0
            },
            consecutive_local_origin_failure: 0,
        },
        Outcome::Status(_) => Counters::default(),
        Outcome::LocalFailure => Counters {
            consecutive_5xx: c.consecutive_5xx,
            consecutive_gateway_failure: bump(
                c.consecutive_gateway_failure,
                p.consecutive_gateway_failure,
            ),
            consecutive_local_origin_failure: bump(
                c.consecutive_local_origin_failure,
                p.consecutive_local_origin_failure,
            ),
        },
    };
    let reached = |v: u32, threshold: u32| threshold > 0 && v >= threshold.min(COUNTER_MAX);
    let reason = if reached(
        n.consecutive_local_origin_failure,
        p.consecutive_local_origin_failure,
    ) {
        Some(EjectReason::ConsecutiveLocalOriginFailure)
    } else if reached(n.consecutive_gateway_failure, p.consecutive_gateway_failure) {
        Some(EjectReason::ConsecutiveGatewayFailure)
    } else if reached(n.consecutive_5xx, p.consecutive_5xx) {
        Some(EjectReason::Consecutive5xx)
    } else {
        None
    };
    match reason {
        Some(r) => (Counters::default(), Some(r)),
        None => (n, None),
    }
}

/// Largest ejection level (19 bits).
pub const LEVEL_MAX: u32 = (1 << 19) - 1;

/// Largest time the ejection word holds (44 bits of ms, about 557 years); later ends are
/// clamped to it.
pub const UNTIL_MAX: u64 = (1 << 44) - 1;

/// The length of the `n`-th ejection (`n >= 1`): `min(base × n, max(max, base))`, with a
/// `base` of 0 taken as 1 ms. Always within `[base, max(max, base)]` for `n >= 1`.
pub fn ejection_ms(n: u32, base_ms: u64, max_ms: u64) -> u64 {
    let base = base_ms.max(1);
    base.saturating_mul(u64::from(n)).min(max_ms.max(base))
}

/// Level `n` after `unejected_ms` without an ejection: one less per whole `base_ms` (0 acts as
/// 1 ms), never below 0.
pub fn decayed(n: u32, unejected_ms: u64, base_ms: u64) -> u32 {
    let steps = unejected_ms / base_ms.max(1);
    n.saturating_sub(u32::try_from(steps).unwrap_or(u32::MAX))
}

/// The level at which ejections reach their maximum length: `ceil(max(max, base) / base)`,
/// at most [`LEVEL_MAX`]. Levels stop growing there.
pub fn level_cap(base_ms: u64, max_ms: u64) -> u32 {
    let base = base_ms.max(1);
    let top = max_ms.max(base);
    u32::try_from(top.div_ceil(base))
        .unwrap_or(LEVEL_MAX)
        .min(LEVEL_MAX)
}

/// The level of a new ejection, `unejected_ms` after the previous one (level `prev`) ended:
/// `min(decayed(prev) + 1, level_cap)`. At least 1.
pub fn next_level(prev: u32, unejected_ms: u64, base_ms: u64, max_ms: u64) -> u32 {
    decayed(prev, unejected_ms, base_ms)
        .saturating_add(1)
        .min(level_cap(base_ms, max_ms))
        .max(1)
}

/// Whether one more node may be ejected from an upstream of `total` nodes of which
/// `ejected` already are: the share after it stays within `max_percent`, or it is the first
/// ejection in an upstream of two or more nodes. `total` counts the node to eject (a smaller
/// `total` is taken as `ejected + 1`).
pub fn ejection_allowed(ejected: usize, total: usize, max_percent: u32) -> bool {
    // The total holds the node to eject and the ejected ones, whatever the caller says.
    let total = total.max(ejected.saturating_add(1));
    if total >= 2 && ejected == 0 {
        return true;
    }
    (ejected as u128 + 1) * 100 <= u128::from(max_percent) * total as u128
}

const LEVEL_SHIFT: u32 = 44;
/// Bit 63 of the ejection word: an ejection of the node is in progress.
const CLAIMED: u64 = 1 << 63;

fn pack_ejection(until: u64, level: u32) -> u64 {
    until.min(UNTIL_MAX) | u64::from(level.min(LEVEL_MAX)) << LEVEL_SHIFT
}

fn until_of(w: u64) -> u64 {
    w & UNTIL_MAX
}

fn level_of(w: u64) -> u32 {
    (w >> LEVEL_SHIFT) as u32 & LEVEL_MAX
}

/// A node's attempts and failures in the current interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntervalCounts {
    pub attempts: u32,
    pub failures: u32,
}

impl IntervalCounts {
    fn unpack(w: u64) -> Self {
        IntervalCounts {
            attempts: w as u32,
            failures: (w >> 32) as u32,
        }
    }
}

/// One node's outlier state, shared by every thread (module doc).
#[derive(Debug, Default)]
pub struct NodeOutlier {
    /// Ejection end (ms) in the low 44 bits, level in the next 19, and bit 63 set while an
    /// ejection is in progress. The end stays after it passes: it is when the last ejection
    /// ended, for the decay.
    ejection: AtomicU64,
    /// [`Counters`], packed.
    consecutive: AtomicU64,
    /// Attempts (low 32 bits) and failures (high 32) in the interval.
    interval: AtomicU64,
    /// Ejections ever made.
    total: AtomicU64,
}

impl NodeOutlier {
    /// A node never ejected, with zero counters.
    pub fn new() -> Self {
        NodeOutlier::default()
    }

    /// Whether the node is ejected at `now`. One atomic load.
    #[inline]
    pub fn is_ejected(&self, now: u64) -> bool {
        now < until_of(self.ejection.load(Ordering::Acquire))
    }

    /// The end of the current ejection, or `None` when the node is not ejected at `now`.
    pub fn ejected_until_ms(&self, now: u64) -> Option<u64> {
        let until = until_of(self.ejection.load(Ordering::Acquire));
        (now < until).then_some(until)
    }

    /// The ejection level `n` at `now`: the current ejection's while ejected, else the last
    /// one's decayed by the time since it ended (0 for a node never ejected).
    pub fn ejection_level(&self, now: u64, params: &OutlierParams) -> u32 {
        let w = self.ejection.load(Ordering::Acquire);
        let until = until_of(w);
        if now < until {
            level_of(w)
        } else {
            decayed(level_of(w), now - until, params.base_ejection_ms)
        }
    }

    /// How many times the node has ever been ejected.
    pub fn ejection_count_total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The consecutive counters.
    pub fn counters(&self) -> Counters {
        Counters::unpack(self.consecutive.load(Ordering::Acquire))
    }

    /// The interval counters (counted only while `failure_threshold > 0`).
    pub fn interval_counts(&self) -> IntervalCounts {
        IntervalCounts::unpack(self.interval.load(Ordering::Acquire))
    }

    /// Read and reset the interval counters.
    fn take_interval(&self) -> IntervalCounts {
        IntervalCounts::unpack(self.interval.swap(0, Ordering::AcqRel))
    }

    /// Count an attempt's outcome, without ejecting: the reason to eject when it reaches a
    /// consecutive threshold (then call [`NodeOutlier::eject`]). Ignored (`None`) while the
    /// node is ejected. Lock-free; no allocation.
    pub fn record(
        &self,
        outcome: Outcome,
        now: u64,
        params: &OutlierParams,
    ) -> Option<EjectReason> {
        if self.is_ejected(now) {
            return None;
        }
        if params.failure_threshold > 0 {
            // Wait-free; attempts would need 2^32 in one interval to carry into failures.
            let add = 1 | u64::from(outcome.is_failure()) << 32;
            self.interval.fetch_add(add, Ordering::AcqRel);
        }
        let mut cur = self.consecutive.load(Ordering::Acquire);
        loop {
            let (next, reason) = next_counters(Counters::unpack(cur), outcome, params);
            let new = next.pack();
            if new == cur {
                return reason;
            }
            match self.consecutive.compare_exchange_weak(
                cur,
                new,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return reason,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Count an attempt's outcome and eject the node when it reaches a consecutive threshold:
    /// [`NodeOutlier::record`] then [`NodeOutlier::eject`]. `nodes` are the upstream's nodes
    /// (this one included), read only when an ejection is due. `None` when nothing was
    /// ejected or refused. Lock-free; no allocation.
    pub fn report<'a, I>(
        &self,
        outcome: Outcome,
        now: u64,
        params: &OutlierParams,
        upstream: &UpstreamOutlier,
        nodes: I,
    ) -> Option<Verdict>
    where
        I: IntoIterator<Item = &'a NodeOutlier>,
        I::IntoIter: Clone,
    {
        let reason = self.record(outcome, now, params)?;
        self.eject(reason, now, params, upstream, nodes)
    }

    /// Eject the node for `reason` at `now`, unless it is already ejected (`None`) or
    /// `max_ejection_percent` forbids it ([`Verdict::Overflow`]). `nodes` are the upstream's
    /// nodes: this node is counted in the total even when missing from them. Clears the
    /// consecutive counters. Lock-free (a retry means another ejection in the upstream made
    /// progress); no allocation.
    pub fn eject<'a, I>(
        &self,
        reason: EjectReason,
        now: u64,
        params: &OutlierParams,
        upstream: &UpstreamOutlier,
        nodes: I,
    ) -> Option<Verdict>
    where
        I: IntoIterator<Item = &'a NodeOutlier>,
        I::IntoIter: Clone,
    {
        let nodes = nodes.into_iter();
        // Claim the node: from here on only this thread writes its ejection word, so a
        // concurrent ejection of the same node (another reporter, a sweep) gives up at once.
        let cur = self.ejection.load(Ordering::Acquire);
        if now < until_of(cur) || cur & CLAIMED != 0 {
            return None;
        }
        if self
            .ejection
            .compare_exchange(cur, cur | CLAIMED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None;
        }
        // Reserve the ejection in the upstream, counting the others in progress as ejected.
        let mut up = upstream.word.load(Ordering::Acquire);
        loop {
            let (total, ejected) = self.count(nodes.clone(), now);
            let pending = (up & PENDING_MASK) as usize;
            if !ejection_allowed(
                ejected.saturating_add(pending),
                total,
                params.max_ejection_percent,
            ) {
                self.ejection.store(cur, Ordering::Release);
                return Some(Verdict::Overflow(reason));
            }
            let reserved = ((up >> PENDING_BITS).wrapping_add(1) << PENDING_BITS)
                | ((up & PENDING_MASK) + 1).min(PENDING_MASK);
            match upstream.word.compare_exchange_weak(
                up,
                reserved,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(actual) => up = actual,
            }
        }
        let (base, max) = (params.base_ejection_ms, params.max_ejection_ms);
        let level = next_level(level_of(cur), now.saturating_sub(until_of(cur)), base, max);
        let until = now
            .saturating_add(ejection_ms(level, base, max))
            .min(UNTIL_MAX);
        self.ejection
            .store(pack_ejection(until, level), Ordering::Release);
        // The node is marked: release the reservation.
        upstream.word.fetch_sub(1, Ordering::AcqRel);
        self.consecutive.store(0, Ordering::Release);
        self.total.fetch_add(1, Ordering::Relaxed);
        Some(Verdict::Ejected(Ejection {
            reason,
            until_ms: until,
        }))
    }

    /// The upstream's node count (this node included) and how many others are ejected.
    fn count<'a>(&self, nodes: impl Iterator<Item = &'a NodeOutlier>, now: u64) -> (usize, usize) {
        let (mut total, mut ejected, mut found) = (0usize, 0usize, false);
        for n in nodes {
            total += 1;
            if std::ptr::eq(n, self) {
                found = true;
            } else if n.is_ejected(now) {
                ejected += 1;
            }
        }
        (total + usize::from(!found), ejected)
    }
}

const PENDING_BITS: u32 = 24;
const PENDING_MASK: u64 = (1 << PENDING_BITS) - 1;

/// One upstream's outlier state: the version and pending-ejection count that make concurrent
/// ejections respect `max_ejection_percent` exactly (module doc). One per upstream, shared
/// by its nodes' ejections and its sweeps.
#[derive(Debug, Default)]
pub struct UpstreamOutlier {
    /// Version (high 40 bits, +1 per reservation) and ejections in progress (low 24).
    word: AtomicU64,
}

impl UpstreamOutlier {
    pub fn new() -> Self {
        UpstreamOutlier::default()
    }
}

/// The failure-percentage sweep of one upstream at `now` (module doc): reads and resets every
/// node's interval counters, and when at least `minimum_hosts` nodes had `request_volume`
/// attempts, ejects those whose failure share is at least `failure_threshold` percent, in
/// node order. Returns each node it ejected or was refused for, by index in `nodes`.
/// Allocates (it runs every interval, off the request path).
pub fn sweep<'a, I>(
    upstream: &UpstreamOutlier,
    nodes: I,
    now: u64,
    params: &OutlierParams,
) -> Vec<(usize, Verdict)>
where
    I: IntoIterator<Item = &'a NodeOutlier>,
    I::IntoIter: Clone,
{
    let nodes = nodes.into_iter();
    let counts: Vec<IntervalCounts> = nodes.clone().map(NodeOutlier::take_interval).collect();
    let mut out = Vec::new();
    let threshold = u64::from(params.failure_threshold);
    if threshold == 0 {
        return out;
    }
    let volume = params.request_volume.max(1);
    let judged = counts.iter().filter(|c| c.attempts >= volume).count();
    if judged < params.minimum_hosts as usize {
        return out;
    }
    for (i, (node, c)) in nodes.clone().zip(&counts).enumerate() {
        if c.attempts >= volume && u64::from(c.failures) * 100 >= threshold * u64::from(c.attempts)
        {
            if let Some(v) = node.eject(
                EjectReason::FailurePercentage,
                now,
                params,
                upstream,
                nodes.clone(),
            ) {
                out.push((i, v));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::{Arc, Barrier};

    const S: u64 = 1000;

    fn params() -> OutlierParams {
        OutlierParams {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 3,
            consecutive_local_origin_failure: 2,
            failure_threshold: 0,
            minimum_hosts: 1,
            request_volume: 10,
            interval_ms: 10 * S,
            base_ejection_ms: 30 * S,
            max_ejection_ms: 300 * S,
            max_ejection_percent: 100,
        }
    }

    fn only(p: OutlierParams) -> OutlierParams {
        OutlierParams {
            consecutive_5xx: 0,
            consecutive_gateway_failure: 0,
            consecutive_local_origin_failure: 0,
            ..p
        }
    }

    /// Report on a node alone in its upstream.
    fn report1(
        n: &NodeOutlier,
        u: &UpstreamOutlier,
        o: Outcome,
        now: u64,
        p: &OutlierParams,
    ) -> Option<Verdict> {
        n.report(o, now, p, u, [n])
    }

    fn ejected(v: Option<Verdict>) -> Option<Ejection> {
        match v {
            Some(Verdict::Ejected(e)) => Some(e),
            _ => None,
        }
    }

    #[test]
    fn reasons_have_metric_names() {
        assert_eq!(EjectReason::Consecutive5xx.as_str(), "consecutive_5xx");
        assert_eq!(
            EjectReason::ConsecutiveGatewayFailure.as_str(),
            "consecutive_gateway_failure"
        );
        assert_eq!(
            EjectReason::ConsecutiveLocalOriginFailure.as_str(),
            "consecutive_local_origin_failure"
        );
        assert_eq!(
            EjectReason::FailurePercentage.as_str(),
            "failure_percentage"
        );
    }

    #[test]
    fn the_counter_table() {
        let p = OutlierParams {
            consecutive_5xx: 100,
            consecutive_gateway_failure: 100,
            consecutive_local_origin_failure: 100,
            ..params()
        };
        let c = Counters {
            consecutive_5xx: 4,
            consecutive_gateway_failure: 3,
            consecutive_local_origin_failure: 2,
        };
        let n = |o| next_counters(c, o, &p).0;
        let k = |a, b, l| Counters {
            consecutive_5xx: a,
            consecutive_gateway_failure: b,
            consecutive_local_origin_failure: l,
        };
        assert_eq!(n(Outcome::Status(500)), k(5, 0, 0));
        assert_eq!(n(Outcome::Status(599)), k(5, 0, 0));
        for s in [502, 503, 504] {
            assert_eq!(n(Outcome::Status(s)), k(5, 4, 0));
        }
        assert_eq!(n(Outcome::LocalFailure), k(4, 4, 3));
        for s in [0, 200, 404, 499, 600, 999] {
            assert_eq!(n(Outcome::Status(s)), Counters::default(), "{s}");
        }
        assert!(Outcome::Status(500).is_failure());
        assert!(Outcome::LocalFailure.is_failure());
        assert!(!Outcome::Status(499).is_failure());
        assert!(!Outcome::Status(600).is_failure());
    }

    #[test]
    fn reaching_a_threshold_gives_the_reason_and_resets() {
        let p = params();
        let mut c = Counters::default();
        let mut reasons = Vec::new();
        for _ in 0..5 {
            let (n, r) = next_counters(c, Outcome::Status(500), &p);
            c = n;
            reasons.push(r);
        }
        assert_eq!(reasons[..4], [None; 4]);
        assert_eq!(reasons[4], Some(EjectReason::Consecutive5xx));
        assert_eq!(c, Counters::default());

        let (c, r) = next_counters(Counters::default(), Outcome::Status(503), &p);
        assert_eq!(r, None);
        let (c, _) = next_counters(c, Outcome::Status(503), &p);
        let (c, r) = next_counters(c, Outcome::Status(503), &p);
        assert_eq!(r, Some(EjectReason::ConsecutiveGatewayFailure));
        assert_eq!(c, Counters::default());

        let (c, _) = next_counters(Counters::default(), Outcome::LocalFailure, &p);
        let (_, r) = next_counters(c, Outcome::LocalFailure, &p);
        assert_eq!(r, Some(EjectReason::ConsecutiveLocalOriginFailure));
    }

    #[test]
    fn the_most_specific_reason_wins() {
        let p = OutlierParams {
            consecutive_5xx: 2,
            consecutive_gateway_failure: 2,
            consecutive_local_origin_failure: 2,
            ..params()
        };
        let (c, _) = next_counters(Counters::default(), Outcome::Status(502), &p);
        assert_eq!(
            next_counters(c, Outcome::Status(502), &p).1,
            Some(EjectReason::ConsecutiveGatewayFailure)
        );
        let (c, _) = next_counters(Counters::default(), Outcome::LocalFailure, &p);
        assert_eq!(
            next_counters(c, Outcome::LocalFailure, &p).1,
            Some(EjectReason::ConsecutiveLocalOriginFailure)
        );
    }

    #[test]
    fn local_failures_do_not_touch_the_5xx_counter() {
        let p = params();
        let mut c = Counters::default();
        for o in [
            Outcome::Status(500),
            Outcome::Status(500),
            Outcome::LocalFailure,
            Outcome::Status(500),
        ] {
            c = next_counters(c, o, &p).0;
        }
        assert_eq!(c.consecutive_5xx, 3);
        assert_eq!(c.consecutive_local_origin_failure, 0, "reset by the 500");
    }

    #[test]
    fn a_disabled_kind_never_counts() {
        let p = OutlierParams {
            consecutive_gateway_failure: 0,
            ..params()
        };
        let (c, _) = next_counters(Counters::default(), Outcome::Status(503), &p);
        assert_eq!(c.consecutive_gateway_failure, 0);
        assert_eq!(c.consecutive_5xx, 1);
    }

    #[test]
    fn thresholds_above_the_counter_range_are_reached_at_its_top() {
        let p = OutlierParams {
            consecutive_5xx: u32::MAX,
            ..only(params())
        };
        let c = Counters {
            consecutive_5xx: COUNTER_MAX - 1,
            ..Counters::default()
        };
        assert_eq!(
            next_counters(c, Outcome::Status(500), &p).1,
            Some(EjectReason::Consecutive5xx)
        );
    }

    #[test]
    fn counters_pack_round_trips() {
        let c = Counters {
            consecutive_5xx: COUNTER_MAX,
            consecutive_gateway_failure: 12345,
            consecutive_local_origin_failure: 1,
        };
        assert_eq!(Counters::unpack(c.pack()), c);
    }

    #[test]
    fn ejection_times_grow_to_the_max() {
        assert_eq!(ejection_ms(1, 30 * S, 300 * S), 30 * S);
        assert_eq!(ejection_ms(3, 30 * S, 300 * S), 90 * S);
        assert_eq!(ejection_ms(10, 30 * S, 300 * S), 300 * S);
        assert_eq!(ejection_ms(11, 30 * S, 300 * S), 300 * S);
        assert_eq!(ejection_ms(5, 30 * S, 10 * S), 30 * S, "max below base");
        assert_eq!(ejection_ms(5, 0, 0), 1, "base 0 acts as 1 ms");
        assert_eq!(ejection_ms(u32::MAX, u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(level_cap(30 * S, 300 * S), 10);
        assert_eq!(level_cap(30 * S, 310 * S), 11);
        assert_eq!(level_cap(30 * S, 0), 1);
        assert_eq!(level_cap(0, u64::MAX), LEVEL_MAX);
    }

    #[test]
    fn levels_decay_one_per_base() {
        assert_eq!(decayed(5, 0, 30 * S), 5);
        assert_eq!(decayed(5, 30 * S - 1, 30 * S), 5);
        assert_eq!(decayed(5, 30 * S, 30 * S), 4);
        assert_eq!(decayed(5, 95 * S, 30 * S), 2);
        assert_eq!(decayed(5, u64::MAX, 30 * S), 0);
        assert_eq!(decayed(5, 7, 0), 0, "base 0 acts as 1 ms");
        assert_eq!(next_level(0, 0, 30 * S, 300 * S), 1);
        assert_eq!(next_level(3, 0, 30 * S, 300 * S), 4);
        assert_eq!(next_level(10, 0, 30 * S, 300 * S), 10, "capped");
        assert_eq!(next_level(10, 60 * S, 30 * S, 300 * S), 9);
    }

    #[test]
    fn an_ejection_lasts_base_times_its_level_and_ends_by_itself() {
        let p = params();
        let (n, u) = (NodeOutlier::new(), UpstreamOutlier::new());
        assert_eq!(report1(&n, &u, Outcome::LocalFailure, 100, &p), None);
        let e = ejected(report1(&n, &u, Outcome::LocalFailure, 100, &p)).unwrap();
        assert_eq!(
            e,
            Ejection {
                reason: EjectReason::ConsecutiveLocalOriginFailure,
                until_ms: 100 + 30 * S
            }
        );
        assert!(n.is_ejected(100));
        assert!(n.is_ejected(100 + 30 * S - 1));
        assert!(!n.is_ejected(100 + 30 * S), "eligible at the exact end");
        assert_eq!(n.ejected_until_ms(200), Some(100 + 30 * S));
        assert_eq!(n.ejected_until_ms(100 + 30 * S), None);
        assert_eq!(n.ejection_level(200, &p), 1);
        assert_eq!(n.ejection_count_total(), 1);
        assert_eq!(n.counters(), Counters::default());

        // Ejected again right after: level 2, 60 s.
        let t = 100 + 30 * S;
        report1(&n, &u, Outcome::LocalFailure, t, &p);
        let e = ejected(report1(&n, &u, Outcome::LocalFailure, t, &p)).unwrap();
        assert_eq!(e.until_ms, t + 60 * S);
        assert_eq!(n.ejection_level(t, &p), 2);
        // 90 s un-ejected after that: level 2 decays by 3 to 0, so the next is level 1.
        let end = t + 60 * S;
        assert_eq!(n.ejection_level(end + 90 * S, &p), 0);
        assert_eq!(n.ejection_level(end + 30 * S, &p), 1);
        let t = end + 90 * S;
        report1(&n, &u, Outcome::LocalFailure, t, &p);
        let e = ejected(report1(&n, &u, Outcome::LocalFailure, t, &p)).unwrap();
        assert_eq!(e.until_ms, t + 30 * S);
        assert_eq!(n.ejection_count_total(), 3);
    }

    #[test]
    fn reports_on_an_ejected_node_are_ignored() {
        let p = OutlierParams {
            failure_threshold: 50,
            ..params()
        };
        let (n, u) = (NodeOutlier::new(), UpstreamOutlier::new());
        report1(&n, &u, Outcome::LocalFailure, 0, &p);
        assert!(ejected(report1(&n, &u, Outcome::LocalFailure, 0, &p)).is_some());
        n.take_interval();
        for _ in 0..10 {
            assert_eq!(report1(&n, &u, Outcome::LocalFailure, 5, &p), None);
        }
        assert_eq!(n.counters(), Counters::default());
        assert_eq!(n.interval_counts(), IntervalCounts::default());
        assert_eq!(n.ejection_count_total(), 1);
    }

    #[test]
    fn a_success_between_failures_prevents_the_ejection() {
        let p = params();
        let (n, u) = (NodeOutlier::new(), UpstreamOutlier::new());
        for i in 0..100 {
            let o = if i % 4 == 3 {
                Outcome::Status(200)
            } else {
                Outcome::Status(500)
            };
            assert_eq!(report1(&n, &u, o, i, &p), None);
        }
        assert_eq!(n.ejection_count_total(), 0);
    }

    #[test]
    fn max_ejection_percent_counts_the_ejected_nodes_and_expired_ones_do_not() {
        let p = OutlierParams {
            max_ejection_percent: 50,
            ..params()
        };
        let u = UpstreamOutlier::new();
        let nodes: Vec<NodeOutlier> = (0..4).map(|_| NodeOutlier::new()).collect();
        let fail = |i: usize, now: u64| {
            nodes[i].report(Outcome::LocalFailure, now, &p, &u, &nodes);
            nodes[i].report(Outcome::LocalFailure, now, &p, &u, &nodes)
        };
        assert!(ejected(fail(0, 0)).is_some());
        assert!(ejected(fail(1, 0)).is_some(), "2 of 4 = 50%");
        assert_eq!(
            fail(2, 0),
            Some(Verdict::Overflow(
                EjectReason::ConsecutiveLocalOriginFailure
            ))
        );
        assert_eq!(
            nodes[2].counters(),
            Counters::default(),
            "reset on overflow too"
        );
        assert!(!nodes[2].is_ejected(0));
        assert_eq!(nodes[2].ejection_count_total(), 0);
        // Node 0 and 1's ejections expire at 30 s: node 2 can go then.
        assert!(fail(2, 30 * S - 1).is_some_and(|v| matches!(v, Verdict::Overflow(_))));
        assert!(ejected(fail(2, 30 * S)).is_some());
        assert!(ejected(fail(3, 30 * S)).is_some());
    }

    #[test]
    fn one_node_may_always_go_from_two_or_more_but_a_lone_node_needs_100() {
        assert!(ejection_allowed(0, 2, 0));
        assert!(!ejection_allowed(1, 2, 0));
        assert!(ejection_allowed(0, 10, 10));
        assert!(!ejection_allowed(1, 10, 10));
        assert!(ejection_allowed(1, 10, 20));
        assert!(!ejection_allowed(0, 1, 99));
        assert!(ejection_allowed(0, 1, 100));
        assert!(ejection_allowed(0, 0, 100), "the node itself counts");
        assert!(ejection_allowed(2, 3, 100));
        assert!(ejection_allowed(2, 4, 75));
        assert!(!ejection_allowed(2, 4, 74));
        assert!(ejection_allowed(3, 3, 100), "taken as 3 of 4");

        let p = OutlierParams {
            max_ejection_percent: 99,
            ..params()
        };
        let (n, u) = (NodeOutlier::new(), UpstreamOutlier::new());
        report1(&n, &u, Outcome::LocalFailure, 0, &p);
        assert!(matches!(
            report1(&n, &u, Outcome::LocalFailure, 0, &p),
            Some(Verdict::Overflow(_))
        ));
        // The node is counted even when the caller's list lacks it.
        let other = NodeOutlier::new();
        n.report(Outcome::LocalFailure, 0, &p, &u, [&other]);
        assert!(ejected(n.report(Outcome::LocalFailure, 0, &p, &u, [&other])).is_some());
    }

    #[test]
    fn sweeps_eject_nodes_whose_failure_share_reaches_the_threshold() {
        let p = OutlierParams {
            failure_threshold: 50,
            minimum_hosts: 3,
            request_volume: 10,
            ..only(params())
        };
        let u = UpstreamOutlier::new();
        let nodes: Vec<NodeOutlier> = (0..4).map(|_| NodeOutlier::new()).collect();
        let feed = |i: usize, ok: u32, bad: u32| {
            for _ in 0..ok {
                nodes[i].report(Outcome::Status(200), 0, &p, &u, &nodes);
            }
            for _ in 0..bad {
                nodes[i].report(Outcome::Status(500), 0, &p, &u, &nodes);
                nodes[i].report(Outcome::LocalFailure, 0, &p, &u, &nodes);
            }
        };
        feed(0, 5, 3); // 6 of 11: 54%
        feed(1, 10, 0);
        feed(2, 6, 2); // 4 of 10: 40%
        feed(3, 1, 2); // 4 of 5, but below the volume
        assert_eq!(
            nodes[0].interval_counts(),
            IntervalCounts {
                attempts: 11,
                failures: 6
            }
        );
        let got = sweep(&u, &nodes, 7, &p);
        assert_eq!(
            got,
            [(
                0,
                Verdict::Ejected(Ejection {
                    reason: EjectReason::FailurePercentage,
                    until_ms: 7 + 30 * S
                })
            )]
        );
        for n in &nodes {
            assert_eq!(n.interval_counts(), IntervalCounts::default());
        }
        // An exact 50% is enough.
        feed(1, 10, 0);
        feed(1, 0, 5);
        feed(2, 10, 0);
        feed(3, 10, 0);
        let got = sweep(&u, &nodes, 8, &p);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, 1);
    }

    #[test]
    fn sweeps_need_minimum_hosts_with_the_volume_and_still_reset() {
        let p = OutlierParams {
            failure_threshold: 10,
            minimum_hosts: 3,
            request_volume: 10,
            ..only(params())
        };
        let u = UpstreamOutlier::new();
        let nodes: Vec<NodeOutlier> = (0..3).map(|_| NodeOutlier::new()).collect();
        for (i, n) in nodes.iter().enumerate() {
            let k = if i == 2 { 9 } else { 10 };
            for _ in 0..k {
                n.report(Outcome::LocalFailure, 0, &p, &u, &nodes);
            }
        }
        assert!(sweep(&u, &nodes, 0, &p).is_empty());
        assert!(nodes.iter().all(|n| n.interval_counts().attempts == 0));
        // Volume 0 still needs one attempt: idle nodes are never judged.
        let p = OutlierParams {
            minimum_hosts: 0,
            request_volume: 0,
            ..p
        };
        assert!(sweep(&u, &nodes, 0, &p).is_empty());
    }

    #[test]
    fn sweeps_respect_max_ejection_percent_in_node_order() {
        let p = OutlierParams {
            failure_threshold: 50,
            minimum_hosts: 1,
            request_volume: 1,
            max_ejection_percent: 50,
            ..only(params())
        };
        let u = UpstreamOutlier::new();
        let nodes: Vec<Arc<NodeOutlier>> = (0..4).map(|_| Arc::new(NodeOutlier::new())).collect();
        let view = || nodes.iter().map(|n| &**n);
        for n in &nodes {
            n.report(Outcome::LocalFailure, 0, &p, &u, view());
        }
        let got = sweep(&u, view(), 0, &p);
        let kinds: Vec<(usize, bool)> = got
            .iter()
            .map(|(i, v)| (*i, matches!(v, Verdict::Ejected(_))))
            .collect();
        assert_eq!(kinds, [(0, true), (1, true), (2, false), (3, false)]);
        assert_eq!(got[2].1, Verdict::Overflow(EjectReason::FailurePercentage));
    }

    #[test]
    fn concurrent_reporters_eject_exactly_once() {
        for _ in 0..20 {
            let p = Arc::new(OutlierParams {
                consecutive_5xx: 3,
                consecutive_gateway_failure: 5,
                consecutive_local_origin_failure: 0,
                ..params()
            });
            let node = Arc::new(NodeOutlier::new());
            let up = Arc::new(UpstreamOutlier::new());
            let threads = 8;
            let barrier = Arc::new(Barrier::new(threads));
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (p, node, up, barrier) =
                        (p.clone(), node.clone(), up.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        (0..500)
                            .filter(|_| {
                                matches!(
                                    node.report(Outcome::Status(503), 1, &p, &up, [&*node]),
                                    Some(Verdict::Ejected(_))
                                )
                            })
                            .count()
                    })
                })
                .collect();
            let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
            assert_eq!(total, 1);
            assert_eq!(node.ejection_count_total(), 1);
            assert_eq!(up.word.load(Ordering::Relaxed) & PENDING_MASK, 0);
        }
    }

    #[test]
    fn concurrent_ejections_of_different_nodes_respect_the_share() {
        for _ in 0..20 {
            let p = Arc::new(OutlierParams {
                max_ejection_percent: 30,
                ..params()
            });
            let nodes: Arc<Vec<NodeOutlier>> =
                Arc::new((0..10).map(|_| NodeOutlier::new()).collect());
            let up = Arc::new(UpstreamOutlier::new());
            let barrier = Arc::new(Barrier::new(10));
            let handles: Vec<_> = (0..10)
                .map(|i| {
                    let (p, nodes, up, barrier) =
                        (p.clone(), nodes.clone(), up.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        for _ in 0..50 {
                            nodes[i].report(Outcome::LocalFailure, 1, &p, &up, nodes.iter());
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            let n = nodes.iter().filter(|n| n.is_ejected(1)).count();
            assert_eq!(n, 3);
        }
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            (0u16..1000).prop_map(Outcome::Status),
            (500u16..600).prop_map(Outcome::Status),
            (502u16..505).prop_map(Outcome::Status),
            Just(Outcome::LocalFailure),
        ]
    }

    fn any_params() -> impl Strategy<Value = OutlierParams> {
        (
            (0u32..8, 0u32..8, 0u32..8, 0u32..101),
            (0u32..5, 0u32..20, 0u64..100, 0u64..200, 0u32..120),
        )
            .prop_map(|((a, b, c, f), (h, v, base, max, pct))| OutlierParams {
                consecutive_5xx: a,
                consecutive_gateway_failure: b,
                consecutive_local_origin_failure: c,
                failure_threshold: f,
                minimum_hosts: h,
                request_volume: v,
                interval_ms: 10,
                base_ejection_ms: base,
                max_ejection_ms: max,
                max_ejection_percent: pct,
            })
    }

    proptest! {
        #[test]
        fn never_ejects_when_every_threshold_is_0(
            outcomes in proptest::collection::vec((outcome(), 0usize..3, 0u64..50), 0..200),
            p in any_params(),
        ) {
            let p = OutlierParams { failure_threshold: 0, ..only(p) };
            let u = UpstreamOutlier::new();
            let nodes: Vec<NodeOutlier> = (0..3).map(|_| NodeOutlier::new()).collect();
            let mut now = 0;
            for (o, i, dt) in outcomes {
                now += dt;
                prop_assert_eq!(nodes[i].report(o, now, &p, &u, &nodes), None);
                if dt > 40 {
                    prop_assert!(sweep(&u, &nodes, now, &p).is_empty());
                }
            }
            prop_assert!(nodes.iter().all(|n| n.ejection_count_total() == 0));
        }

        #[test]
        fn enabled_counters_stay_below_their_thresholds(
            outcomes in proptest::collection::vec(outcome(), 0..300),
            p in any_params(),
        ) {
            let mut c = Counters::default();
            for o in outcomes {
                let (n, r) = next_counters(c, o, &p);
                if r.is_some() {
                    prop_assert_eq!(n, Counters::default());
                }
                for (v, t) in [
                    (n.consecutive_5xx, p.consecutive_5xx),
                    (n.consecutive_gateway_failure, p.consecutive_gateway_failure),
                    (n.consecutive_local_origin_failure, p.consecutive_local_origin_failure),
                ] {
                    let ok = if t == 0 { v == 0 } else { v < t };
                    prop_assert!(ok, "{} vs threshold {}", v, t);
                }
                c = n;
            }
        }

        #[test]
        fn a_success_resets_everything(
            c in (0..=COUNTER_MAX, 0..=COUNTER_MAX, 0..=COUNTER_MAX),
            s in 0u16..500,
            p in any_params(),
        ) {
            let c = Counters {
                consecutive_5xx: c.0,
                consecutive_gateway_failure: c.1,
                consecutive_local_origin_failure: c.2,
            };
            prop_assert_eq!(
                next_counters(c, Outcome::Status(s), &p),
                (Counters::default(), None)
            );
        }

        #[test]
        fn ejection_times_stay_within_base_and_max(
            n in 1u32..,
            base in any::<u64>(),
            max in any::<u64>(),
        ) {
            let t = ejection_ms(n, base, max);
            prop_assert!(t >= base.max(1));
            prop_assert!(t <= max.max(base).max(1));
        }

        #[test]
        fn levels_only_decay_and_never_go_below_0(
            n in any::<u32>(),
            a in any::<u64>(),
            b in any::<u64>(),
            base in any::<u64>(),
        ) {
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(decayed(n, lo, base) <= n);
            prop_assert!(decayed(n, hi, base) <= decayed(n, lo, base));
            prop_assert_eq!(decayed(n, 0, base), n);
        }

        #[test]
        fn ejected_nodes_never_exceed_the_share(
            size in 1usize..12,
            pct in 0u32..=100,
            events in proptest::collection::vec((0usize..12, 0u64..20), 0..200),
        ) {
            let p = OutlierParams {
                consecutive_local_origin_failure: 1,
                base_ejection_ms: 50,
                max_ejection_ms: 500,
                max_ejection_percent: pct,
                ..OutlierParams::default()
            };
            let u = UpstreamOutlier::new();
            let nodes: Vec<NodeOutlier> = (0..size).map(|_| NodeOutlier::new()).collect();
            let allowed = ((pct as usize * size) / 100).max(usize::from(size >= 2));
            let mut now = 0;
            for (i, dt) in events {
                now += dt;
                let v = nodes[i % size].report(Outcome::LocalFailure, now, &p, &u, &nodes);
                let out = nodes.iter().filter(|n| n.is_ejected(now)).count();
                prop_assert!(out <= allowed, "{} of {} at {}%", out, size, pct);
                if let Some(Verdict::Ejected(e)) = v {
                    prop_assert!(e.until_ms >= now + 50 && e.until_ms <= now + 500);
                }
            }
        }
    }
}
