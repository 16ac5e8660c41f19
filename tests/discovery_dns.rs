//! End-to-end tests of the DNS registry: the proxy with `discovery.dns` pointed at a real DNS
//! server on 127.0.0.1 (weir_testkit::DnsServer), real backends on 127.0.0.1 and 127.0.0.2,
//! and what a client sees: which backend answers, and that no request fails while the name
//! server misbehaves. Records use TTL 1 and `max_ttl: 1`, so names are asked again every
//! second; every wait polls with a deadline.

use std::collections::HashMap;
use std::time::Duration;
use weir_testkit::config::{Conf, Node, Route, Upstream};
use weir_testkit::dns_server::{DnsMode, DnsServer};
use weir_testkit::{wait_for, Backend, RequestStream, TestProxy};

/// A `discovery.dns` block for `dns` (TTLs of one second, 300 ms per query), the control API,
/// and one route `/*` to `upstream`.
fn config(dns: &DnsServer, upstream: Upstream) -> Conf {
    Conf::new()
        .discovery(
            "dns",
            serde_json::json!({
                "servers": [dns.server()],
                "timeout": 300,
                "default_weight": 1,
                "min_ttl": 1,
                "max_ttl": 1,
            }),
        )
        .control()
        .route(Route::new("r", "/*").upstream(upstream))
}

/// A static upstream with the node `{host, port, weight: 1}`.
fn name_node(host: &str, port: u16) -> Upstream {
    Upstream::list([Node::new(host, port)])
}

/// `service_name` of `discovery_type: dns`.
fn dns_service(name: &str) -> Upstream {
    Upstream::discovered("dns", name)
}

/// Backends `a` on 127.0.0.1 and `b` on 127.0.0.2, on the same port.
fn two_backends() -> (Backend, Backend) {
    let a = Backend::start("a");
    let b = Backend::start_on("b", &format!("127.0.0.2:{}", a.port()));
    (a, b)
}

/// Wait (up to 15 s) until a request is answered by `body`.
fn wait_for_body(p: &TestProxy, body: &str) {
    let mut c = p.client();
    let got = wait_for(Duration::from_secs(15), || {
        c.get("/")
            .ok()
            .filter(|r| r.status == 200 && r.body == body)
    });
    assert!(got.is_some(), "no request answered by {body:?} within 15 s");
}

/// Send `n` requests; every one must succeed. Counts by answering backend.
fn count(p: &TestProxy, n: usize) -> HashMap<String, usize> {
    let mut c = p.client();
    let mut m = HashMap::new();
    for _ in 0..n {
        let r = c.get("/").expect("request");
        assert_eq!(r.status, 200, "{r:?}");
        *m.entry(r.body).or_insert(0) += 1;
    }
    m
}

