//! Each algorithm inside a plain Pingora `LoadBalancer<Selection<S>>` (weighted static
//! backends, no network): the picks, the caller-fed state, and the fallback candidates Pingora
//! takes when it refuses a pick (`select_with`'s `accept`, health).

use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use pingora_load_balancing::{discovery, Backend, Backends, LoadBalancer};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_balance::{
    node_state, Attempt, ConsistentHash, FromBackends, LeastConn, PeakEwma, Selection,
    SelectionConfig, SmoothWeighted,
};

fn set(nodes: &[(&str, usize)]) -> BTreeSet<Backend> {
    nodes
        .iter()
        .map(|(a, w)| Backend::new_with_weight(a, *w).expect("socket address"))
        .collect()
}

/// A load balancer over static weighted backends, built the way Pingora builds any other.
fn lb<S: FromBackends + 'static>(
    nodes: &[(&str, usize)],
    config: Option<SelectionConfig>,
) -> LoadBalancer<Selection<S>> {
    let backends = Backends::new(discovery::Static::new(set(nodes)));
    let lb = LoadBalancer::from_backends_with_config(backends, config);
    ready(lb.update()).expect("static discovery");
    lb
}

/// Static discovery's update completes on its first poll.
fn ready<F: Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    match std::pin::pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("static discovery does not wait"),
    }
}

fn pick<S: FromBackends + 'static>(lb: &LoadBalancer<Selection<S>>, key: &[u8]) -> Backend {
    lb.select(key, 16).expect("a backend")
}

/// Last address digit of each pick: backends are 127.0.0.1:1, :2, ... (or 10.0.0.1, .2, ...).
fn name(b: &Backend) -> char {
    let s = b.addr.to_string();
    match s.strip_prefix("10.0.0.") {
        Some(rest) => (b'A' + rest.as_bytes()[0] - b'1') as char,
        None => (b'A' + s.as_bytes()[s.len() - 1] - b'1') as char,
    }
}

/// Every candidate the selection's iterator yields for `key`, in order.
fn candidates<S: FromBackends>(sel: &Arc<Selection<S>>, key: &[u8]) -> String {
    let mut it = sel.iter(key);
    let mut out = String::new();
    while let Some(b) = it.next() {
        out.push(name(b));
        assert!(out.len() <= sel.backends().len(), "{out}: a backend twice");
    }
    out
}

const ABC_321: [(&str, usize); 3] = [("127.0.0.1:1", 3), ("127.0.0.1:2", 2), ("127.0.0.1:3", 1)];

#[test]
fn roundrobin_interleaves_exactly() {
    let lb = lb::<SmoothWeighted>(&ABC_321, None);
    let picks: String = (0..12).map(|_| name(&pick(&lb, b""))).collect();
    assert_eq!(picks, "ABACBAABACBA");
}

#[test]
fn roundrobin_fallback_keeps_proportions_among_the_rest() {
    // A refused every time (down, or `accept` says no): the refused pick is undone, A keeps
    // its place in the cycle, and B and C interleave exactly 2:1 (B C B), as if A were
    // ineligible; A's turns are not all handed to the next backend in address order.
    let lb = lb::<SmoothWeighted>(&ABC_321, None);
    let picks: String = (0..30)
        .map(|_| {
            let b = lb.select_with(b"", 16, |b, _| name(b) != 'A');
            name(&b.expect("B or C"))
        })
        .collect();
    assert_eq!(picks, "BCB".repeat(10));
    // A back: the 3:2:1 cycle (A B A C B A) resumes from where it was: its last position,
    // A, which the 30th request did not reach, then the cycle from the start.
    let picks: String = (0..7).map(|_| name(&pick(&lb, b""))).collect();
    assert_eq!(picks, "AABACBA");

    // One request's candidates: every backend once, the algorithm's order.
    let sel = Arc::new(Selection::<SmoothWeighted>::build(&set(&ABC_321)));
    assert_eq!(candidates(&sel, b""), "ABC");
}

#[test]
fn roundrobin_weight_zero_is_a_last_resort() {
    let lb = lb::<SmoothWeighted>(&[("127.0.0.1:1", 1), ("127.0.0.1:2", 0)], None);
    let picks: String = (0..3).map(|_| name(&pick(&lb, b""))).collect();
    assert_eq!(picks, "AAA");
    let b = lb.select_with(b"", 16, |b, _| name(b) != 'A').expect("B");
    assert_eq!(name(&b), 'B');
}

const APISIX_RING: [(&str, usize); 3] = [
    ("10.0.0.1:8080", 1),
    ("10.0.0.2:8080", 1),
    ("10.0.0.3:8080", 1),
];

