//! Health targets: what a checker probes, identified as APISIX does by `(ip, port, hostname)`.

use crate::state::{Health, Report, TargetHealth, Thresholds};
use log::{info, warn};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicI64;
use std::sync::Arc;

/// A target's identity. Nodes with the same identity share one target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId {
    /// The node's address (resolved for names).
    pub ip: IpAddr,
    /// `checks.active.port`, else the node port.
    pub port: u16,
    /// `checks.active.host`, else the ip.
    pub hostname: String,
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", SocketAddr::new(self.ip, self.port))?;
        if self.hostname != self.ip.to_string() {
            write!(f, " ({})", self.hostname)?;
        }
        Ok(())
    }
}

/// What a checker needs to know about a target to probe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub id: TargetId,
    /// The `Host` header of probes (no port), also the SNI unless it is an IP literal.
    pub host: String,
}

/// A target and its health, shared by the checker, every snapshot and every request.
#[derive(Debug)]
pub struct Target {
    pub id: TargetId,
    pub host: String,
    /// The upstream key, for log lines.
    pub upstream: Arc<str>,
    health: TargetHealth,
}

/// Where a report came from, for log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Active,
    Passive,
}

impl Target {
    pub(crate) fn new(spec: TargetSpec, upstream: Arc<str>, down: Arc<AtomicI64>) -> Self {
        Target {
            id: spec.id,
            host: spec.host,
            upstream,
            health: TargetHealth::new(down),
        }
    }

    /// Address probes connect to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.id.ip, self.id.port)
    }

    /// Whether the target gets traffic. One atomic load.
    #[inline]
    pub fn is_up(&self) -> bool {
        self.health.is_up()
    }

    /// How many times the target went from up to down.
    pub fn downs(&self) -> u64 {
        self.health.downs()
    }

    pub fn health(&self) -> Health {
        self.health.get()
    }

    /// Apply a report; a state change is logged.
    pub fn report(&self, report: Report, th: &Thresholds, source: Source) {
        let Some((before, after)) = self.health.report(report, th) else {
            return;
        };
        if before.status == after.status {
            return;
        }
        let how = match source {
            Source::Active => "active check",
            Source::Passive => "passive report",
        };
        let c = after.counters;
        let msg = format!(
            "upstream {}: target {} {} -> {} ({how}: {}; success {}, http_failure {}, tcp_failure {}, timeout_failure {})",
            self.upstream,
            self.id,
            before.status.as_str(),
            after.status.as_str(),
            report.as_str(),
            c.success,
            c.http_failure,
            c.tcp_failure,
            c.timeout_failure
        );
        if after.status.is_up() {
            info!("{msg}");
        } else {
            warn!("{msg}");
        }
    }

    pub(crate) fn detach(&self) {
        self.health.detach();
    }
}
