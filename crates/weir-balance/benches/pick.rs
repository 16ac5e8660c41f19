//! Time per pick of every algorithm at 3, 100 and 1,000 nodes (`least_conn` at 10 too), alone
//! and with two threads picking concurrently from the same balancer; `least_conn` also with
//! requests in flight, and `roundrobin` and `least_conn` with one node excluded (a retry);
//! and what an attempt costs on a node a `least_conn` level holds. `cargo bench -p
//! weir-balance`.
//!
//! "2 threads": both threads make `iters` picks each; the time reported per pick is the wall
//! time divided by the total number of picks (2 × `iters`), i.e. the inverse of the combined
//! throughput. Benchmarks assert nothing.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_balance::{
    ring_id, ConsistentHash, Eligible, InFlight, LeastConn, LevelSelector, NodeState, PeakEwma,
    SmoothWeighted,
};

/// Weights 1, 2, 3, 1, 2, 3, ...
fn nodes(n: usize) -> Vec<(u64, Arc<NodeState>)> {
    (0..n)
        .map(|i| (1 + (i % 3) as u64, Arc::new(NodeState::default())))
        .collect()
}

fn build(alg: &str, states: &[(u64, Arc<NodeState>)]) -> Arc<dyn LevelSelector> {
    match alg {
        "roundrobin" => {
            let w: Vec<u64> = states.iter().map(|s| s.0).collect();
            Arc::new(SmoothWeighted::new(&w))
        }
        "least_conn" => Arc::new(LeastConn::new(states)),
        "ewma" => Arc::new(PeakEwma::new(states)),
        _ => {
            let ring: Vec<(Vec<u8>, u64, Arc<NodeState>)> = states
                .iter()
                .enumerate()
                .map(|(i, (w, s))| {
                    (
                        ring_id(&format!("10.0.{}.{}", i / 250, i % 250), 8080),
                        *w,
                        Arc::clone(s),
                    )
                })
                .collect();
            Arc::new(ConsistentHash::new(&ring, None))
        }
    }
}

const KEYS: [&[u8]; 4] = [b"alice", b"bob", b"10.1.2.3", b"/index.html"];

/// Wall time of two threads making `iters` picks each, per pick.
fn two_threads(sel: &Arc<dyn LevelSelector>, iters: u64) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2 {
            let sel = Arc::clone(sel);
            s.spawn(move || {
                for i in 0..iters {
                    black_box(sel.select(KEYS[((i as usize) + t) & 3], Eligible::All));
                }
            });
        }
    });
    start.elapsed() / 2
}

fn picks(c: &mut Criterion) {
    for alg in ["roundrobin", "chash", "least_conn", "ewma"] {
        let mut g = c.benchmark_group(format!("pick/{alg}"));
        g.measurement_time(Duration::from_secs(3))
            .warm_up_time(Duration::from_millis(500))
            .sample_size(100);
        let sizes: &[usize] = if alg == "least_conn" {
            &[3, 10, 100, 1000]
        } else {
            &[3, 100, 1000]
        };
        for &n in sizes {
            let states = nodes(n);
            let sel = build(alg, &states);
            g.bench_with_input(BenchmarkId::new("1 thread", n), &n, |b, _| {
                let mut k = 0;
                b.iter(|| {
                    k = (k + 1) & 3;
                    black_box(sel.select(KEYS[k], Eligible::All))
                })
            });
            g.bench_with_input(BenchmarkId::new("2 threads", n), &n, |b, _| {
                b.iter_custom(|iters| two_threads(&sel, iters))
            });
        }
        g.finish();
    }
}

/// `least_conn` with requests in flight (0 to 7 per node, fixed pseudo-random), and both
/// scanning algorithms with one node excluded, as on a retry.
fn realistic(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick/least_conn busy");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for n in [10usize, 100, 1000] {
        let states = nodes(n);
        let sel = build("least_conn", &states);
        let mut rng = fastrand::Rng::with_seed(1);
        let _held: Vec<InFlight> = states
            .iter()
            .flat_map(|(_, s)| (0..rng.usize(..8)).map(|_| s.begin()).collect::<Vec<_>>())
            .collect();
        g.bench_with_input(BenchmarkId::new("1 thread", n), &n, |b, _| {
            b.iter(|| black_box(sel.select(b"", Eligible::All)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("pick/one excluded");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for alg in ["roundrobin", "least_conn"] {
        for n in [100usize, 1000] {
            let states = nodes(n);
            let sel = build(alg, &states);
            let not_first = |i: usize| i != 0;
            g.bench_with_input(BenchmarkId::new(alg, n), &n, |b, _| {
                b.iter(|| black_box(sel.select(b"", Eligible::Only(&not_first))))
            });
        }
    }
    g.finish();
}

/// What `least_conn` moves to the attempt path: one attempt begun and ended (an `InFlight`
/// guard created and dropped) on a node no `least_conn` level holds, and on one that a level
/// mirrors; and `least_conn` over weights too large for cost keys (compared by products).
fn feedback(c: &mut Criterion) {
    let mut g = c.benchmark_group("attempt");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    let plain = Arc::new(NodeState::default());
    g.bench_function("begin+drop/no least_conn", |b| {
        b.iter(|| drop(black_box(plain.begin())))
    });
    let states = nodes(100);
    let _level = build("least_conn", &states);
    let mirrored = Arc::clone(&states[0].1);
    g.bench_function("begin+drop/least_conn level", |b| {
        b.iter(|| drop(black_box(mirrored.begin())))
    });
    g.finish();

    let mut g = c.benchmark_group("pick/least_conn large weights");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for n in [100usize, 1000] {
        let states: Vec<(u64, Arc<NodeState>)> = (0..n)
            .map(|i| (70_000 + (i % 3) as u64, Arc::new(NodeState::default())))
            .collect();
        let sel = build("least_conn", &states);
        g.bench_with_input(BenchmarkId::new("1 thread", n), &n, |b, _| {
            b.iter(|| black_box(sel.select(b"", Eligible::All)))
        });
    }
    g.finish();
}

criterion_group!(benches, picks, realistic, feedback);
criterion_main!(benches);
