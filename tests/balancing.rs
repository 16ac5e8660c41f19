//! Smooth weighted round robin, weight 0, priority levels and shared state, through the real
//! proxy with real backends.

use std::collections::HashMap;
use weir_testkit::config::{Conf, Node, Route, Service, Upstream};
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
    let p = TestProxy::start(
        Conf::new().route(Route::new("r", "/*").upstream(Upstream::weighted(&[(&a, 1), (&b, 2)]))),
    );
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
    let p = TestProxy::start(
        Conf::new()
            .route(Route::new("r", "/*").upstream_id("u"))
            .upstream(
                Upstream::list([
                    Node::of(&a).weight(3),
                    Node::of(&b).weight(2),
                    Node::of(&c).weight(1),
                ])
                .id("u"),
            ),
    );
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
    let p = TestProxy::start(
        Conf::new()
            .route(Route::new("r1", "/one").upstream_id("u"))
            .route(Route::new("r2", "/two").service_id("s"))
            .service(Service::new("s").upstream_id("u"))
            .upstream(Upstream::nodes(&[&a, &b]).id("u")),
    );
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
    let p = TestProxy::start(
        Conf::new().route(Route::new("r", "/*").upstream(Upstream::weighted(&[(&a, 2), (&z, 0)]))),
    );
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
    let p = TestProxy::start(
        Conf::new()
            .route(Route::new("r", "/*").upstream_id("u"))
            .upstream(
                Upstream::list([
                    Node::of(&h1).priority(1),
                    Node::of(&h2).priority(1),
                    Node::of(&low).priority(0),
                ])
                .id("u"),
            ),
    );
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
    let conf = |weights: [u32; 2]| {
        Conf::new()
            .route(Route::new("r", "/*").upstream_id("u"))
            .upstream(Upstream::weighted(&[(&a, weights[0]), (&b, weights[1])]).id("u"))
    };
    let p = TestProxy::start(conf([1, 1]));
    assert_eq!(names(&p, "/", 3), "aba");
    // Same nodes and weights (another upstream added): the cycle continues with b.
    p.apply(conf([1, 1]).upstream(Upstream::nodes(&[&a]).id("other")));
    assert_eq!(names(&p, "/", 3), "bab");
    // Weights changed: the cycle restarts at the heaviest node.
    p.apply(conf([1, 2]));
    assert_eq!(names(&p, "/", 3), "bab");
}
