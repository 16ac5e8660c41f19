//! Pure parts of the DNS registry: what a service name asks for, how answers become nodes,
//! and when a name is asked again. No I/O here, so every rule is tested with exact fixtures.
//!
//! Invariants: nothing here panics on any input (names and records come from configuration
//! and from the network); an invalid record is skipped with a warning and never stops the
//! others from being used.

use crate::node::Node;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The shortest delay between two resolutions of one name, whatever the configuration says:
/// the loop never spins.
pub const FLOOR: Duration = Duration::from_millis(100);

/// The longest delay before a failed name is tried again.
const RETRY_CAP: Duration = Duration::from_secs(30);

/// What one service name asks the resolver for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `10.0.0.1:80`, `[::1]:80`: a node without any query.
    Literal(IpAddr, u16),
    /// `host:port`: the A and AAAA records of `host`, one node per address.
    Host { host: String, port: u16 },
    /// `_service._proto.name`: the SRV records of the name, each target resolved to addresses.
    Srv(String),
}

/// Parse a service name: `_…` is an SRV name, anything else `host:port` (IPv6 literals in
/// brackets, or bare when unambiguous such as `::1:80` is not: use `[::1]:80`).
pub fn parse_target(name: &str) -> Result<Target, String> {
    if name.starts_with('_') {
        return check_name(name).map(|()| Target::Srv(name.to_owned()));
    }
    let Some((host, port)) = name.rsplit_once(':') else {
        return Err(format!(
            "{name:?}: must be host:port or an SRV name starting with \"_\""
        ));
    };
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("{name:?}: invalid port {port:?}")),
    };
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Target::Literal(ip, port));
    }
    check_name(host)?;
    Ok(Target::Host {
        host: host.to_owned(),
        port,
    })
}

/// A DNS name as nodes accept it (labels of letters, digits, `-` and `_`).
fn check_name(name: &str) -> Result<(), String> {
    Node::new(name, 1, 1, 0)
        .check()
        .map_err(|_| format!("{name:?}: invalid DNS name"))
}

/// One SRV record as the registry uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Lower case, without the trailing dot; `"."` (empty here) means "no service".
    pub target: String,
}

/// Why an SRV record cannot be used, if it cannot.
pub fn check_srv(srv: &Srv) -> Result<(), String> {
    if srv.target.is_empty() || srv.target == "." {
        return Err("target \".\" (no service at this name)".to_owned());
    }
    if srv.port == 0 {
        return Err(format!("target {}: port 0", srv.target));
    }
    check_name(&srv.target).map_err(|e| format!("target {e}"))
}

/// The usable SRV records of `name`'s answer, lower priority values first (stable: answer
/// order within a priority). Invalid ones are skipped with a warning.
pub fn usable_srvs(name: &str, records: Vec<Srv>) -> Vec<Srv> {
    let mut ok: Vec<Srv> = records
        .into_iter()
        .filter(|s| match check_srv(s) {
            Ok(()) => true,
            Err(e) => {
                log::warn!("discovery dns: {name}: SRV record skipped: {e}");
                false
            }
        })
        .collect();
    ok.sort_by_key(|s| s.priority);
    ok
}

/// One node per distinct address, in answer order: `{ip, port, weight, priority 0}`.
pub fn address_nodes(addrs: &[IpAddr], port: u16, weight: u32) -> Vec<Node> {
    let mut seen = Vec::with_capacity(addrs.len());
    for a in addrs {
        if !seen.contains(a) {
            seen.push(*a);
        }
    }
    seen.into_iter()
        .map(|a| Node::new(a.to_string(), port, weight, 0))
        .collect()
}

/// The nodes of an SRV answer: for each record (as [`usable_srvs`] returns them), one node per
/// address of its target with the record's port, its weight (0 becomes 1) and priority
/// `-priority` (nodes prefer higher priorities, SRV lower values). A target without known
/// addresses contributes nothing; a duplicate `address:port` keeps its first (preferred) record.
pub fn srv_nodes(srvs: &[Srv], addrs: &HashMap<String, Vec<IpAddr>>) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::new();
    for s in srvs {
        let Some(list) = addrs.get(&s.target) else {
            continue;
        };
        for a in list {
            let host = a.to_string();
            if out.iter().any(|n| n.host == host && n.port == s.port) {
                continue;
            }
            out.push(Node::new(
                host,
                s.port,
                u32::from(s.weight.max(1)),
                -i64::from(s.priority),
            ));
        }
    }
    out
}

/// What one query found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<T> {
    /// Records, and the lowest TTL among them and the CNAMEs leading to them (seconds).
    Found(Vec<T>, u32),
    /// A successful answer without records of the type (NXDOMAIN or no data).
    Empty,
    /// No answer: timeout, connection error, SERVFAIL, malformed response.
    Failed(String),
}

