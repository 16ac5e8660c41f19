//! Limits: caps on what is in flight to an upstream and to each of its nodes.
//!
//! [`UpstreamLimits`] counts an upstream's requests in flight (client requests being proxied
//! to it, however many attempts each makes) and retries in flight (retry attempts under way).
//! [`UpstreamLimits::try_request`] admits a request while fewer than `max_requests` are in
//! flight; [`UpstreamLimits::try_retry`] admits a retry while fewer retries are in flight
//! than the budget allows: `max(min_concurrency, floor(percent% × requests in flight))` with
//! a `retry_budget`, else `max_retries` when it is > 0, else always. Every limit of 0 is
//! unlimited. An admission returns a permit that holds its place until dropped (an RAII
//! guard, like tower's); a refusal returns the [`Overflow`] that refused it, whose name is the
//! `X-Weir-Overflow` header value and the metric label. [`node_full`] is the per-node test
//! (the node's in-flight count lives with the balancer).
//!
//! Invariant: admission is exact under concurrency. A counter is raised only by a
//! compare-and-swap from a value below its limit, so the number of permits alive never
//! exceeds the limit in force, even for an instant; unlimited counters use one `fetch_add`.
//! Each permit lowers its counter exactly once, on drop. No lock, no allocation (a permit
//! holds an `Arc` clone of its `UpstreamLimits`, so it is `'static` and `Send`).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `retry_budget`: retries in flight may be `percent` of the requests in flight, and
/// `min_concurrency` are always allowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    /// Percent of the requests in flight (a value that is not a finite number >= 0 acts as 0).
    pub percent: f64,
    /// Retries always allowed in flight.
    pub min_concurrency: u32,
}

/// The limits of one upstream, as plain data. 0 = unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LimitParams {
    /// Requests in flight to the upstream.
    pub max_requests: u32,
    /// Requests in flight to one node.
    pub max_requests_per_node: u32,
    /// Retries in flight to the upstream, when there is no `retry_budget`.
    pub max_retries: u32,
    /// Replaces `max_retries` when set.
    pub retry_budget: Option<RetryBudget>,
}

/// The limit that refused a request or a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Overflow {
    MaxRequests,
    MaxRequestsPerNode,
    MaxRetries,
    RetryBudget,
}

impl Overflow {
    /// The `X-Weir-Overflow` header value and metric label: `max_requests`,
    /// `max_requests_per_node`, `max_retries`, `retry_budget`.
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::MaxRequests => "max_requests",
            Overflow::MaxRequestsPerNode => "max_requests_per_node",
            Overflow::MaxRetries => "max_retries",
            Overflow::RetryBudget => "retry_budget",
        }
    }
}

impl fmt::Display for Overflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Overflow {}

/// Whether a node with `in_flight` requests is full: `max_requests_per_node > 0` and
/// `in_flight >= max_requests_per_node`.
pub fn node_full(in_flight: u64, params: &LimitParams) -> bool {
    params.max_requests_per_node > 0 && in_flight >= u64::from(params.max_requests_per_node)
}

/// The most retries in flight allowed with `requests` in flight: `Some(limit)`, and the
/// overflow that refuses past it, or `None` when unlimited.
pub fn retry_limit(requests: u64, params: &LimitParams) -> Option<(u64, Overflow)> {
    if let Some(b) = params.retry_budget {
        let pct = if b.percent.is_finite() && b.percent > 0.0 {
            b.percent
        } else {
            0.0
        };
        // Saturating cast: a huge product is "unlimited in practice".
        let share = (pct / 100.0 * requests as f64).floor() as u64;
        return Some((
            share.max(u64::from(b.min_concurrency)),
            Overflow::RetryBudget,
        ));
    }
    (params.max_retries > 0).then(|| (u64::from(params.max_retries), Overflow::MaxRetries))
}

/// One upstream's in-flight counters, shared by every thread (module doc).
#[derive(Debug, Default)]
pub struct UpstreamLimits {
    requests: AtomicU64,
    retries: AtomicU64,
}

/// Raise `counter` by one if it is below `limit` (`None` = no limit).
fn acquire(counter: &AtomicU64, limit: Option<u64>) -> bool {
    let Some(limit) = limit else {
        counter.fetch_add(1, Ordering::AcqRel);
        return true;
    };
    let mut cur = counter.load(Ordering::Acquire);
    loop {
        if cur >= limit {
            return false;
        }
        match counter.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(actual) => cur = actual,
        }
    }
}