fn counts(list: &[(&str, usize)]) -> HashMap<String, usize> {
    list.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// The dns registry's entry in the control API.
fn dump(p: &TestProxy) -> serde_json::Value {
    let (status, body) = p.control_get("/v1/discovery/dns/dump");
    assert_eq!(status, 200, "{body}");
    body
}

/// Wait (up to 15 s) until the registry's `last_error` is set (`true`) or cleared (`false`).
fn wait_for_error(p: &TestProxy, set: bool) {
    let ok = wait_for(Duration::from_secs(15), || {
        (dump(p)["last_error"].is_null() != set).then_some(())
    });
    assert!(
        ok.is_some(),
        "last_error set={set} not reached: {}",
        dump(p)
    );
}

/// A steady request stream through `p` (the testkit's).
fn traffic(p: &TestProxy) -> RequestStream {
    RequestStream::start(p.addr, "/", None)
}

#[test]
fn a_host_name_node_gets_traffic_on_every_address() {
    let (a, b) = two_backends();
    let dns = DnsServer::start();
    dns.set_a("api.test", &["127.0.0.1", "127.0.0.2"], 1);
    let p = TestProxy::start(config(
        &dns,
        name_node("api.test", a.port()).pass_host("node"),
    ));
    wait_for_body(&p, "a");
    // Two nodes of weight 1: round robin alternates.
    assert_eq!(count(&p, 20), counts(&[("a", 10), ("b", 10)]));
    // Each address keeps the node's name: `pass_host: node` sends the name, not the address.
    let host = b.seen().last().and_then(|s| s.headers.get("host").cloned());
    assert_eq!(host, Some(format!("api.test:{}", b.port())));
}

#[test]
fn ttl_expiry_moves_traffic_to_the_new_address_set() {
    let (a, b) = two_backends();
    let dns = DnsServer::start();
    dns.set_a("api.test", &["127.0.0.1"], 1);
    let p = TestProxy::start(config(&dns, name_node("api.test", a.port())));
    wait_for_body(&p, "a");
    assert_eq!(count(&p, 5), counts(&[("a", 5)]));
    dns.set_a("api.test", &["127.0.0.2"], 1);
    wait_for_body(&p, "b");
    assert_eq!(count(&p, 10), counts(&[("b", 10)]));
    dns.set_a("api.test", &["127.0.0.1", "127.0.0.2"], 1);
    let both = wait_for(Duration::from_secs(15), || {
        (count(&p, 2).len() == 2).then_some(())
    });
    assert!(both.is_some(), "traffic on both addresses within 15 s");
    assert_eq!(count(&p, 4), counts(&[("a", 2), ("b", 2)]));
    assert!(
        dns.queries_of("api.test", "A") >= 3,
        "asked again on every TTL"
    );
    drop((a, b));
}

#[test]
fn a_name_that_never_resolved_answers_503_until_it_is_registered() {
    let a = Backend::start("a");
    let dns = DnsServer::start();
    let p = TestProxy::start(config(&dns, name_node("late.test", a.port())));
    // Asked, no records: the upstream has no node.
    let asked = wait_for(Duration::from_secs(15), || {
        (dns.queries("late.test") > 0).then_some(())
    });
    assert!(asked.is_some());
    assert_eq!(p.client().get("/").expect("request").status, 503);
    dns.set_a("late.test", &["127.0.0.1"], 1);
    wait_for_body(&p, "a");
}

#[test]
fn a_failing_name_server_keeps_the_addresses_with_zero_failed_requests() {
    let (a, b) = two_backends();
    let dns = DnsServer::start();
    dns.set_a("api.test", &["127.0.0.1"], 1);
    let p = TestProxy::start(config(&dns, name_node("api.test", a.port())));
    wait_for_body(&p, "a");
    wait_for_error(&p, false);
    let traffic = traffic(&p);
    for mode in [
        DnsMode::ServFail,
        DnsMode::Drop,
        DnsMode::Garbage,
        DnsMode::Refused,
    ] {
        dns.set_mode(mode);
        wait_for_error(&p, true);
        dns.set_mode(DnsMode::Answer);
        wait_for_error(&p, false);
    }
    // Stopped: queries go nowhere. Then back on the same port with another address.
    dns.stop();
    wait_for_error(&p, true);
    dns.set_a("api.test", &["127.0.0.2"], 1);
    dns.restart();
    wait_for_body(&p, "b");
    let (ok, failed) = traffic.finish();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 0);
    assert!(a.hits() > 0 && b.hits() > 0);
}

#[test]
fn an_empty_answer_keeps_the_addresses() {
    let a = Backend::start("a");
    let dns = DnsServer::start();
    dns.set_a("api.test", &["127.0.0.1"], 1);
    let p = TestProxy::start(config(&dns, name_node("api.test", a.port())));
    wait_for_body(&p, "a");
    let traffic = traffic(&p);
    dns.remove("api.test");
    wait_for_error(&p, true);
    let before = dns.queries_of("api.test", "A");
    let asked = wait_for(Duration::from_secs(15), || {
        (dns.queries_of("api.test", "A") >= before + 2).then_some(())
    });
    assert!(asked.is_some(), "asked again while empty");
    let (ok, failed) = traffic.finish();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 0);
    assert_eq!(count(&p, 3), counts(&[("a", 3)]));
}

