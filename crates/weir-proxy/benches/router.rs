//! What routing costs at scale. `cargo bench -p weir-proxy --bench router`.
//!
//! - `match/<what>_<impl>/<n>`: one match among `n` routes (10 or 10,000; the mix is in
//!   `support/routes.rs`), for `impl` `tries` (the router) and `linear` (the matcher it
//!   replaced, kept in `src/router/linear.rs` and included here by path). `mixed` cycles
//!   through 64 requests (hits of every kind, and misses that fall to the catch-all); the
//!   others repeat one request of a kind (all in cache, well predicted).
//! - `build/...`: for 10,000 routes and 1,000 upstreams, building the router alone (tries and
//!   linear), parsing and validating the YAML, and the whole compilation a configuration
//!   goes through: the first load (`SnapshotHandle::new`, fresh tables) and a reload
//!   (`SnapshotHandle::apply` on a live handle, with metrics off and on).
//!
//! The global allocator is mimalloc, as in the `weir` binary. Heap figures are in the
//! `router_memory` bench (its counting allocator would slow these).

use criterion::measurement::WallTime;
use criterion::{
    black_box, criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion,
};
use std::time::Instant;
use weir_config::Route;
use weir_proxy::router::Router;
use weir_proxy::SnapshotHandle;

/// As in the `weir` binary (compilation allocates; a match does not).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../src/router/linear.rs"]
mod linear;

#[path = "support/routes.rs"]
mod routes;

use routes::{requests, resources, yaml, Request};

/// The old router's method bits, which `linear` uses.
fn method_bit(m: &http::Method) -> u16 {
    routes::method_bit(m)
}

fn check(r: &Router<String>, l: &linear::Router<String>, reqs: &[Request]) {
    for q in reqs {
        let got = r.find_pair(&q.host, &q.path, &q.method);
        assert_eq!(
            got.map(|(t, _)| t),
            Some(&q.expect),
            "{} {}",
            q.host,
            q.path
        );
        assert_eq!(got, l.find_pair(&q.host, &q.path, &q.method));
    }
}

