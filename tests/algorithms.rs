//! chash, least_conn and ewma through the real proxy with real backends.

use std::collections::{HashMap, HashSet};
use std::time::Duration;
use weir_testkit::config::{Conf, Route, Upstream};
use weir_testkit::{wait_for, Backend, Mode, TestProxy};

fn three() -> [Backend; 3] {
    [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ]
}

#[test]
fn chash_keeps_each_key_on_one_node() {
    let bs = three();
    let n = || Upstream::nodes(&bs);
    let p = TestProxy::start(
        Conf::new()
            .route(Route::new("h", "/h").upstream(n().chash("header", "X-User")))
            .route(Route::new("a", "/a").upstream(n().lb("chash").key("arg_user")))
            .route(Route::new("c", "/c").upstream(n().chash("cookie", "sid")))
            .route(
                Route::new("t", "/t")
                    .upstream(n().chash("vars_combinations", "$http_x_user-${arg_v ?? 0}")),
            ),
    );
    let mut c = p.client();
    for (path, how) in [
        ("/h", "header"),
        ("/a", "arg"),
        ("/c", "cookie"),
        ("/t", "template"),
    ] {
        let mut owners: HashMap<String, String> = HashMap::new();
        for round in 0..3 {
            for u in 0..30 {
                let user = format!("user-{u}");
                let (target, headers): (String, Vec<(&str, String)>) = match how {
                    "header" => (path.to_string(), vec![("X-User", user.clone())]),
                    "arg" => (format!("{path}?x=1&user={user}"), vec![]),
                    "cookie" => (
                        path.to_string(),
                        vec![("Cookie", format!("a=1; sid={user}"))],
                    ),
                    _ => (format!("{path}?v=2"), vec![("X-User", user.clone())]),
                };
                let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let r = c.request("GET", &target, &hs, b"").expect("req");
                let prev = owners.insert(user.clone(), r.body.clone());
                if round > 0 {
                    assert_eq!(
                        prev.as_deref(),
                        Some(r.body.as_str()),
                        "{how}: {user} moved"
                    );
                }
            }
        }
        let used: HashSet<&String> = owners.values().collect();
        assert_eq!(
            used.len(),
            3,
            "{how}: 30 keys should spread over all nodes: {owners:?}"
        );
    }
}

#[test]
fn chash_missing_key_falls_back_to_remote_addr_and_skips_a_dead_owner() {
    let bs = three();
    let p = TestProxy::start(
        Conf::new()
            .route(Route::new("h", "/*").upstream(Upstream::nodes(&bs).chash("header", "X-User"))),
    );
    let mut c = p.client();
    let first = c.get("/").expect("req").body;
    for _ in 0..10 {
        assert_eq!(
            c.get("/").expect("req").body,
            first,
            "no key: hashed on 127.0.0.1"
        );
    }
    // The owner of this key goes away: the next node clockwise answers, always the same one.
    let owner = c
        .request("GET", "/", &[("X-User", "k")], b"")
        .expect("req")
        .body;
    bs.iter().find(|b| b.name() == owner).expect("owner").stop();
    let next = c
        .request("GET", "/", &[("X-User", "k")], b"")
        .expect("req")
        .body;
    assert_ne!(next, owner);
    for _ in 0..5 {
        assert_eq!(
            c.request("GET", "/", &[("X-User", "k")], b"")
                .expect("req")
                .body,
            next
        );
    }
}

#[test]
fn least_conn_sends_new_requests_to_the_idle_node() {
    let (slow, idle) = (Backend::start("slow"), Backend::start("idle"));
    // `slow` keeps its request until released: it is in flight for as long as the test needs,
    // however slow the machine.
    slow.set_mode(Mode::Hold);
    let p = TestProxy::start(
        Conf::new()
            .route(Route::new("r", "/*").upstream_id("u"))
            .upstream(Upstream::nodes(&[&slow, &idle]).id("u").lb("least_conn")),
    );
    // The first request goes to the first node (tie) and stays in flight there.
    let mut c1 = p.client();
    let long = std::thread::spawn(move || c1.get("/").expect("long").body);
    assert!(
        wait_for(Duration::from_secs(10), || (slow.holding() == 1)
            .then_some(()))
        .is_some(),
        "the first request did not reach the first node"
    );
    let mut c = p.client();
    for i in 1..=10 {
        assert_eq!(c.get("/").expect("req").body, "idle");
        // The proxy releases a request's in-flight count after the client has the response:
        // wait for that, so no pick can see idle still busy (a tie, which goes to slow).
        p.wait_finished(i);
    }
    slow.release();
    assert_eq!(long.join().expect("join"), "slow");
}

#[test]
fn least_conn_counts_survive_a_reload_and_a_new_node_takes_new_requests() {
    let (a, b, fresh) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("fresh"),
    );
    // a and b keep their requests until released: exactly four are in flight.
    a.set_mode(Mode::Hold);
    b.set_mode(Mode::Hold);
    let up = |nodes: &[&Backend]| {
        Conf::new()
            .route(Route::new("r", "/*").upstream_id("u"))
            .upstream(Upstream::nodes(nodes).id("u").lb("least_conn"))
    };
    let p = TestProxy::start(up(&[&a, &b]));
    // One at a time, each held before the next is sent, so every pick sees the counts of the
    // previous ones (concurrent picks could see the same counts): a, b, then a tie, then b.
    let long: Vec<_> = (1..=4)
        .map(|n| {
            let mut c = p.client();
            let h = std::thread::spawn(move || c.get("/").expect("long").status);
            assert!(
                wait_for(Duration::from_secs(10), || (a.holding() + b.holding() == n)
                    .then_some(()))
                .is_some(),
                "request {n} did not reach a backend"
            );
            h
        })
        .collect();
    assert_eq!((a.holding(), b.holding()), (2, 2));
    // Add a node under load: the in-flight counts of a and b are kept, so it takes the new ones.
    p.apply(up(&[&a, &b, &fresh]));
    let mut c = p.client();
    for i in 1..=5 {
        assert_eq!(c.get("/").expect("req").body, "fresh");
        // Its own count is released before the next pick (the four held ones never finish).
        p.wait_finished(i);
    }
    a.release();
    b.release();
    for h in long {
        assert_eq!(h.join().expect("join"), 200);
    }
}

#[test]
fn ewma_avoids_a_node_ten_times_slower() {
    let bs = three();
    // The estimates are measured latencies, and a fast node's request can take tens of
    // milliseconds on a busy machine (a sample above the slow node's estimate would make ewma
    // rightly prefer the slow node for seconds). The slow node is slower than any such stall:
    // noise cannot reorder the nodes, and it is hit once, when its unmeasured estimate is drawn.
    bs[2].set_mode(Mode::Delay(Duration::from_secs(1)));
    let p = TestProxy::start(
        Conf::new().route(Route::new("r", "/*").upstream(Upstream::nodes(&bs).lb("ewma"))),
    );
    let mut c = p.client();
    let mut count: HashMap<String, usize> = HashMap::new();
    for _ in 0..100 {
        *count.entry(c.get("/").expect("req").body).or_default() += 1;
    }
    let fast = count.get("a").copied().unwrap_or(0) + count.get("b").copied().unwrap_or(0);
    assert!(
        fast >= 80,
        "only {fast} of 100 went to the fast nodes: {count:?}"
    );
}