#[test]
fn chash_hashes_the_select_key_like_apisix() {
    // The key given to `LoadBalancer::select` is the key the ring hashes: the APISIX check
    // values of docs/algorithms.md come out of a plain Pingora balancer.
    let lb = lb::<ConsistentHash>(&APISIX_RING, None);
    for (key, node) in [
        (&b"alice"[..], 'A'),
        (b"bob", 'C'),
        (b"carol", 'B'),
        (b"/index.html", 'A'),
    ] {
        for _ in 0..5 {
            assert_eq!(
                name(&pick(&lb, key)),
                node,
                "{}",
                String::from_utf8_lossy(key)
            );
        }
    }
}

#[test]
fn chash_spreads_keys_by_weight_and_keeps_them() {
    let nodes = [("127.0.0.1:1", 1), ("127.0.0.1:2", 2), ("127.0.0.1:3", 1)];
    let lb = lb::<ConsistentHash>(&nodes, None);
    let mut counts = [0usize; 3];
    for k in 0..4000 {
        let key = format!("user-{k}");
        let first = pick(&lb, key.as_bytes());
        assert_eq!(pick(&lb, key.as_bytes()).addr, first.addr, "{key} moved");
        counts[(name(&first) as u8 - b'A') as usize] += 1;
    }
    // Expected 1000 : 2000 : 1000, give or take the ring's unevenness.
    assert!(counts.iter().all(|&c| c > 600), "{counts:?}");
    assert!(counts[1] > counts[0] && counts[1] > counts[2], "{counts:?}");
}

#[test]
fn chash_fallback_walks_the_ring() {
    let lb = lb::<ConsistentHash>(&APISIX_RING, None);
    let owner = pick(&lb, b"alice");
    // The owner refused: the next node clockwise, the same one every time.
    let next = lb
        .select_with(b"alice", 16, |b, _| b.addr != owner.addr)
        .expect("another node");
    assert_ne!(next.addr, owner.addr);
    for _ in 0..5 {
        let again = lb
            .select_with(b"alice", 16, |b, _| b.addr != owner.addr)
            .expect("another node");
        assert_eq!(again.addr, next.addr);
    }
    // The whole walk: every node once, starting at the owner, then `next`.
    let sel = Arc::new(Selection::<ConsistentHash>::build(&set(&APISIX_RING)));
    let walk = candidates(&sel, b"alice");
    assert_eq!(walk.len(), 3);
    assert!(walk.starts_with(&format!("{}{}", name(&owner), name(&next))));
    assert_eq!(candidates(&sel, b"alice"), walk);

    // A weight-0 backend has no points: never a candidate.
    let zero = Arc::new(Selection::<ConsistentHash>::build(&set(&[
        ("127.0.0.1:1", 1),
        ("127.0.0.1:2", 0),
    ])));
    assert_eq!(candidates(&zero, b"alice"), "A");
}

#[test]
fn chash_bounded_loads_from_attempts() {
    let config = SelectionConfig::new().with_hash_balance_factor(1.25);
    let lb = lb::<ConsistentHash>(&APISIX_RING, Some(config));
    let owner = pick(&lb, b"hot");
    let mut attempts = Vec::new();
    let mut counts = [0usize; 3];
    for _ in 0..30 {
        let b = pick(&lb, b"hot");
        counts[(name(&b) as u8 - b'A') as usize] += 1;
        attempts.push(Attempt::begin(&b).expect("state"));
    }
    assert!(
        counts[(name(&owner) as u8 - b'A') as usize] <= 13,
        "{counts:?}"
    );
    assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    drop(attempts);
    assert_eq!(pick(&lb, b"hot").addr, owner.addr, "back on its owner");
}

#[test]
fn least_conn_picks_the_fewest_in_flight() {
    let lb = lb::<LeastConn>(&[("127.0.0.1:1", 3), ("127.0.0.1:2", 1)], None);
    // Weights 3 and 1, four concurrent requests: A, A, B, A (docs/algorithms.md).
    let mut attempts = Vec::new();
    let mut picks = String::new();
    for _ in 0..4 {
        let b = pick(&lb, b"");
        picks.push(name(&b));
        attempts.push(Attempt::begin(&b).expect("state"));
    }
    assert_eq!(picks, "AABA");
    let a = attempts[0].state().clone();
    assert_eq!(a.in_flight(), 3);
    // The fifth request: (3 + 1) / 3 vs (1 + 1) / 1, A again; then B's request ends.
    assert_eq!(name(&pick(&lb, b"")), 'A');
    drop(attempts.remove(2));
    assert_eq!(name(&pick(&lb, b"")), 'B', "B now idle");
    drop(attempts);
    assert_eq!(a.in_flight(), 0);
}

#[test]
fn least_conn_holds_with_equal_weights_and_falls_back_to_the_next_least() {
    let nodes = [("127.0.0.1:1", 1), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1)];
    let lb = lb::<LeastConn>(&nodes, None);
    let busy: Vec<Attempt> = (0..2)
        .map(|_| Attempt::begin(&pick(&lb, b"")).expect("state"))
        .collect();
    let idle = pick(&lb, b"");
    assert!(busy.iter().all(|a| a.state().in_flight() == 1));
    assert_eq!(node_state(&idle).expect("state").in_flight(), 0);
    // The idle one refused: the next least loaded of the others.
    let next = lb
        .select_with(b"", 16, |b, _| b.addr != idle.addr)
        .expect("a busy one");
    assert_ne!(next.addr, idle.addr);
    let sel = Arc::new(Selection::<LeastConn>::build(&set(&nodes)));
    assert_eq!(candidates(&sel, b"").len(), 3);
}

