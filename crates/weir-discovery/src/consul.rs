//! The Consul registry (in progress).

use std::time::Duration;

/// How Consul nodes are ordered (`sort_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortType {
    /// Response order.
    #[default]
    Origin,
    HostSort,
    PortSort,
    /// Host, then port.
    CombineSort,
}

/// `discovery.consul`.
#[derive(Debug, Clone)]
pub struct ConsulConfig {
    /// Base URLs, `http://host:port` (no path), one Consul cluster.
    pub servers: Vec<String>,
    /// `X-Consul-Token` when non-empty. A secret: never logged or dumped.
    pub token: String,
    /// Blocking queries (true) or polling every `fetch_interval`.
    pub keepalive: bool,
    pub fetch_interval: Duration,
    /// Given to every instance.
    pub weight: u32,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// A blocking query's `wait`; its read deadline is `wait + read_timeout`.
    pub wait: Duration,
    pub sort_type: SortType,
    /// Never fetched (`consul` is always skipped).
    pub skip_services: Vec<String>,
    /// Served for unknown services instead of 503.
    pub default_service: Option<crate::Node>,
}
