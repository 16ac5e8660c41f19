//! `discovery.dns`: the resolver of `discovery_type: dns` and of host-name nodes.

use super::millis;
use crate::reader::{self, Cx, Obj};
use serde::Serialize;
use std::time::Duration;

/// `discovery.dns`: the resolver of `discovery_type: dns` and of host-name nodes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DnsConfig {
    /// Name servers (`ip:port`); empty: the `nameserver` lines of `/etc/resolv.conf`.
    pub servers: Vec<std::net::SocketAddr>,
    pub timeout: Duration,
    pub default_weight: u32,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            servers: Vec::new(),
            timeout: Duration::from_millis(2000),
            default_weight: 1,
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(3600),
        }
    }
}

/// `host:port` (A/AAAA) or an SRV name starting with `_`.
pub(super) fn check_dns_service(name: &str) -> Result<(), String> {
    if name.starts_with('_') {
        return Ok(());
    }
    let ok = name
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be host:port (A/AAAA) or an SRV name such as _http._tcp.example (starting with \"_\"), got {name:?}"
        ))
    }
}

fn secs_ttl(o: &mut Obj<'_>, cx: &mut Cx, k: &str, default: u64) -> Duration {
    Duration::from_secs(o.uint(cx, k, 1, 86400 * 7).unwrap_or(default))
}

pub(super) fn parse_dns(mut o: Obj<'_>, cx: &mut Cx) -> DnsConfig {
    let mut d = DnsConfig::default();
    if let Some((v, p)) = o.take("servers") {
        d.servers = reader::list(v, &p, cx, 0, |x, xp, cx| {
            let s = reader::string(x, xp, cx)?;
            match s.parse::<std::net::SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    cx.err(
                        xp,
                        format!(
                            "must be an address like \"127.0.0.1:53\" or \"[::1]:53\", got {s:?}"
                        ),
                    );
                    None
                }
            }
        })
        .unwrap_or_default();
    }
    d.timeout = millis(&mut o, cx, "timeout", 2000);
    d.default_weight = o
        .uint(cx, "default_weight", 0, u32::MAX as u64)
        .unwrap_or(1) as u32;
    d.min_ttl = secs_ttl(&mut o, cx, "min_ttl", 1);
    d.max_ttl = secs_ttl(&mut o, cx, "max_ttl", 3600);
    if d.min_ttl > d.max_ttl {
        cx.err(
            &o.path.field("min_ttl"),
            format!(
                "must be <= max_ttl ({}), got {}",
                d.max_ttl.as_secs(),
                d.min_ttl.as_secs()
            ),
        );
    }
    o.finish(cx);
    d
}