impl UpstreamLimits {
    pub fn new() -> Self {
        UpstreamLimits::default()
    }

    /// Requests in flight.
    pub fn requests_in_flight(&self) -> u64 {
        self.requests.load(Ordering::Acquire)
    }

    /// Retries in flight.
    pub fn retries_in_flight(&self) -> u64 {
        self.retries.load(Ordering::Acquire)
    }

    /// Admit a request while fewer than `max_requests` are in flight (0 = unlimited). The
    /// permit counts it in flight until dropped.
    pub fn try_request(self: &Arc<Self>, params: &LimitParams) -> Result<RequestPermit, Overflow> {
        let limit = (params.max_requests > 0).then_some(u64::from(params.max_requests));
        if acquire(&self.requests, limit) {
            Ok(RequestPermit {
                limits: Arc::clone(self),
            })
        } else {
            Err(Overflow::MaxRequests)
        }
    }

    /// Admit a retry while fewer retries are in flight than [`retry_limit`] allows for the
    /// requests in flight now. The permit counts it in flight until dropped.
    pub fn try_retry(self: &Arc<Self>, params: &LimitParams) -> Result<RetryPermit, Overflow> {
        let limit = retry_limit(self.requests_in_flight(), params);
        if acquire(&self.retries, limit.map(|(l, _)| l)) {
            Ok(RetryPermit {
                limits: Arc::clone(self),
            })
        } else {
            Err(limit.map_or(Overflow::MaxRetries, |(_, o)| o))
        }
    }
}

/// A request in flight to an upstream; dropping it ends the request.
#[derive(Debug)]
#[must_use = "the request is counted in flight only while its permit lives"]
pub struct RequestPermit {
    limits: Arc<UpstreamLimits>,
}