/// The addresses of a host from its A and AAAA answers: any failure fails the whole lookup
/// (a timed-out A query must not drop the IPv4 addresses while AAAA answered), both empty is
/// empty, else the union (A first) with the lower TTL.
pub fn combine(a: Outcome<IpAddr>, aaaa: Outcome<IpAddr>) -> Outcome<IpAddr> {
    match (a, aaaa) {
        (Outcome::Failed(e), _) | (_, Outcome::Failed(e)) => Outcome::Failed(e),
        (Outcome::Empty, Outcome::Empty) => Outcome::Empty,
        (Outcome::Found(v, t), Outcome::Empty) | (Outcome::Empty, Outcome::Found(v, t)) => {
            Outcome::Found(v, t)
        }
        (Outcome::Found(mut v4, t4), Outcome::Found(v6, t6)) => {
            v4.extend(v6);
            Outcome::Found(v4, t4.min(t6))
        }
    }
}

/// When a name that resolved with `ttl_secs` is asked again: the TTL clamped to
/// `[min_ttl, max_ttl]` (a `min_ttl` above `max_ttl` loses to it), never below [`FLOOR`].
pub fn refresh_after(ttl_secs: u32, min_ttl: Duration, max_ttl: Duration) -> Duration {
    Duration::from_secs(u64::from(ttl_secs))
        .max(min_ttl)
        .min(max_ttl)
        .max(FLOOR)
}

/// When a name whose last `failures` (≥ 1) resolutions failed is tried again: 1 s doubling,
/// capped at 30 s and at `max_ttl`, at least `min_ttl` (and [`FLOOR`]).
pub fn retry_after(failures: u32, min_ttl: Duration, max_ttl: Duration) -> Duration {
    let shift = failures.saturating_sub(1).min(16);
    let step = Duration::from_secs(1u64 << shift);
    step.min(RETRY_CAP).max(min_ttl).min(max_ttl).max(FLOOR)
}

/// What `/etc/resolv.conf` says that the registry uses when no servers are configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemConf {
    /// `nameserver` lines, port 53.
    pub servers: Vec<SocketAddr>,
    /// `search` (or `domain` when there is no `search`) suffixes for names with few dots.
    pub search: Vec<String>,
    /// `options ndots:N`.
    pub ndots: Option<usize>,
}

