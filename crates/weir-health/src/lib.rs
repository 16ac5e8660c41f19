//! Weir's health checks (docs/health-checks.md).
//!
//! - [`HealthTable`]: one [`Checker`] per upstream key with `checks`, process-wide.
//! - [`Target`]: a probed identity `(ip, port, hostname)` with APISIX's four-state machine
//!   ([`state`]), updated lock-free by active probes and passive reports alike.
//! - [`HealthService`]: a Pingora background service running every checker as a task.
//! - [`Check`]: one kind of probe, registered by name in the table (`checks.active.type`);
//!   the built-ins [`HttpCheck`] (`http`, `https`) and [`TcpCheck`] (`tcp`) are registered the
//!   same way an embedder's own checks are.
//!
//! Why not Pingora's `HealthCheck`/`HealthRegistry`: they keep one consecutive counter and
//! one probe period, while APISIX semantics need four counters with their own thresholds, a
//! period per state, passive reports into the same state, and statuses that count for
//! neither side. The HTTP probe itself reuses Pingora's connector.

pub mod check;
pub mod checker;
pub mod probe;
pub mod service;
pub mod state;
pub mod status;
pub mod table;
pub mod target;
pub mod tls;

pub use check::{Check, BACKSTOP};
pub use checker::Checker;
pub use probe::{
    io_report, transport_report, HttpCheck, Outcome, ProbeSpec, ProbeStream, TcpCheck,
};
pub use service::HealthService;
pub use state::{Counters, Health, HealthStatus, Report, Thresholds};
pub use status::{StatusClasses, StatusSet};
pub use table::HealthTable;
pub use target::{Source, Target, TargetId, TargetSpec};
