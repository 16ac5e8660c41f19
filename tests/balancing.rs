//! Smooth weighted round robin, weight 0, priority levels and shared state, through the real
//! proxy with real backends.

use std::collections::HashMap;
use weir_testkit::{Backend, Mode, TestProxy};

fn count(p: &TestProxy, path: &str, n: usize) -> HashMap<String, usize> {
    let mut c = p.client();
    let mut m = HashMap::new();
    for _ in 0..n {
        let r = c.get(path).expect("request");
        assert_eq!(r.status, 200, "{r:?}");
        *m.entry(r.body).or_insert(0) += 1;
    }
    m
}

fn names(p: &TestProxy, path: &str, n: usize) -> String {
    let mut c = p.client();
    (0..n)
        .map(|_| c.get(path).expect("request").body)
        .collect::<Vec<_>>()
        .join("")
}

#[test]
fn round_robin_1_to_2_over_300_requests_is_exact() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let p = TestProxy::start(&format!(
        "routes: [{{id: r, uri: /*, upstream: {{nodes: {{\"{}\": 1, \"{}\": 2}}}}}}]\n",
        a.addr, b.addr
    ));
    let m = count(&p, "/x", 300);
    assert_eq!(m.get("a"), Some(&100));
    assert_eq!(m.get("b"), Some(&200));
}

#[test]
fn round_robin_3_2_1_is_smooth_and_exact_over_12() {
    let (a, b, c) = (
        Backend::start("A"),
        Backend::start("B"),
        Backend::start("C"),
    );
    let p = TestProxy::start(&format!(
        "routes: [{{id: r, uri: /*, upstream_id: u}}]\nupstreams:\n  - id: u\n    nodes:\n      - {{host: 127.0.0.1, port: {}, weight: 3}}\n      - {{host: 127.0.0.1, port: {}, weight: 2}}\n      - {{host: 127.0.0.1, port: {}, weight: 1}}\n",
        a.port(), b.port(), c.port()
    ));
    let seq = names(&p, "/", 12);
    // nginx smooth WRR for 3:2:1 repeats A B A C B A.
    assert_eq!(seq, "ABACBAABACBA");
    let count = |ch| seq.chars().filter(|c| *c == ch).count();
    assert_eq!((count('A'), count('B'), count('C')), (6, 4, 2), "{seq}");
    assert!(!seq.contains("AAA"), "{seq}");
}

#[test]
fn state_is_shared_by_routes_using_one_upstream() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let p = TestProxy::start(&format!(
        "routes:\n  - {{id: r1, uri: /one, upstream_id: u}}\n  - {{id: r2, uri: /two, service_id: s}}\nservices: [{{id: s, upstream_id: u}}]\nupstreams: [{{id: u, nodes: {{\"{}\": 1, \"{}\": 1}}}}]\n",
        a.addr, b.addr
    ));
    let mut c = p.client();
    let seq: Vec<String> = (0..10)
        .map(|i| {
            c.get(if i % 2 == 0 { "/one" } else { "/two" })
                .expect("req")
                .body
        })
        .collect();
    // One cycle across both routes: a b a b ...
    assert_eq!(seq.join(""), "ababababab");
}

#[test]
fn weight_zero_takes_traffic_only_when_positive_nodes_cannot() {
    let a = Backend::start("a");
    let z = Backend::start("z");
    let p = TestProxy::start(&format!(
        "routes: [{{id: r, uri: /*, upstream: {{nodes: {{\"{}\": 2, \"{}\": 0}}}}}}]\n",
        a.addr, z.addr
    ));
    assert_eq!(count(&p, "/", 20).get("a"), Some(&20));
    // With `a` failing, the retry goes to the weight-0 node (Weir; APISIX retries `a`).
    a.stop();
    let mut c = p.client();
    let r = c.get("/").expect("req");
    assert_eq!((r.status, r.body.as_str()), (200, "z"));
}

#[test]
fn lower_priority_serves_only_after_every_higher_node_was_tried() {
    let (h1, h2, low) = (
        Backend::start("h1"),
        Backend::start("h2"),
        Backend::start("low"),
    );
    let p = TestProxy::start(&format!(
        "routes: [{{id: r, uri: /*, upstream_id: u}}]\nupstreams:\n  - id: u\n    nodes:\n      - {{host: 127.0.0.1, port: {}, weight: 1, priority: 1}}\n      - {{host: 127.0.0.1, port: {}, weight: 1, priority: 1}}\n      - {{host: 127.0.0.1, port: {}, weight: 1, priority: 0}}\n",
        h1.port(), h2.port(), low.port()
    ));
    let m = count(&p, "/", 20);
    assert_eq!(m.get("low"), None, "{m:?}");
    h1.set_mode(Mode::Drop);
    let m = count(&p, "/", 10);
    assert_eq!(m.get("h2"), Some(&10), "{m:?}");
    h2.set_mode(Mode::Drop);
    let m = count(&p, "/", 5);
    assert_eq!(m.get("low"), Some(&5), "{m:?}");
}

#[test]
fn snapshot_swap_keeps_the_cycle_of_unchanged_levels() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let yaml = format!(
        "routes: [{{id: r, uri: /*, upstream_id: u}}]\nupstreams:\n  - {{id: u, nodes: {{\"{}\": 1, \"{}\": 1}}}}\n",
        a.addr, b.addr
    );
    let p = TestProxy::start(&yaml);
    assert_eq!(names(&p, "/", 3), "aba");
    // Same nodes and weights (another route added): the cycle continues with b.
    p.apply(&format!(
        "{yaml}  - {{id: other, nodes: {{\"{}\": 1}}}}\n",
        a.addr
    ));
    assert_eq!(names(&p, "/", 3), "bab");
    // Weights changed: the cycle restarts at the heaviest node.
    p.apply(&format!(
        "routes: [{{id: r, uri: /*, upstream_id: u}}]\nupstreams: [{{id: u, nodes: {{\"{}\": 1, \"{}\": 2}}}}]\n",
        a.addr, b.addr
    ));
    assert_eq!(names(&p, "/", 3), "bab");
}
