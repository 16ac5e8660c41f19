//! Time per pick of every algorithm at 3, 100 and 1,000 nodes, alone and with two threads
//! picking concurrently from the same balancer. `cargo bench -p weir-balance`.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_balance::{
    ring_id, ConsistentHash, Eligible, LeastConn, LevelSelector, NodeState, PeakEwma,
    SmoothWeighted,
};

fn build(alg: &str, n: usize) -> Arc<dyn LevelSelector> {
    let states: Vec<(u64, Arc<NodeState>)> = (0..n)
        .map(|i| (1 + (i % 3) as u64, Arc::new(NodeState::default())))
        .collect();
    match alg {
        "roundrobin" => {
            let w: Vec<u64> = states.iter().map(|s| s.0).collect();
            Arc::new(SmoothWeighted::new(&w))
        }
        "least_conn" => Arc::new(LeastConn::new(&states)),
        "ewma" => Arc::new(PeakEwma::new(&states)),
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

fn picks(c: &mut Criterion) {
    for alg in ["roundrobin", "chash", "least_conn", "ewma"] {
        let mut g = c.benchmark_group(format!("pick/{alg}"));
        g.measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(500));
        for n in [3usize, 100, 1000] {
            let sel = build(alg, n);
            g.bench_with_input(BenchmarkId::new("1 thread", n), &n, |b, _| {
                let mut k = 0;
                b.iter(|| {
                    k = (k + 1) & 3;
                    black_box(sel.select(KEYS[k], Eligible::All))
                })
            });
            g.bench_with_input(BenchmarkId::new("2 threads", n), &n, |b, _| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for t in 0..2 {
                            let sel = Arc::clone(&sel);
                            s.spawn(move || {
                                for i in 0..iters {
                                    black_box(
                                        sel.select(KEYS[((i as usize) + t) & 3], Eligible::All),
                                    );
                                }
                            });
                        }
                    });
                    // Per pick: both threads ran `iters` picks in this wall time.
                    start.elapsed() / 2
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, picks);
criterion_main!(benches);
