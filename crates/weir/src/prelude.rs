//! The names most programs that embed or extend Weir need: `use weir::prelude::*;`.

pub use crate::{Error, Weir, WeirBuilder};
pub use pingora::server::configuration::Opt;
pub use pingora::server::Server;
pub use weir_balance::{Algorithm, Eligible, LevelNode, LevelSelector, NoParams, NodeState};
pub use weir_config::Config;
pub use weir_discovery::{Feed, Node as DiscoveredNode, Registry, ServiceRef};
pub use weir_health::{
    Check as HealthCheck, ProbeSpec, ProbeStream, Report as HealthReport, Target as HealthTarget,
};
pub use weir_proxy::{Hook, HookCtx, Plugin, RequestCtx, SnapshotHandle, WeirProxy};
