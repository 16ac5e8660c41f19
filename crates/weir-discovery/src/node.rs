//! What a registry finds ([`Node`]) and what an upstream asks for ([`ServiceRef`]).

use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One discovered instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Node {
    /// An IP address (IPv6 without brackets) or a host name.
    pub host: String,
    pub port: u16,
    /// The instance's share: 0 means "never picked while another node can be".
    pub weight: u32,
    /// Higher is preferred; nodes of a lower priority serve only when no higher one can.
    pub priority: i64,
    /// What the registry says about the instance (Consul `Meta`, Nacos `metadata`, ...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl Node {
    /// A node with no metadata.
    pub fn new(host: impl Into<String>, port: u16, weight: u32, priority: i64) -> Node {
        Node {
            host: host.into(),
            port,
            weight,
            priority,
            metadata: BTreeMap::new(),
        }
    }

    /// Why this node cannot be used, if it cannot: an empty or malformed host, port 0. The
    /// registries skip such instances with a warning and keep the rest.
    pub fn check(&self) -> Result<(), String> {
        if self.port == 0 {
            return Err(format!("{}: port 0", self.host));
        }
        if self.host.parse::<IpAddr>().is_ok() {
            return Ok(());
        }
        let h = self.host.trim_end_matches('.');
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if h.is_empty() || h.len() > 253 || !h.split('.').all(label_ok) {
            return Err(format!("invalid host {:?}", self.host));
        }
        Ok(())
    }

    /// The sort key of change detection: host, port, weight, priority.
    pub(crate) fn identity(&self) -> (&str, u16, u32, i64) {
        (&self.host, self.port, self.weight, self.priority)
    }
}

/// A service as an upstream names it: `service_name`, the registry-specific
/// `discovery_args` (Nacos `namespace_id` and `group_name`), and whether the upstream speaks
/// gRPC (Nacos then uses an instance's `metadata.gRPC_port`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceRef {
    pub name: String,
    pub args: BTreeMap<String, String>,
    pub grpc: bool,
}

impl ServiceRef {
    /// A service named `name` with no arguments.
    pub fn named(name: impl Into<String>) -> ServiceRef {
        ServiceRef {
            name: name.into(),
            args: BTreeMap::new(),
            grpc: false,
        }
    }

    /// The argument `key`, or `default`.
    pub fn arg<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.args.get(key).map(String::as_str).unwrap_or(default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_hosts_and_ports() {
        assert!(Node::new("10.0.0.1", 80, 1, 0).check().is_ok());
        assert!(Node::new("::1", 80, 1, 0).check().is_ok());
        assert!(Node::new("web-1.shop.svc.cluster.local.", 80, 1, 0)
            .check()
            .is_ok());
        for bad in ["", "a b", "-x.example", "x..y", "[::1]", "10.0.0.1:80"] {
            assert!(Node::new(bad, 80, 1, 0).check().is_err(), "{bad:?}");
        }
        assert!(Node::new("10.0.0.1", 0, 1, 0).check().is_err());
    }
}
