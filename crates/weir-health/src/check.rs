//! [`Check`]: one kind of active probe, registered by name (`checks.active.type`), and the
//! registry the checkers dispatch through. The built-ins (`http`, `https`, `tcp`) are
//! registered in every [`HealthTable`](crate::HealthTable) exactly as an embedder's own checks
//! are (docs/health-checks.md, "Custom health checks").

use crate::probe::ProbeSpec;
use crate::state::Report;
use crate::target::Target;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

/// An active health check: probe one target once and say how the probe counts.
///
/// Shaped after Pingora's `HealthCheck::check`, with APISIX's classification instead of
/// `Ok`/`Err`: the outcome feeds the target's four counters and its state machine, so the
/// thresholds (`healthy.successes`, `unhealthy.{http_failures, tcp_failures, timeouts}`) and
/// intervals come from the configuration, not from the check (Pingora's `health_threshold`).
///
/// ```
/// use weir_health::{Check, ProbeSpec, ProbeStream, Report, Target};
///
/// /// Up when the port accepts a connection and the peer speaks first with `220`.
/// struct Banner;
///
/// #[async_trait::async_trait]
/// impl Check for Banner {
///     async fn check(&self, target: &Target, spec: &ProbeSpec) -> Option<Report> {
///         let banner = async {
///             let mut conn = ProbeStream::connect(target, spec).await?;
///             conn.read_up_to(3).await
///         };
///         Some(match banner.await {
///             Ok(b) if b == b"220" => Report::Success,
///             Ok(b) if b.is_empty() => Report::TcpFailure, // closed without a word
///             Ok(_) => Report::HttpFailure,                // answered, wrongly
///             Err(report) => report,                       // refused, reset, timed out
///         })
///     }
/// }
/// ```
#[async_trait]
pub trait Check: Send + Sync + 'static {
    /// Probe `target` (its address is [`Target::addr`]: the node's ip and
    /// `checks.active.port` or the node port; [`Target::host`] is the name to present) once.
    ///
    /// `spec` is the checker's `checks.active` (every option, also the HTTP ones, and the
    /// upstream's TLS material). Apply `spec.timeout` to each step (connect, handshake, write,
    /// read) as the built-ins do; the checker stops waiting after [`BACKSTOP`] × `timeout` and
    /// counts a timeout. The future may be dropped at any await point (the checker was
    /// removed, or the backstop fired).
    ///
    /// Returns the report to count: [`Report::Success`], [`Report::HttpFailure`] (the peer
    /// answered, wrongly), [`Report::TcpFailure`] (refused, reset, handshake failed),
    /// [`Report::Timeout`]; or `None` for an answer that counts for neither side (as a status
    /// in neither `http_statuses` list).
    async fn check(&self, target: &Target, spec: &ProbeSpec) -> Option<Report>;
}

/// A check still running after `BACKSTOP × timeout` is abandoned and counted as a timeout.
/// Large enough never to cut a built-in probe short: an HTTPS probe's steps (connect and
/// handshake, write, read) each have `timeout` of their own.
pub const BACKSTOP: u32 = 5;

/// Checks by name. Registering a name again replaces its check (also a built-in's); checkers
/// look their check up at every probe, so a registration applies to the next probe.
pub(crate) struct CheckRegistry {
    checks: RwLock<BTreeMap<String, Arc<dyn Check>>>,
}

impl fmt::Debug for CheckRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

impl Default for CheckRegistry {
    /// The built-ins: `http`, `https`, `tcp`.
    fn default() -> Self {
        let r = CheckRegistry {
            checks: RwLock::new(BTreeMap::new()),
        };
        r.register("http", Arc::new(crate::probe::HttpCheck::http()));
        r.register("https", Arc::new(crate::probe::HttpCheck::https()));
        r.register("tcp", Arc::new(crate::probe::TcpCheck));
        r
    }
}

