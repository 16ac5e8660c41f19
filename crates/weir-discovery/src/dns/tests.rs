//! The registry's loop against a real UDP name server on 127.0.0.1 (a minimal authoritative
//! responder written here with the resolver's own wire format): re-resolution by TTL, last
//! good on failures, wanted and unwanted names, SRV mapping.

use super::*;
use crate::node::{Node, ServiceRef};
use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, SRV};
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

type Zone = HashMap<(String, RecordType), (u32, Vec<RData>)>;

/// A tiny authoritative server: answers from `zone`, or SERVFAIL when `servfail` is set.
struct Server {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    servfail: Arc<AtomicBool>,
    queries: Arc<AtomicU64>,
    /// Queries by name (lower case, no trailing dot).
    asked: Arc<Mutex<HashMap<String, u64>>>,
    task: tokio::task::JoinHandle<()>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Server {
    async fn start() -> Server {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind udp");
        let addr = sock.local_addr().expect("addr");
        let zone = Arc::new(Mutex::new(Zone::new()));
        let servfail = Arc::new(AtomicBool::new(false));
        let queries = Arc::new(AtomicU64::new(0));
        let asked = Arc::new(Mutex::new(HashMap::new()));
        let (z, f, q, by) = (
            zone.clone(),
            servfail.clone(),
            queries.clone(),
            asked.clone(),
        );
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let Some(req) = buf.get(..n).and_then(|b| Message::from_vec(b).ok()) else {
                    continue;
                };
                q.fetch_add(1, Ordering::SeqCst);
                if let Some(query) = req.queries.first() {
                    *by.lock()
                        .expect("asked")
                        .entry(key(&query.name.to_ascii()))
                        .or_insert(0) += 1;
                }
                let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
                resp.metadata.message_type = MessageType::Response;
                resp.metadata.authoritative = true;
                resp.metadata.recursion_desired = req.metadata.recursion_desired;
                resp.add_queries(req.queries.iter().cloned());
                if f.load(Ordering::SeqCst) {
                    resp.metadata.response_code = ResponseCode::ServFail;
                } else if let Some(query) = req.queries.first() {
                    let name = key(&query.name.to_ascii());
                    let zone = z.lock().expect("zone");
                    match zone.get(&(name.clone(), query.query_type)) {
                        Some((ttl, data)) => {
                            for d in data {
                                resp.add_answer(Record::from_rdata(
                                    query.name.clone(),
                                    *ttl,
                                    d.clone(),
                                ));
                            }
                        }
                        None if !zone.keys().any(|(n, _)| *n == name) => {
                            resp.metadata.response_code = ResponseCode::NXDomain;
                        }
                        None => {}
                    }
                }
                if let Ok(bytes) = resp.to_vec() {
                    let _ = sock.send_to(&bytes, from).await;
                }
            }
        });
        Server {
            addr,
            zone,
            servfail,
            queries,
            asked,
            task,
        }
    }

    fn set(&self, name: &str, t: RecordType, ttl: u32, data: Vec<RData>) {
        let mut z = self.zone.lock().expect("zone");
        if data.is_empty() {
            z.remove(&(key(name), t));
        } else {
            z.insert((key(name), t), (ttl, data));
        }
    }

    fn set_a(&self, name: &str, ips: &[&str], ttl: u32) {
        let data = ips
            .iter()
            .map(|i| RData::A(A(i.parse::<Ipv4Addr>().expect("ipv4"))))
            .collect();
        self.set(name, RecordType::A, ttl, data);
    }

    fn set_aaaa(&self, name: &str, ips: &[&str], ttl: u32) {
        let data = ips
            .iter()
            .map(|i| RData::AAAA(AAAA(i.parse::<Ipv6Addr>().expect("ipv6"))))
            .collect();
        self.set(name, RecordType::AAAA, ttl, data);
    }

    fn set_srv(&self, name: &str, recs: &[(u16, u16, u16, &str)], ttl: u32) {
        let data = recs
            .iter()
            .map(|&(p, w, port, t)| {
                RData::SRV(SRV::new(p, w, port, Name::from_ascii(t).expect("name")))
            })
            .collect();
        self.set(name, RecordType::SRV, ttl, data);
    }

    fn queries(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }

    fn asked(&self, name: &str) -> u64 {
        self.asked
            .lock()
            .expect("asked")
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn config(server: &Server, min_ttl: u64, max_ttl: u64) -> DnsConfig {
    DnsConfig {
        servers: vec![server.addr],
        timeout: Duration::from_millis(500),
        default_weight: 7,
        min_ttl: Duration::from_secs(min_ttl),
        max_ttl: Duration::from_secs(max_ttl),
    }
}

/// Run the registry for `cfg`, wanting `names`.
fn start(cfg: DnsConfig, names: &[&str]) -> (Arc<Feed>, tokio::task::JoinHandle<()>) {
    let feed = Arc::new(Feed::standalone("dns"));
    feed.want(names.iter().map(|n| ServiceRef::named(*n)).collect());
    let dns = Dns::new(cfg);
    let f = feed.clone();
    let task = tokio::spawn(async move { dns.run(f).await });
    (feed, task)
}

/// The nodes of `name`, sorted.
fn nodes(feed: &Feed, name: &str) -> Option<Vec<Node>> {
    let mut v = feed.catalog().get(name)?.to_vec();
    v.sort();
    Some(v)
}

/// Poll `f` every 10 ms until it holds or 10 s pass.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn n(host: &str, port: u16, weight: u32, priority: i64) -> Node {
    Node::new(host, port, weight, priority)
}