/// Parse resolv.conf text; unknown and malformed lines are ignored, as the C library does.
/// No `nameserver` line means the local server `127.0.0.1:53` (the C library's default).
pub fn parse_resolv_conf(text: &str) -> SystemConf {
    let mut c = SystemConf::default();
    let mut domain = None;
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                // A link-local IPv6 address may carry `%iface`; the scope is not kept.
                let ip = words.next().map(|w| w.split('%').next().unwrap_or(w));
                if let Some(ip) = ip.and_then(|w| w.parse::<IpAddr>().ok()) {
                    c.servers.push(SocketAddr::new(ip, 53));
                }
            }
            Some("search") => c.search = words.map(str::to_owned).collect(),
            Some("domain") => domain = words.next().map(str::to_owned),
            Some("options") => {
                for o in words {
                    if let Some(n) = o.strip_prefix("ndots:").and_then(|n| n.parse().ok()) {
                        c.ndots = Some(n);
                    }
                }
            }
            _ => {}
        }
    }
    if c.search.is_empty() {
        c.search.extend(domain);
    }
    if c.servers.is_empty() {
        c.servers.push(SocketAddr::from(([127, 0, 0, 1], 53)));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port,
            target: target.to_owned(),
        }
    }

    #[test]
    fn parses_service_names() {
        assert_eq!(
            parse_target("api.internal:8080"),
            Ok(Target::Host {
                host: "api.internal".into(),
                port: 8080
            })
        );
        assert_eq!(
            parse_target("10.0.0.1:80"),
            Ok(Target::Literal(ip("10.0.0.1"), 80))
        );
        assert_eq!(
            parse_target("[::1]:443"),
            Ok(Target::Literal(ip("::1"), 443))
        );
        assert_eq!(
            parse_target("_http._tcp.billing.svc"),
            Ok(Target::Srv("_http._tcp.billing.svc".into()))
        );
        for bad in [
            "api.internal",
            "api.internal:0",
            "api.internal:99999",
            "api.internal:x",
            ":80",
            "a b:80",
            "_x..y",
            "",
        ] {
            assert!(parse_target(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn checks_srv_records() {
        assert!(check_srv(&srv(10, 5, 8080, "a.example")).is_ok());
        assert!(check_srv(&srv(10, 5, 8080, "")).is_err(), "root target");
        assert!(check_srv(&srv(10, 5, 0, "a.example")).is_err(), "port 0");
        assert!(check_srv(&srv(10, 5, 80, "a..example")).is_err());
        let kept = usable_srvs(
            "_h._tcp.x",
            vec![
                srv(20, 1, 80, "b.x"),
                srv(10, 1, 80, ""),
                srv(10, 1, 81, "a.x"),
                srv(20, 1, 0, "c.x"),
                srv(10, 2, 82, "c.x"),
            ],
        );
        assert_eq!(
            kept,
            vec![
                srv(10, 1, 81, "a.x"),
                srv(10, 2, 82, "c.x"),
                srv(20, 1, 80, "b.x")
            ]
        );
    }

    #[test]
    fn maps_addresses_to_nodes() {
        let nodes = address_nodes(&[ip("10.0.0.1"), ip("::1"), ip("10.0.0.1")], 8080, 3);
        assert_eq!(
            nodes,
            vec![
                Node::new("10.0.0.1", 8080, 3, 0),
                Node::new("::1", 8080, 3, 0)
            ]
        );
        assert!(address_nodes(&[], 80, 1).is_empty());
    }

    #[test]
    fn maps_srv_records_to_nodes() {
        let addrs = HashMap::from([
            ("a.x".to_owned(), vec![ip("10.0.0.1"), ip("10.0.0.2")]),
            ("b.x".to_owned(), vec![ip("10.0.0.3")]),
            ("dup.x".to_owned(), vec![ip("10.0.0.1")]),
        ]);
        let srvs = vec![
            srv(0, 0, 8080, "a.x"),
            srv(10, 5, 9090, "b.x"),
            srv(10, 7, 8080, "dup.x"),
            srv(20, 1, 80, "unresolved.x"),
        ];
        assert_eq!(
            srv_nodes(&srvs, &addrs),
            vec![
                Node::new("10.0.0.1", 8080, 1, 0),
                Node::new("10.0.0.2", 8080, 1, 0),
                Node::new("10.0.0.3", 9090, 5, -10),
            ]
        );
        assert_eq!(
            srv_nodes(&[srv(u16::MAX, u16::MAX, 1, "b.x")], &addrs),
            vec![Node::new("10.0.0.3", 1, 65535, -65535)]
        );
    }

    #[test]
    fn combines_a_and_aaaa() {
        let v4 = || Outcome::Found(vec![ip("10.0.0.1")], 30);
        let v6 = || Outcome::Found(vec![ip("::1")], 20);
        let fail = || Outcome::Failed("timeout".to_owned());
        assert_eq!(
            combine(v4(), v6()),
            Outcome::Found(vec![ip("10.0.0.1"), ip("::1")], 20)
        );
        assert_eq!(combine(v4(), Outcome::Empty), v4());
        assert_eq!(combine(Outcome::Empty, v6()), v6());
        assert_eq!(combine(Outcome::Empty, Outcome::Empty), Outcome::Empty);
        assert_eq!(combine(v4(), fail()), fail());
        assert_eq!(combine(fail(), v6()), fail());
        assert_eq!(combine(fail(), Outcome::Empty), fail());
    }

    #[test]
    fn clamps_ttls() {
        let s = Duration::from_secs;
        assert_eq!(refresh_after(30, s(1), s(3600)), s(30));
        assert_eq!(refresh_after(0, s(1), s(3600)), s(1));
        assert_eq!(refresh_after(86400, s(1), s(3600)), s(3600));
        assert_eq!(refresh_after(u32::MAX, s(1), s(3600)), s(3600));
        // A minimum above the maximum loses to it; nothing goes below the floor.
        assert_eq!(refresh_after(5, s(10), s(2)), s(2));
        assert_eq!(refresh_after(0, s(0), s(0)), FLOOR);
    }

    #[test]
    fn backs_off_failed_names() {
        let s = Duration::from_secs;
        let seq: Vec<u64> = (1..=8)
            .map(|n| retry_after(n, s(1), s(3600)).as_secs())
            .collect();
        assert_eq!(seq, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(retry_after(u32::MAX, s(1), s(3600)), s(30));
        assert_eq!(retry_after(5, s(1), s(3)), s(3), "capped at max_ttl");
        assert_eq!(retry_after(1, s(5), s(3600)), s(5), "at least min_ttl");
        assert_eq!(retry_after(1, s(10), s(2)), s(2), "max_ttl wins");
        assert_eq!(retry_after(1, s(0), s(0)), FLOOR);
    }

    #[test]
    fn parses_resolv_conf() {
        let c = parse_resolv_conf(
            "# generated\nnameserver 10.96.0.10\nnameserver fe80::1%eth0\nnameserver bogus\n\
             search shop.svc.cluster.local svc.cluster.local\noptions ndots:5 timeout:1\n\
             domain ignored.example ; comment\n",
        );
        assert_eq!(
            c,
            SystemConf {
                servers: vec![
                    "10.96.0.10:53".parse().expect("addr"),
                    "[fe80::1]:53".parse().expect("addr")
                ],
                search: vec!["shop.svc.cluster.local".into(), "svc.cluster.local".into()],
                ndots: Some(5),
            }
        );
        let d = parse_resolv_conf("domain corp.example\n");
        assert_eq!(d.search, vec!["corp.example".to_owned()]);
        assert_eq!(d.servers, vec!["127.0.0.1:53".parse().expect("addr")]);
        assert_eq!(d.ndots, None);
    }
}