impl CheckRegistry {
    pub(crate) fn register(&self, name: &str, check: Arc<dyn Check>) {
        self.checks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), check);
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<dyn Check>> {
        self.checks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.checks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{HealthStatus, Thresholds};
    use crate::status::StatusClasses;
    use crate::table::HealthTable;
    use crate::target::{TargetId, TargetSpec};
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    use std::time::Duration;

    /// An http failure while `failing` is set, a success otherwise; never answers while `hang`
    /// is set; panics at its first call with `panic_on_first`.
    #[derive(Default)]
    struct Scripted {
        failing: AtomicBool,
        hang: AtomicBool,
        panic_on_first: AtomicBool,
        calls: AtomicU32,
    }

    #[async_trait]
    impl Check for Scripted {
        async fn check(&self, _target: &Target, _spec: &ProbeSpec) -> Option<Report> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n == 0 && self.panic_on_first.load(Ordering::SeqCst) {
                panic!("a check with a bug");
            }
            if self.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
            Some(if self.failing.load(Ordering::SeqCst) {
                Report::HttpFailure
            } else {
                Report::Success
            })
        }
    }

    fn spec(kind: &str) -> ProbeSpec {
        ProbeSpec {
            kind: Arc::from(kind),
            timeout: Duration::from_millis(20),
            concurrency: 1,
            method: http::Method::GET,
            path: "/".into(),
            body: bytes::Bytes::new(),
            headers: Vec::new(),
            verify_certificate: true,
            ca: None,
            client_cert_key: None,
            healthy_interval: Duration::from_millis(5),
            unhealthy_interval: Duration::from_millis(5),
            statuses: StatusClasses::default(),
            thresholds: Thresholds {
                successes: 2,
                http_failures: 2,
                tcp_failures: 2,
                timeouts: 1,
            },
        }
    }

    fn one_target() -> Vec<TargetSpec> {
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        vec![TargetSpec {
            id: TargetId {
                ip,
                port: 9,
                hostname: ip.to_string(),
            },
            host: ip.to_string(),
        }]
    }

    /// Poll `cond` every few milliseconds for up to 10 s.
    async fn eventually(what: &str, cond: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    #[test]
    fn the_built_ins_are_registered_like_any_other_check() {
        let table = HealthTable::default();
        assert_eq!(table.check_names(), ["http", "https", "tcp"]);
        table.register_check("scripted", Arc::new(Scripted::default()));
        assert_eq!(table.check_names(), ["http", "https", "scripted", "tcp"]);
        assert!(table.check("scripted").is_some() && table.check("grpc").is_none());
    }

    #[tokio::test]
    async fn a_registered_check_drives_the_state_machine_down_and_up() {
        let table = HealthTable::default();
        let check = Arc::new(Scripted::default());
        check.failing.store(true, Ordering::SeqCst);
        table.register_check("scripted", Arc::clone(&check) as Arc<dyn Check>);
        let (checker, targets) = table.sync("upstreams/u", 1, spec("scripted"), &one_target());
        assert_eq!(&*checker.check_type(), "scripted");
        let task = tokio::spawn(Arc::clone(&checker).run());
        let t = &targets[0];
        eventually("two http failures make it unhealthy", || {
            t.health().status == HealthStatus::Unhealthy
        })
        .await;
        assert_eq!(t.health().counters.http_failure, 2);
        check.failing.store(false, Ordering::SeqCst);
        eventually("two successes make it healthy", || {
            t.health().status == HealthStatus::Healthy
        })
        .await;
        assert_eq!(t.health().counters.success, 2);
        task.abort();
    }

    #[tokio::test]
    async fn a_check_that_never_answers_counts_as_a_timeout() {
        let table = HealthTable::default();
        let check = Arc::new(Scripted::default());
        check.hang.store(true, Ordering::SeqCst);
        table.register_check("hangs", Arc::clone(&check) as Arc<dyn Check>);
        let (checker, targets) = table.sync("upstreams/u", 1, spec("hangs"), &one_target());
        let task = tokio::spawn(Arc::clone(&checker).run());
        eventually("the backstop reports a timeout", || !targets[0].is_up()).await;
        assert_eq!(targets[0].health().counters.timeout_failure, 1);
        task.abort();
    }

    #[tokio::test]
    async fn a_panicking_check_is_probed_again_and_a_late_registration_applies() {
        let table = HealthTable::default();
        // Not registered yet: the checker waits for it without probing.
        let (checker, targets) = table.sync("upstreams/u", 1, spec("late"), &one_target());
        let task = tokio::spawn(Arc::clone(&checker).run());
        let check = Arc::new(Scripted::default());
        check.failing.store(true, Ordering::SeqCst);
        check.panic_on_first.store(true, Ordering::SeqCst);
        table.register_check("late", Arc::clone(&check) as Arc<dyn Check>);
        eventually("the failures after the panic count", || !targets[0].is_up()).await;
        assert!(check.calls.load(Ordering::SeqCst) >= 3);
        assert_eq!(targets[0].health().counters.http_failure, 2);
        task.abort();
    }
}
