//! The queries of the DNS registry: one name's A/AAAA or SRV records through the resolver,
//! turned into nodes by the pure rules of [`records`](super::records).
//!
//! Invariant: a resolution either succeeds with at least one node or fails with a reason; it
//! never returns an empty success, so a failed or empty answer can never empty a service.

use super::records::{self, Outcome, Srv, Target};
use crate::node::Node;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use std::collections::HashMap;
use std::net::IpAddr;

/// The result of resolving one service name.
#[derive(Debug)]
pub struct Resolved {
    /// The nodes and the TTL (seconds) they are good for; or why the name keeps what it had
    /// (without the name: the caller says which service it is about).
    pub result: Result<(Vec<Node>, u32), String>,
    /// SRV names: the addresses of each target of the answer (a target whose own lookup
    /// failed keeps the addresses it had), for the next resolution.
    pub targets: HashMap<String, Vec<IpAddr>>,
    /// SRV names: lookups of targets that failed although the name resolved.
    pub partial: Vec<String>,
}

impl Resolved {
    pub fn failed(reason: impl Into<String>) -> Resolved {
        Resolved {
            result: Err(reason.into()),
            targets: HashMap::new(),
            partial: Vec::new(),
        }
    }

    fn ok(nodes: Vec<Node>, ttl: u32) -> Resolved {
        Resolved {
            result: Ok((nodes, ttl)),
            targets: HashMap::new(),
            partial: Vec::new(),
        }
    }
}

/// Resolve `target`; `known` holds the SRV target addresses of the last resolution.
pub async fn resolve(
    r: &TokioResolver,
    target: &Target,
    weight: u32,
    known: &HashMap<String, Vec<IpAddr>>,
) -> Resolved {
    match target {
        Target::Literal(ip, port) => {
            Resolved::ok(vec![Node::new(ip.to_string(), *port, weight, 0)], u32::MAX)
        }
        Target::Host { host, port } => match addresses(r, host).await {
            Outcome::Found(addrs, ttl) => {
                Resolved::ok(records::address_nodes(&addrs, *port, weight), ttl)
            }
            Outcome::Empty => Resolved::failed("no A or AAAA records"),
            Outcome::Failed(e) => Resolved::failed(e),
        },
        Target::Srv(name) => resolve_srv(r, name, known).await,
    }
}

async fn resolve_srv(
    r: &TokioResolver,
    name: &str,
    known: &HashMap<String, Vec<IpAddr>>,
) -> Resolved {
    let (srvs, mut ttl) = match srv_records(r, name).await {
        Outcome::Found(v, ttl) => (records::usable_srvs(name, v), ttl),
        Outcome::Empty => return Resolved::failed("no SRV records"),
        Outcome::Failed(e) => return Resolved::failed(format!("SRV: {e}")),
    };
    if srvs.is_empty() {
        return Resolved::failed("no usable SRV records");
    }
    let mut names: Vec<&str> = srvs.iter().map(|s| s.target.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let lookups = names.iter().map(|t| target_addresses(r, t));
    let answers = futures_util::future::join_all(lookups).await;
    let mut targets = HashMap::new();
    let mut partial = Vec::new();
    for (t, answer) in names.iter().zip(answers) {
        match answer {
            Outcome::Found(addrs, t_ttl) => {
                ttl = ttl.min(t_ttl);
                targets.insert((*t).to_owned(), addrs);
            }
            Outcome::Empty | Outcome::Failed(_) => {
                let why = match answer {
                    Outcome::Failed(e) => e,
                    _ => "no A or AAAA records".to_owned(),
                };
                match known.get(*t) {
                    Some(old) => {
                        partial.push(format!("target {t}: {why}; keeping its addresses"));
                        targets.insert((*t).to_owned(), old.clone());
                    }
                    None => partial.push(format!("target {t}: {why}")),
                }
            }
        }
    }
    let nodes = records::srv_nodes(&srvs, &targets);
    if nodes.is_empty() {
        return Resolved::failed(format!(
            "no SRV target has an address ({})",
            partial.join("; ")
        ));
    }
    Resolved {
        result: Ok((nodes, ttl)),
        targets,
        partial,
    }
}

/// The addresses of an SRV target: an address literal needs no query.
async fn target_addresses(r: &TokioResolver, target: &str) -> Outcome<IpAddr> {
    match target.parse::<IpAddr>() {
        Ok(ip) => Outcome::Found(vec![ip], u32::MAX),
        Err(_) => addresses(r, target).await,
    }
}

/// The A and AAAA records of `host`, queried at once.
async fn addresses(r: &TokioResolver, host: &str) -> Outcome<IpAddr> {
    let (a, aaaa) = tokio::join!(
        r.lookup(host, RecordType::A),
        r.lookup(host, RecordType::AAAA)
    );
    let a = outcome(a, |d| match d {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        _ => None,
    });
    let aaaa = outcome(aaaa, |d| match d {
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    });
    records::combine(a, aaaa)
}

async fn srv_records(r: &TokioResolver, name: &str) -> Outcome<Srv> {
    let answer = r.lookup(name, RecordType::SRV).await;
    outcome(answer, |d| match d {
        RData::SRV(s) => Some(Srv {
            priority: s.priority,
            weight: s.weight,
            port: s.port,
            target: s
                .target
                .to_lowercase()
                .to_ascii()
                .trim_end_matches('.')
                .to_owned(),
        }),
        _ => None,
    })
}

/// A lookup's records of one kind (`pick`), with the lowest TTL of the answer section
/// (CNAMEs on the way included).
fn outcome<T>(
    answer: Result<hickory_resolver::lookup::Lookup, NetError>,
    pick: impl Fn(&RData) -> Option<T>,
) -> Outcome<T> {
    match answer {
        Ok(l) => {
            let found: Vec<T> = l.answers().iter().filter_map(|r| pick(&r.data)).collect();
            if found.is_empty() {
                return Outcome::Empty;
            }
            let ttl = l.answers().iter().map(|r| r.ttl).min().unwrap_or(0);
            Outcome::Found(found, ttl)
        }
        Err(e) if e.is_no_records_found() => Outcome::Empty,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}
