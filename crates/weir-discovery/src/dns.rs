//! The DNS registry (in progress).

use std::net::SocketAddr;
use std::time::Duration;

/// `discovery.dns` (always present: the system resolver's servers when the block is absent).
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// UDP (TCP on truncation) name servers; empty: the `nameserver` lines of
    /// `/etc/resolv.conf`.
    pub servers: Vec<SocketAddr>,
    /// Per query.
    pub timeout: Duration,
    /// Weight of A/AAAA results for `discovery_type: dns`.
    pub default_weight: u32,
    /// A record is re-resolved when its TTL, clamped to this range, expires.
    pub min_ttl: Duration,
    pub max_ttl: Duration,
}
