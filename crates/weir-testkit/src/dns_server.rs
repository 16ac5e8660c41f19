//! A real authoritative DNS server for tests, on 127.0.0.1: UDP and TCP on one ephemeral
//! port, records (A, AAAA, SRV, CNAME, each set with its TTL) changed at runtime, and switchable
//! failures: SERVFAIL, REFUSED, dropped queries (the client times out), garbage answers,
//! truncated UDP answers (the client must retry over TCP), and stop/restart on the same port.
//! Every query is recorded (name, type, transport) so tests can assert on what was asked.
//!
//! Written on std sockets with hickory-proto for the wire format rather than hickory-server:
//! the whole server is one function from query bytes to answer bytes, which makes every
//! failure mode a line of code, and it adds no crate besides the wire format the resolver
//! already uses.

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How the server answers (for every name, or for one name with [`DnsServer::set_name_mode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsMode {
    /// Answer from the records: NXDOMAIN for an unknown name, no data for a known name
    /// without records of the type asked.
    Answer,
    /// Answer SERVFAIL.
    ServFail,
    /// Answer REFUSED.
    Refused,
    /// Read the query and never answer (the client times out).
    Drop,
    /// Answer bytes that carry the query's id but are not a DNS message.
    Garbage,
    /// Over UDP, answer with the TC bit and no records; over TCP, answer normally.
    TruncateUdp,
}

/// One query the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuery {
    /// Lower case, without the trailing dot.
    pub name: String,
    /// `A`, `AAAA`, `SRV`, ...
    pub qtype: String,
    pub tcp: bool,
}

type Zone = HashMap<(String, RecordType), (u32, Vec<RData>)>;

struct Shared {
    zone: Mutex<Zone>,
    mode: Mutex<DnsMode>,
    name_modes: Mutex<HashMap<String, DnsMode>>,
    seen: Mutex<Vec<DnsQuery>>,
}

/// The threads of a started server.
struct Running {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

/// A running DNS server. Dropping it stops it.
pub struct DnsServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    running: Mutex<Option<Running>>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn fqdn(name: &str) -> Name {
    let n = if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    };
    Name::from_ascii(&n).unwrap_or_else(|e| panic!("bad DNS name {name:?}: {e}"))
}

impl DnsServer {
    /// Start a server on 127.0.0.1, UDP and TCP on the same ephemeral port, without records.
    pub fn start() -> DnsServer {
        for _ in 0..100 {
            let Ok(udp) = UdpSocket::bind("127.0.0.1:0") else {
                continue;
            };
            let Ok(addr) = udp.local_addr() else { continue };
            let Ok(tcp) = TcpListener::bind(addr) else {
                continue;
            };
            let s = DnsServer {
                addr,
                shared: Arc::new(Shared {
                    zone: Mutex::new(Zone::new()),
                    mode: Mutex::new(DnsMode::Answer),
                    name_modes: Mutex::new(HashMap::new()),
                    seen: Mutex::new(Vec::new()),
                }),
                running: Mutex::new(None),
            };
            s.serve(udp, tcp);
            return s;
        }
        panic!("no free UDP+TCP port pair on 127.0.0.1");
    }

    /// `ip:port`, as `discovery.dns.servers` takes it.
    pub fn server(&self) -> String {
        self.addr.to_string()
    }

    /// Replace the A records of `name` (empty: remove them).
    pub fn set_a(&self, name: &str, ips: &[&str], ttl: u32) {
        let data = ips
            .iter()
            .map(|i| RData::A(A(i.parse::<Ipv4Addr>().expect("an IPv4 address"))))
            .collect();
        self.set(name, RecordType::A, ttl, data);
    }

    /// Replace the AAAA records of `name` (empty: remove them).
    pub fn set_aaaa(&self, name: &str, ips: &[&str], ttl: u32) {
        let data = ips
            .iter()
            .map(|i| RData::AAAA(AAAA(i.parse::<Ipv6Addr>().expect("an IPv6 address"))))
            .collect();
        self.set(name, RecordType::AAAA, ttl, data);
    }

    /// Replace the SRV records of `name`: `(priority, weight, port, target)`; the target `"."`
    /// is the root (no service). Empty: remove them.
    pub fn set_srv(&self, name: &str, records: &[(u16, u16, u16, &str)], ttl: u32) {
        let data = records
            .iter()
            .map(|&(p, w, port, t)| RData::SRV(SRV::new(p, w, port, fqdn(t))))
            .collect();
        self.set(name, RecordType::SRV, ttl, data);
    }

    /// Make `name` an alias of `target` (`None`: remove the alias).
    pub fn set_cname(&self, name: &str, target: Option<&str>, ttl: u32) {
        let data = target
            .map(|t| vec![RData::CNAME(CNAME(fqdn(t)))])
            .unwrap_or_default();
        self.set(name, RecordType::CNAME, ttl, data);
    }

    /// Remove every record of `name` (it is then NXDOMAIN).
    pub fn remove(&self, name: &str) {
        let k = key(name);
        self.zone().retain(|(n, _), _| *n != k);
    }

    fn set(&self, name: &str, t: RecordType, ttl: u32, data: Vec<RData>) {
        let mut z = self.zone();
        if data.is_empty() {
            z.remove(&(key(name), t));
        } else {
            z.insert((key(name), t), (ttl, data));
        }
    }

    fn zone(&self) -> std::sync::MutexGuard<'_, Zone> {
        self.shared.zone.lock().expect("zone lock")
    }

    /// How every name is answered (unless it has a mode of its own).
    pub fn set_mode(&self, m: DnsMode) {
        *self.shared.mode.lock().expect("mode lock") = m;
    }

    /// How `name` is answered; `None`: as every name.
    pub fn set_name_mode(&self, name: &str, m: Option<DnsMode>) {
        let mut modes = self.shared.name_modes.lock().expect("mode lock");
        match m {
            Some(m) => modes.insert(key(name), m),
            None => modes.remove(&key(name)),
        };
    }

    /// Every query received, oldest first.
    pub fn seen(&self) -> Vec<DnsQuery> {
        self.shared.seen.lock().expect("seen lock").clone()
    }

    /// Queries received for `name`, of any type.
    pub fn queries(&self, name: &str) -> usize {
        let k = key(name);
        self.seen().iter().filter(|q| q.name == k).count()
    }

    /// Queries received for `name` of type `qtype` (`"A"`, `"SRV"`, ...).
    pub fn queries_of(&self, name: &str, qtype: &str) -> usize {
        let k = key(name);
        self.seen()
            .iter()
            .filter(|q| q.name == k && q.qtype == qtype)
            .count()
    }

    /// Stop answering: both sockets are closed (queries are refused by the OS or time out).
    pub fn stop(&self) {
        let Some(r) = self.running.lock().expect("running lock").take() else {
            return;
        };
        r.stop.store(true, Ordering::SeqCst);
        for c in r.conns.lock().expect("conns lock").drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        for t in r.threads {
            let _ = t.join();
        }
    }

    /// Start again on the same port, with the same records and modes.
    pub fn restart(&self) {
        self.stop();
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let bound = UdpSocket::bind(self.addr)
                .and_then(|u| TcpListener::bind(self.addr).map(|t| (u, t)));
            match bound {
                Ok((udp, tcp)) => return self.serve(udp, tcp),
                Err(e) if Instant::now() > end => panic!("cannot rebind {}: {e}", self.addr),
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn serve(&self, udp: UdpSocket, tcp: TcpListener) {
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let _ = udp.set_read_timeout(Some(Duration::from_millis(20)));
        let _ = tcp.set_nonblocking(true);
        let (s1, st1) = (Arc::clone(&self.shared), Arc::clone(&stop));
        let udp_thread = thread::spawn(move || serve_udp(&udp, &s1, &st1));
        let (s2, st2, c2) = (
            Arc::clone(&self.shared),
            Arc::clone(&stop),
            Arc::clone(&conns),
        );
        let tcp_thread = thread::spawn(move || serve_tcp(&tcp, &s2, &st2, &c2));
        *self.running.lock().expect("running lock") = Some(Running {
            stop,
            threads: vec![udp_thread, tcp_thread],
            conns,
        });
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_udp(sock: &UdpSocket, shared: &Shared, stop: &AtomicBool) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        if let Some(out) = buf.get(..n).and_then(|q| respond(shared, q, false)) {
            let _ = sock.send_to(&out, from);
        }
    }
}

fn serve_tcp(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    stop: &Arc<AtomicBool>,
    conns: &Arc<Mutex<Vec<TcpStream>>>,
) {
    let mut workers = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((s, _)) => {
                if let Ok(c) = s.try_clone() {
                    conns.lock().expect("conns lock").push(c);
                }
                let (shared, stop) = (Arc::clone(shared), Arc::clone(stop));
                workers.push(thread::spawn(move || serve_conn(s, &shared, &stop)));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
    for w in workers {
        let _ = w.join();
    }
}

/// Length-prefixed messages on one TCP connection.
fn serve_conn(mut s: TcpStream, shared: &Shared, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(20)));
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => pending.extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return,
        }
        while pending.len() >= 2 {
            let len = usize::from(u16::from_be_bytes([pending[0], pending[1]]));
            if pending.len() < 2 + len {
                break;
            }
            let msg: Vec<u8> = pending.drain(..2 + len).skip(2).collect();
            if let Some(out) = respond(shared, &msg, true) {
                let Ok(len) = u16::try_from(out.len()) else {
                    continue;
                };
                let mut framed = len.to_be_bytes().to_vec();
                framed.extend_from_slice(&out);
                if s.write_all(&framed).is_err() {
                    return;
                }
            }
        }
    }
}

/// The answer to one query message, or `None` to send nothing.
fn respond(shared: &Shared, bytes: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let req = Message::from_vec(bytes).ok()?;
    let q = req.queries.first()?.clone();
    let name = key(&q.name.to_ascii());
    shared.seen.lock().ok()?.push(DnsQuery {
        name: name.clone(),
        qtype: q.query_type.to_string(),
        tcp,
    });
    let mode = shared
        .name_modes
        .lock()
        .ok()?
        .get(&name)
        .copied()
        .unwrap_or(*shared.mode.lock().ok()?);
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.message_type = MessageType::Response;
    resp.metadata.authoritative = true;
    resp.metadata.recursion_desired = req.metadata.recursion_desired;
    resp.add_query(q.clone());
    if let Some(e) = &req.edns {
        resp.set_edns(e.clone());
    }
    match mode {
        DnsMode::Drop => return None,
        DnsMode::Garbage => {
            let mut g = req.metadata.id.to_be_bytes().to_vec();
            g.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 3, 0, 0, 0, 0, 0xff, 0xfe, 0xfd]);
            return Some(g);
        }
        DnsMode::ServFail => resp.metadata.response_code = ResponseCode::ServFail,
        DnsMode::Refused => resp.metadata.response_code = ResponseCode::Refused,
        DnsMode::TruncateUdp if !tcp => resp.metadata.truncation = true,
        DnsMode::Answer | DnsMode::TruncateUdp => {
            let zone = shared.zone.lock().ok()?;
            answer(&zone, &q.name, q.query_type, &mut resp);
        }
    }
    let out = resp.to_vec().ok()?;
    let limit = req
        .edns
        .as_ref()
        .map_or(512, |e| usize::from(e.max_payload().max(512)));
    if !tcp && out.len() > limit {
        let mut t = Message::response(req.metadata.id, req.metadata.op_code);
        t.metadata.message_type = MessageType::Response;
        t.metadata.truncation = true;
        t.add_query(q);
        return t.to_vec().ok();
    }
    Some(out)
}

/// Fill `resp` for `qname`/`qtype`: follows CNAMEs (up to 8) within the zone.
fn answer(zone: &Zone, qname: &Name, qtype: RecordType, resp: &mut Message) {
    let mut owner = qname.clone();
    for _ in 0..8 {
        let k = key(&owner.to_ascii());
        if let Some((ttl, data)) = zone.get(&(k.clone(), qtype)) {
            for d in data {
                resp.add_answer(Record::from_rdata(owner.clone(), *ttl, d.clone()));
            }
            return;
        }
        match zone.get(&(k.clone(), RecordType::CNAME)) {
            Some((ttl, data)) if qtype != RecordType::CNAME => {
                let Some(first @ RData::CNAME(CNAME(target))) = data.first() else {
                    return;
                };
                resp.add_answer(Record::from_rdata(owner.clone(), *ttl, first.clone()));
                owner = target.clone();
            }
            _ => {
                if !zone.keys().any(|(n, _)| *n == k) {
                    resp.metadata.response_code = ResponseCode::NXDomain;
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(fqdn(name), t));
        m.to_vec().expect("encode")
    }

    /// One UDP exchange; `None` when no answer comes within 300 ms.
    fn udp(s: &DnsServer, name: &str, t: RecordType) -> Option<Message> {
        let c = UdpSocket::bind("127.0.0.1:0").expect("bind");
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        c.send_to(&query(name, t), s.addr).expect("send");
        let mut buf = [0u8; 4096];
        let (n, _) = c.recv_from(&mut buf).ok()?;
        Some(Message::from_vec(&buf[..n]).expect("a DNS message"))
    }

    fn tcp(s: &DnsServer, name: &str, t: RecordType) -> Message {
        let mut c = TcpStream::connect(s.addr).expect("connect");
        let q = query(name, t);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        c.write_all(&framed).expect("write");
        let mut len = [0u8; 2];
        c.read_exact(&mut len).expect("length");
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        c.read_exact(&mut body).expect("body");
        Message::from_vec(&body).expect("a DNS message")
    }

    fn addrs(m: &Message) -> Vec<(String, u32)> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some((a.0.to_string(), r.ttl)),
                RData::AAAA(a) => Some((a.0.to_string(), r.ttl)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn answers_records_and_negative_answers() {
        let s = DnsServer::start();
        s.set_a("api.test", &["10.0.0.1", "10.0.0.2"], 30);
        let m = udp(&s, "API.test", RecordType::A).expect("answer");
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            addrs(&m),
            [("10.0.0.1".to_owned(), 30), ("10.0.0.2".to_owned(), 30)]
        );
        let nodata = udp(&s, "api.test", RecordType::AAAA).expect("answer");
        assert_eq!(nodata.metadata.response_code, ResponseCode::NoError);
        assert!(nodata.answers.is_empty());
        let nx = udp(&s, "nope.test", RecordType::A).expect("answer");
        assert_eq!(nx.metadata.response_code, ResponseCode::NXDomain);

        s.set_srv(
            "_h._tcp.x.test",
            &[(10, 0, 8080, "api.test"), (20, 1, 1, ".")],
            5,
        );
        let srv = tcp(&s, "_h._tcp.x.test", RecordType::SRV);
        let got: Vec<(u16, u16, u16, String)> = srv
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(v) => Some((v.priority, v.weight, v.port, v.target.to_ascii())),
                _ => None,
            })
            .collect();
        assert_eq!(
            got,
            [
                (10, 0, 8080, "api.test.".to_owned()),
                (20, 1, 1, ".".to_owned())
            ]
        );

        s.set_cname("www.test", Some("api.test"), 7);
        let c = udp(&s, "www.test", RecordType::A).expect("answer");
        assert_eq!(c.answers.len(), 3, "the CNAME and both addresses");
        assert_eq!(addrs(&c).len(), 2);

        s.remove("api.test");
        let gone = udp(&s, "api.test", RecordType::A).expect("answer");
        assert_eq!(gone.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(s.queries("api.test"), 3);
        assert_eq!(s.queries_of("api.test", "AAAA"), 1);
        assert_eq!(
            s.seen().get(3),
            Some(&DnsQuery {
                name: "_h._tcp.x.test".into(),
                qtype: "SRV".into(),
                tcp: true
            })
        );
    }

    #[test]
    fn fails_on_demand() {
        let s = DnsServer::start();
        s.set_a("a.test", &["10.0.0.1"], 30);
        s.set_mode(DnsMode::ServFail);
        let m = udp(&s, "a.test", RecordType::A).expect("answer");
        assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
        s.set_mode(DnsMode::Drop);
        assert!(udp(&s, "a.test", RecordType::A).is_none());
        s.set_mode(DnsMode::TruncateUdp);
        let t = udp(&s, "a.test", RecordType::A).expect("answer");
        assert!(t.metadata.truncation && t.answers.is_empty());
        assert_eq!(addrs(&tcp(&s, "a.test", RecordType::A)).len(), 1);
        s.set_mode(DnsMode::Answer);
        s.set_name_mode("a.test", Some(DnsMode::Refused));
        let r = udp(&s, "a.test", RecordType::A).expect("answer");
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        s.set_name_mode("a.test", Some(DnsMode::Garbage));
        let c = UdpSocket::bind("127.0.0.1:0").expect("bind");
        c.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        c.send_to(&query("a.test", RecordType::A), s.addr)
            .expect("send");
        let mut buf = [0u8; 512];
        let (n, _) = c.recv_from(&mut buf).expect("garbage");
        assert!(Message::from_vec(&buf[..n]).is_err());
        s.set_name_mode("a.test", None);
        assert_eq!(
            addrs(&udp(&s, "a.test", RecordType::A).expect("answer")).len(),
            1
        );
    }

    #[test]
    fn stops_and_restarts_on_the_same_port() {
        let s = DnsServer::start();
        s.set_a("a.test", &["10.0.0.1"], 30);
        let port = s.addr.port();
        s.stop();
        assert!(udp(&s, "a.test", RecordType::A).is_none());
        assert!(TcpStream::connect(s.addr).is_err());
        s.restart();
        assert_eq!(s.addr.port(), port);
        assert_eq!(
            addrs(&udp(&s, "a.test", RecordType::A).expect("answer")).len(),
            1
        );
        assert_eq!(addrs(&tcp(&s, "a.test", RecordType::A)).len(), 1);
    }

    #[test]
    fn truncates_large_udp_answers() {
        let s = DnsServer::start();
        let many: Vec<String> = (1..=60).map(|i| format!("10.0.0.{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        s.set_a("big.test", &refs, 30);
        let t = udp(&s, "big.test", RecordType::A).expect("answer");
        assert!(t.metadata.truncation, "60 records exceed 512 bytes");
        assert_eq!(addrs(&tcp(&s, "big.test", RecordType::A)).len(), 60);
    }
}