/// CPU time this thread has run, in ns (Linux `/proc/thread-self/schedstat`): unlike wall
/// time, not counting the time other processes on a busy machine had the CPU.
fn cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Median wall and CPU time of `runs` runs of `f`, printed.
fn cpu_and_wall(what: &str, runs: usize, mut f: impl FnMut()) {
    let mut wall = Vec::with_capacity(runs);
    let mut cpu = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (c0, t0) = (cpu_ns(), Instant::now());
        f();
        wall.push(t0.elapsed().as_secs_f64() * 1e3);
        if let (Some(a), Some(b)) = (c0, cpu_ns()) {
            cpu.push((b - a) as f64 / 1e6);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    eprintln!(
        "{what}: median of {runs}: {:.1} ms wall, {:.1} ms CPU",
        median(&mut wall),
        median(&mut cpu)
    );
}

fn build(c: &mut Criterion) {
    let text = yaml(10_000, 1_000);
    let res = resources(&text);
    // Not under `cargo test --benches` (no `--bench`), where criterion runs each bench once.
    if std::env::args().any(|a| a == "--bench") {
        let pairs: Vec<(&Route, usize)> = res.routes.iter().zip(0..).collect();
        cpu_and_wall("router (tries), 10000 routes", 30, || {
            black_box(Router::new(pairs.iter().map(|(r, i)| (*r, *i))));
        });
        cpu_and_wall("router (linear), 10000 routes", 30, || {
            black_box(linear::Router::new(pairs.iter().map(|(r, i)| (*r, *i))));
        });
        cpu_and_wall("first load, 10000 routes 1000 upstreams", 20, || {
            black_box(SnapshotHandle::new(&res));
        });
        let handle = SnapshotHandle::new(&res);
        cpu_and_wall("reload, 10000 routes 1000 upstreams", 20, || {
            handle.apply(&res)
        });
        handle.tables().metrics.enable();
        handle.apply(&res);
        cpu_and_wall(
            "reload with metrics, 10000 routes 1000 upstreams",
            20,
            || handle.apply(&res),
        );
        // `apply` keeps a copy of the resources it compiles, dropping the previous copy.
        cpu_and_wall("  of which: cloning and dropping the resources", 20, || {
            drop(black_box(res.clone()))
        });
        cpu_and_wall("parse and validate, 10000 routes 1000 upstreams", 5, || {
            black_box(resources(&text));
        });
    }
    let mut g = c.benchmark_group("build");
    g.sample_size(30);
    assert_eq!((res.routes.len(), res.upstreams.len()), (10_000, 1_000));
    let pairs: Vec<(&Route, usize)> = res.routes.iter().zip(0..).collect();
    g.bench_function("router_tries_10000_routes", |b| {
        b.iter(|| black_box(Router::new(pairs.iter().map(|(r, i)| (*r, *i)))))
    });
    g.bench_function("router_linear_10000_routes", |b| {
        b.iter(|| black_box(linear::Router::new(pairs.iter().map(|(r, i)| (*r, *i)))))
    });
    g.sample_size(20);
    g.bench_function("first_load_10000_routes_1000_upstreams", |b| {
        b.iter(|| black_box(SnapshotHandle::new(&res)))
    });
    let handle = SnapshotHandle::new(&res);
    g.bench_function("reload_10000_routes_1000_upstreams", |b| {
        b.iter(|| handle.apply(black_box(&res)))
    });
    handle.tables().metrics.enable();
    handle.apply(&res);
    g.bench_function("reload_metrics_10000_routes_1000_upstreams", |b| {
        b.iter(|| handle.apply(black_box(&res)))
    });
    g.sample_size(10);
    g.bench_function("parse_validate_10000_routes_1000_upstreams", |b| {
        b.iter(|| black_box(resources(black_box(&text))))
    });
    g.finish();
}

/// The `match` benchmarks of one matcher (`find`, inlined: generic, not a `dyn` call).
fn by_impl(
    g: &mut BenchmarkGroup<'_, WallTime>,
    n: usize,
    reqs: &[Request],
    name: &str,
    find: impl Fn(&Request) -> Option<usize>,
) {
    g.bench_with_input(BenchmarkId::new(format!("mixed_{name}"), n), &n, |b, _| {
        let mut k = 0usize;
        b.iter(|| {
            k = (k + 1) & 63;
            black_box(find(black_box(&reqs[k])))
        })
    });
    for what in ["exact", "prefix", "host", "wildcard", "catch_all"] {
        let Some(q) = reqs.iter().find(|q| q.what == what) else {
            panic!("no {what} request")
        };
        g.bench_with_input(BenchmarkId::new(format!("{what}_{name}"), n), &n, |b, _| {
            b.iter(|| black_box(find(black_box(q))))
        });
    }
}

fn matching(c: &mut Criterion) {
    let mut g = c.benchmark_group("match");
    g.sample_size(200);
    for n in [10usize, 10_000] {
        let res = resources(&yaml(n, 10));
        assert_eq!(res.routes.len(), n);
        let tries = Router::new(res.routes.iter().map(|r| (r, r.id.0.clone())));
        let lin = linear::Router::new(res.routes.iter().map(|r| (r, r.id.0.clone())));
        let reqs = requests(n);
        check(&tries, &lin, &reqs);
        by_impl(&mut g, n, &reqs, "tries", |q| {
            tries.find_pair(&q.host, &q.path, &q.method).map(|(_, i)| i)
        });
        by_impl(&mut g, n, &reqs, "linear", |q| {
            lin.find_pair(&q.host, &q.path, &q.method).map(|(_, i)| i)
        });
    }
    g.finish();
}

criterion_group!(benches, matching, build);
criterion_main!(benches);