impl Drop for RequestPermit {
    fn drop(&mut self) {
        self.limits.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A retry attempt in flight to an upstream; dropping it ends the retry.
#[derive(Debug)]
#[must_use = "the retry is counted in flight only while its permit lives"]
pub struct RetryPermit {
    limits: Arc<UpstreamLimits>,
}

impl Drop for RetryPermit {
    fn drop(&mut self) {
        self.limits.retries.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Barrier;

    fn limits(max_requests: u32, max_retries: u32, budget: Option<(f64, u32)>) -> LimitParams {
        LimitParams {
            max_requests,
            max_requests_per_node: 0,
            max_retries,
            retry_budget: budget.map(|(percent, min_concurrency)| RetryBudget {
                percent,
                min_concurrency,
            }),
        }
    }

    #[test]
    fn overflow_names() {
        assert_eq!(Overflow::MaxRequests.as_str(), "max_requests");
        assert_eq!(
            Overflow::MaxRequestsPerNode.as_str(),
            "max_requests_per_node"
        );
        assert_eq!(Overflow::MaxRetries.as_str(), "max_retries");
        assert_eq!(Overflow::RetryBudget.to_string(), "retry_budget");
    }

    #[test]
    fn requests_are_admitted_up_to_the_max_and_permits_give_back() {
        let u = Arc::new(UpstreamLimits::new());
        let p = limits(2, 0, None);
        let a = u.try_request(&p).unwrap();
        let b = u.try_request(&p).unwrap();
        assert_eq!(u.try_request(&p).unwrap_err(), Overflow::MaxRequests);
        assert_eq!(u.requests_in_flight(), 2);
        drop(a);
        assert_eq!(u.requests_in_flight(), 1);
        let c = u.try_request(&p).unwrap();
        drop((b, c));
        assert_eq!(u.requests_in_flight(), 0);
        // 0 = unlimited.
        let many: Vec<_> = (0..1000)
            .map(|_| u.try_request(&limits(0, 0, None)).unwrap())
            .collect();
        assert_eq!(u.requests_in_flight(), 1000);
        drop(many);
        assert_eq!(u.requests_in_flight(), 0);
    }

    #[test]
    fn max_retries_caps_retries_in_flight() {
        let u = Arc::new(UpstreamLimits::new());
        let p = limits(0, 1, None);
        let r = u.try_retry(&p).unwrap();
        assert_eq!(u.try_retry(&p).unwrap_err(), Overflow::MaxRetries);
        drop(r);
        assert!(u.try_retry(&p).is_ok());
        let free = limits(0, 0, None);
        let all: Vec<_> = (0..100).map(|_| u.try_retry(&free).unwrap()).collect();
        assert_eq!(u.retries_in_flight(), 100);
        drop(all);
        assert_eq!(u.retries_in_flight(), 0);
    }

    #[test]
    fn the_retry_budget_follows_requests_in_flight_with_a_minimum() {
        let u = Arc::new(UpstreamLimits::new());
        // The budget replaces max_retries.
        let p = limits(0, 100, Some((20.0, 3)));
        let reqs: Vec<_> = (0..10).map(|_| u.try_request(&p).unwrap()).collect();
        // 20% of 10 = 2 < 3: the minimum rules.
        let r: Vec<_> = (0..3).map(|_| u.try_retry(&p).unwrap()).collect();
        assert_eq!(u.try_retry(&p).unwrap_err(), Overflow::RetryBudget);
        let more: Vec<_> = (0..15).map(|_| u.try_request(&p).unwrap()).collect();
        // 20% of 25 = 5.
        let r2: Vec<_> = (0..2).map(|_| u.try_retry(&p).unwrap()).collect();
        assert_eq!(u.try_retry(&p).unwrap_err(), Overflow::RetryBudget);
        drop((reqs, more, r, r2));
        assert_eq!(retry_limit(7, &p), Some((3, Overflow::RetryBudget)));
        assert_eq!(
            retry_limit(29, &p),
            Some((5, Overflow::RetryBudget)),
            "floor"
        );
        assert_eq!(
            retry_limit(10, &limits(0, 0, Some((f64::NAN, 1)))),
            Some((1, Overflow::RetryBudget))
        );
        assert_eq!(
            retry_limit(u64::MAX, &limits(0, 0, Some((f64::MAX, 1)))),
            Some((u64::MAX, Overflow::RetryBudget))
        );
        assert_eq!(retry_limit(10, &limits(0, 0, None)), None);
    }

    #[test]
    fn node_full_at_the_per_node_max() {
        let p = LimitParams {
            max_requests_per_node: 3,
            ..LimitParams::default()
        };
        assert!(!node_full(2, &p));
        assert!(node_full(3, &p));
        assert!(node_full(4, &p));
        assert!(!node_full(u64::MAX, &LimitParams::default()));
    }

    #[test]
    fn admission_is_exact_under_concurrency() {
        let u = Arc::new(UpstreamLimits::new());
        let p = limits(5, 2, None);
        let holders = Arc::new(AtomicUsize::new(0));
        let retry_holders = Arc::new(AtomicUsize::new(0));
        let admitted = Arc::new(AtomicUsize::new(0));
        let threads = 16;
        let barrier = Arc::new(Barrier::new(threads));
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let (u, holders, retry_holders, admitted, barrier) = (
                    u.clone(),
                    holders.clone(),
                    retry_holders.clone(),
                    admitted.clone(),
                    barrier.clone(),
                );
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..2000 {
                        if let Ok(permit) = u.try_request(&p) {
                            admitted.fetch_add(1, Ordering::Relaxed);
                            let h = holders.fetch_add(1, Ordering::SeqCst) + 1;
                            assert!(h <= 5, "{h} requests held");
                            assert!(u.requests_in_flight() <= 5);
                            if let Ok(retry) = u.try_retry(&p) {
                                let r = retry_holders.fetch_add(1, Ordering::SeqCst) + 1;
                                assert!(r <= 2, "{r} retries held");
                                assert!(u.retries_in_flight() <= 2);
                                std::thread::yield_now();
                                retry_holders.fetch_sub(1, Ordering::SeqCst);
                                drop(retry);
                            }
                            holders.fetch_sub(1, Ordering::SeqCst);
                            drop(permit);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert!(admitted.load(Ordering::Relaxed) > 0);
        assert_eq!(u.requests_in_flight(), 0);
        assert_eq!(u.retries_in_flight(), 0);
    }

    #[test]
    fn permits_are_static_and_send() {
        fn check<T: Send + Sync + 'static>(_: &T) {}
        let u = Arc::new(UpstreamLimits::new());
        let p = u.try_request(&LimitParams::default()).unwrap();
        check(&p);
        let moved = std::thread::spawn(move || drop(p));
        moved.join().unwrap();
        assert_eq!(u.requests_in_flight(), 0);
    }
}