#[test]
fn discovery_type_dns_with_host_and_port() {
    let (a, b) = two_backends();
    let dns = DnsServer::start();
    dns.set_a("web.test", &["127.0.0.1", "127.0.0.2"], 1);
    let name = format!("web.test:{}", a.port());
    let p = TestProxy::start(config(&dns, dns_service(&name)));
    wait_for_body(&p, "a");
    assert_eq!(count(&p, 20), counts(&[("a", 10), ("b", 10)]));
    let nodes = &dump(&p)["services"][&name];
    assert_eq!(
        nodes,
        &serde_json::json!([
            {"host": "127.0.0.1", "port": a.port(), "weight": 1, "priority": 0},
            {"host": "127.0.0.2", "port": a.port(), "weight": 1, "priority": 0}
        ])
    );
    drop(b);
}

#[test]
fn discovery_type_dns_with_srv_records_and_their_weights() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let dns = DnsServer::start();
    dns.set_srv(
        "_http._tcp.shop.test",
        &[
            (10, 3, a.port(), "a.shop.test"),
            (10, 1, b.port(), "b.shop.test"),
            // Skipped: no service, port 0, a target without addresses.
            (10, 5, 80, "."),
            (10, 5, 0, "a.shop.test"),
            (10, 5, 81, "nowhere.shop.test"),
        ],
        1,
    );
    dns.set_a("a.shop.test", &["127.0.0.1"], 1);
    dns.set_a("b.shop.test", &["127.0.0.1"], 1);
    let p = TestProxy::start(config(&dns, dns_service("_http._tcp.shop.test")));
    wait_for_body(&p, "a");
    // Smooth WRR 3:1 over a multiple of its cycle is exact.
    assert_eq!(count(&p, 40), counts(&[("a", 30), ("b", 10)]));
    let nodes = &dump(&p)["services"]["_http._tcp.shop.test"];
    assert_eq!(
        nodes.as_array().map(Vec::len),
        Some(2),
        "only the valid records: {nodes}"
    );
}

#[test]
fn srv_priorities_fail_over_when_the_preferred_records_go_away() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let dns = DnsServer::start();
    let srv = "_http._tcp.ha.test";
    let primary = (10, 1, a.port(), "a.ha.test");
    let backup = (20, 1, b.port(), "b.ha.test");
    dns.set_srv(srv, &[backup, primary], 1);
    dns.set_a("a.ha.test", &["127.0.0.1"], 1);
    dns.set_a("b.ha.test", &["127.0.0.1"], 1);
    let p = TestProxy::start(config(&dns, dns_service(srv)));
    wait_for_body(&p, "a");
    // The lower SRV priority value is preferred: the backup gets nothing.
    assert_eq!(count(&p, 10), counts(&[("a", 10)]));
    let traffic = traffic(&p);
    dns.set_srv(srv, &[backup], 1);
    wait_for_body(&p, "b");
    assert_eq!(count(&p, 10), counts(&[("b", 10)]));
    dns.set_srv(srv, &[backup, primary], 1);
    wait_for_body(&p, "a");
    let (ok, failed) = traffic.finish();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 0);
    assert_eq!(count(&p, 10), counts(&[("a", 10)]));
}

#[test]
fn static_weights_are_kept_for_host_name_nodes() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let dns = DnsServer::start();
    dns.set_a("a.test", &["127.0.0.1"], 1);
    let p = TestProxy::start(config(
        &dns,
        Upstream::list([Node::new("a.test", a.port()).weight(3), Node::of(&b)]),
    ));
    wait_for_body(&p, "a");
    wait_for_body(&p, "b");
    assert_eq!(count(&p, 40), counts(&[("a", 30), ("b", 10)]));
}

#[test]
fn truncated_udp_answers_are_asked_again_over_tcp() {
    let a = Backend::start("a");
    let dns = DnsServer::start();
    dns.set_a("api.test", &["127.0.0.1"], 1);
    dns.set_mode(DnsMode::TruncateUdp);
    let p = TestProxy::start(config(&dns, name_node("api.test", a.port())));
    wait_for_body(&p, "a");
    assert!(dns.seen().iter().any(|q| q.name == "api.test" && q.tcp));
}