#[tokio::test]
async fn resolves_host_names_to_one_node_per_address() {
    let s = Server::start().await;
    s.set_a("api.test", &["10.0.0.1", "10.0.0.2"], 300);
    s.set_aaaa("api.test", &["fd00::1"], 300);
    let (feed, task) = start(config(&s, 1, 3600), &["api.test:8080", "10.9.9.9:81"]);
    eventually("api.test resolved", || {
        nodes(&feed, "api.test:8080").is_some()
    })
    .await;
    assert_eq!(
        nodes(&feed, "api.test:8080"),
        Some(vec![
            n("10.0.0.1", 8080, 7, 0),
            n("10.0.0.2", 8080, 7, 0),
            n("fd00::1", 8080, 7, 0)
        ])
    );
    assert_eq!(
        nodes(&feed, "10.9.9.9:81"),
        Some(vec![n("10.9.9.9", 81, 7, 0)])
    );
    assert_eq!(
        s.queries(),
        2,
        "one A and one AAAA query; the literal needs none"
    );
    task.abort();
}

#[tokio::test]
async fn re_resolves_when_the_clamped_ttl_expires() {
    let s = Server::start().await;
    // A TTL far above max_ttl: the name must still be asked again after max_ttl, and the
    // resolver must not answer from a cache.
    s.set_a("ttl.test", &["10.0.0.1"], 3600);
    let (feed, task) = start(config(&s, 1, 1), &["ttl.test:80"]);
    eventually("first answer", || nodes(&feed, "ttl.test:80").is_some()).await;
    s.set_a("ttl.test", &["10.0.0.2", "10.0.0.3"], 3600);
    eventually("the new address set", || {
        nodes(&feed, "ttl.test:80") == Some(vec![n("10.0.0.2", 80, 7, 0), n("10.0.0.3", 80, 7, 0)])
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn failures_and_empty_answers_keep_the_last_good_nodes() {
    let s = Server::start().await;
    s.set_a("keep.test", &["10.0.0.1"], 1);
    let (feed, task) = start(config(&s, 1, 1), &["keep.test:80"]);
    eventually("first answer", || nodes(&feed, "keep.test:80").is_some()).await;
    let good = nodes(&feed, "keep.test:80");

    s.servfail.store(true, Ordering::SeqCst);
    let before = s.queries();
    eventually("a failed re-resolution", || {
        s.queries() >= before + 4 && feed.status().last_error.is_some()
    })
    .await;
    assert_eq!(nodes(&feed, "keep.test:80"), good);
    s.servfail.store(false, Ordering::SeqCst);

    // An empty answer (the name is gone) keeps the nodes too.
    s.set_a("keep.test", &[], 1);
    let before = s.queries();
    eventually("an empty re-resolution", || s.queries() >= before + 4).await;
    assert_eq!(nodes(&feed, "keep.test:80"), good);

    // The name comes back with another address: the change is applied.
    s.set_a("keep.test", &["10.0.0.5"], 1);
    eventually("recovered", || {
        nodes(&feed, "keep.test:80") == Some(vec![n("10.0.0.5", 80, 7, 0)])
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn follows_the_wanted_set() {
    let s = Server::start().await;
    s.set_a("one.test", &["10.0.0.1"], 3600);
    s.set_a("two.test", &["10.0.0.2"], 3600);
    let (feed, task) = start(config(&s, 1, 3600), &["one.test:80"]);
    eventually("one", || nodes(&feed, "one.test:80").is_some()).await;
    // With TTLs of an hour, only the change of the wanted set can make "two" resolve now.
    feed.want(vec![ServiceRef::named("two.test:80")]);
    eventually("two in, one out", || {
        nodes(&feed, "two.test:80").is_some() && nodes(&feed, "one.test:80").is_none()
    })
    .await;
    assert_eq!(feed.catalog().services.len(), 1);
    task.abort();
}

#[tokio::test]
async fn maps_srv_records_with_priorities_and_weights() {
    let s = Server::start().await;
    s.set_srv(
        "_http._tcp.billing.test",
        &[
            (10, 0, 8080, "a.billing.test."),
            (10, 5, 8081, "b.billing.test."),
            (20, 1, 9090, "backup.billing.test."),
            (10, 1, 8080, "."),
            (10, 1, 0, "a.billing.test."),
        ],
        300,
    );
    s.set_a("a.billing.test", &["10.0.1.1"], 300);
    s.set_a("b.billing.test", &["10.0.1.2", "10.0.1.3"], 300);
    s.set_a("backup.billing.test", &["10.0.2.1"], 300);
    let (feed, task) = start(config(&s, 1, 3600), &["_http._tcp.billing.test"]);
    eventually("srv", || nodes(&feed, "_http._tcp.billing.test").is_some()).await;
    assert_eq!(
        nodes(&feed, "_http._tcp.billing.test"),
        Some(vec![
            n("10.0.1.1", 8080, 1, -10),
            n("10.0.1.2", 8081, 5, -10),
            n("10.0.1.3", 8081, 5, -10),
            n("10.0.2.1", 9090, 1, -20),
        ])
    );
    task.abort();
}

#[tokio::test]
async fn an_srv_target_that_fails_keeps_its_addresses() {
    let s = Server::start().await;
    let srv = "_h._tcp.t.test";
    s.set_srv(srv, &[(1, 1, 80, "x.t.test"), (1, 1, 81, "y.t.test")], 1);
    s.set_a("x.t.test", &["10.0.0.1"], 1);
    s.set_a("y.t.test", &["10.0.0.2"], 1);
    let (feed, task) = start(config(&s, 1, 1), &[srv]);
    eventually("srv", || nodes(&feed, srv).is_some_and(|v| v.len() == 2)).await;
    // y's address records vanish; the SRV answer still names it: it keeps its address.
    s.set_a("y.t.test", &[], 1);
    s.set_srv(
        srv,
        &[
            (1, 1, 80, "x.t.test"),
            (1, 1, 81, "y.t.test"),
            (1, 1, 82, "z.t.test"),
        ],
        1,
    );
    s.set_a("z.t.test", &["10.0.0.3"], 1);
    eventually("z added", || {
        nodes(&feed, srv).is_some_and(|v| v.len() == 3)
    })
    .await;
    assert_eq!(
        nodes(&feed, srv),
        Some(vec![
            n("10.0.0.1", 80, 1, -1),
            n("10.0.0.2", 81, 1, -1),
            n("10.0.0.3", 82, 1, -1)
        ])
    );
    // The SRV record of y goes away: y leaves.
    s.set_srv(srv, &[(1, 1, 80, "x.t.test"), (1, 1, 82, "z.t.test")], 1);
    eventually("y removed", || {
        nodes(&feed, srv).is_some_and(|v| v.len() == 2)
    })
    .await;
    task.abort();
}

#[tokio::test]
async fn resolves_more_names_than_run_at_once() {
    let s = Server::start().await;
    let names: Vec<String> = (0..3 * scheduler::MAX_IN_FLIGHT)
        .map(|i| format!("n{i}.test:80"))
        .collect();
    for (i, _) in names.iter().enumerate() {
        s.set_a(&format!("n{i}.test"), &[&format!("10.0.0.{}", i + 1)], 300);
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let (feed, task) = start(config(&s, 1, 3600), &refs);
    eventually("every name", || {
        feed.catalog().services.len() == names.len()
    })
    .await;
    assert_eq!(
        nodes(&feed, "n3.test:80"),
        Some(vec![n("10.0.0.4", 80, 7, 0)])
    );
    task.abort();
}

#[tokio::test]
async fn invalid_and_unknown_names_have_no_entry_and_the_others_resolve() {
    let s = Server::start().await;
    s.set_a("ok.test", &["10.0.0.1"], 300);
    let wanted = ["bad name:80", "never.test:80", "ok.test:80"];
    let (feed, task) = start(config(&s, 1, 3600), &wanted);
    eventually("ok.test resolved, never.test asked", || {
        nodes(&feed, "ok.test:80").is_some() && s.asked("never.test") >= 2
    })
    .await;
    assert_eq!(feed.catalog().services.len(), 1, "never resolved: no entry");
    assert_eq!(s.asked("ok.test"), 2);
    assert_eq!(
        s.queries(),
        s.asked("ok.test") + s.asked("never.test"),
        "nothing asked for the invalid name"
    );
    task.abort();
}

#[test]
fn dumps_its_configuration() {
    let d = Dns::new(DnsConfig {
        servers: vec!["127.0.0.1:5353".parse().expect("addr")],
        ..DnsConfig::default()
    });
    assert_eq!(
        d.config_dump(),
        serde_json::json!({"servers": ["127.0.0.1:5353"], "timeout": 2000, "default_weight": 1,
                           "min_ttl": 1, "max_ttl": 3600})
    );
    assert_eq!(
        d.servers(),
        ["127.0.0.1:5353".parse::<SocketAddr>().expect("addr")]
    );
    let system = Dns::new(DnsConfig::default());
    assert!(!system.servers().is_empty(), "resolv.conf, or 127.0.0.1:53");
    assert!(system.config_dump().get("system_servers").is_some());
}