#[test]
fn ewma_prefers_the_faster_backend_after_samples() {
    // A has four times B's weight: with no samples (both at the 30 ms default) A is cheaper.
    let lb = lb::<PeakEwma>(&[("127.0.0.1:1", 4), ("127.0.0.1:2", 1)], None);
    for _ in 0..20 {
        assert_eq!(name(&pick(&lb, b"")), 'A');
    }
    // Thirty seconds of samples on an explicit clock, one a second: A answers in 50 ms, B in
    // 5 ms. A's estimate jumps to 50 ms (peak); B's decays toward 5 ms with tau = 10 s.
    let a = pick(&lb, b"");
    let b = lb.select_with(b"", 16, |b, _| name(b) == 'B').expect("B");
    let (sa, sb) = (node_state(&a).expect("A"), node_state(&b).expect("B"));
    let t0 = Instant::now();
    let mut t = t0;
    for s in 1..=30 {
        t = t0 + Duration::from_secs(s);
        sa.observe_at(Duration::from_millis(50), t);
        sb.observe_at(Duration::from_millis(5), t);
    }
    assert!((sa.ewma_at(t) - 0.050).abs() < 1e-9);
    // 5 ms + (30 − 5) ms × e^{-30 s / 10 s} (give or take the moments between the state's
    // creation and t0).
    let expect_b = 0.005 + 0.025 * (-3f64).exp();
    assert!((sb.ewma_at(t) - expect_b).abs() < 1e-6, "{}", sb.ewma_at(t));
    // 50 ms / 4 > 6.2 ms / 1, and with two backends power of two choices compares both.
    for _ in 0..20 {
        assert_eq!(name(&pick(&lb, b"")), 'B');
    }
    // Unless B is refused.
    let fallback = lb.select_with(b"", 16, |b, _| name(b) != 'B').expect("A");
    assert_eq!(name(&fallback), 'A');
}

#[test]
fn ewma_attempts_feed_samples_and_load() {
    let lb = lb::<PeakEwma>(&[("127.0.0.1:1", 1), ("127.0.0.1:2", 1)], None);
    let first = pick(&lb, b"");
    let attempt = Attempt::begin(&first).expect("state");
    // In flight: cost doubles, the other one wins.
    assert_ne!(pick(&lb, b"").addr, first.addr);
    // A slow sample (above the 30 ms estimate: peak, replaces it).
    attempt.finish_with(Duration::from_secs(1));
    let state = node_state(&first).expect("state");
    assert_eq!(state.in_flight(), 0);
    assert!(state.ewma_at(Instant::now()) > 0.9);
    for _ in 0..10 {
        assert_ne!(pick(&lb, b"").addr, first.addr);
    }
    let sel = Arc::new(Selection::<PeakEwma>::build(&set(&ABC_321)));
    let mut walk: Vec<char> = candidates(&sel, b"").chars().collect();
    walk.sort_unstable();
    assert_eq!(walk, ['A', 'B', 'C']);
}

#[test]
fn try_from_iter_builds_weight_one_backends() {
    let lb: LoadBalancer<Selection<SmoothWeighted>> =
        LoadBalancer::try_from_iter(["127.0.0.1:1", "127.0.0.1:2"]).expect("addresses");
    let picks: String = (0..4).map(|_| name(&pick(&lb, b""))).collect();
    assert_eq!(picks, "ABAB");
}

#[test]
fn a_shared_config_keeps_state_across_rebuilds() {
    let config = SelectionConfig::new();
    let before = set(&[("127.0.0.1:1", 1), ("127.0.0.1:2", 1)]);
    let old = Arc::new(Selection::<LeastConn>::build_with_config(&before, &config));
    let mut it = old.iter(b"");
    let a = it.next().expect("a backend").clone();
    let attempt = Attempt::begin(&a).expect("state");
    // Discovery adds a backend and changes A's weight: A keeps its count (same address).
    let after = set(&[("127.0.0.1:1", 2), ("127.0.0.1:2", 1), ("127.0.0.1:3", 1)]);
    let new = Arc::new(Selection::<LeastConn>::build_with_config(&after, &config));
    let a_now = config.node_state(&a).expect("live");
    assert!(Arc::ptr_eq(attempt.state(), &a_now));
    assert!(Arc::ptr_eq(&new.states()[0], &a_now));
    assert_eq!(new.states()[0].in_flight(), 1);
    // Without the config every build starts afresh.
    let fresh = Selection::<LeastConn>::build(&after);
    assert_eq!(fresh.states()[0].in_flight(), 0);
    drop(attempt);
    assert_eq!(a_now.in_flight(), 0);
}
