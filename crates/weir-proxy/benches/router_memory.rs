//! The heap that routing and compiling take at scale, counted by a global allocator:
//! the router for 10,000 routes (the tries, and the linear matcher they replaced), and a whole
//! compilation (the snapshot and its tables) of 10,000 routes and 1,000 upstreams.
//! `cargo bench -p weir-proxy --bench router_memory` prints a table; it times nothing (the
//! counting allocator would slow the timings of `--bench router`).
//!
//! "retained" is what the built value holds (bytes allocated and not freed while building
//! it, and kept); "allocations" counts every allocation and reallocation while building, with
//! the bytes they asked for, freed or not; "peak
//! RSS" is the resident-set high-water mark during the build above the resident set before
//! it (Linux; the high-water mark is reset first through `/proc/self/clear_refs`).

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::hint::black_box;
use weir_config::Route;
use weir_proxy::router::Router;
use weir_proxy::SnapshotHandle;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[path = "../src/router/linear.rs"]
mod linear;

#[path = "support/routes.rs"]
mod routes;

/// The old router's method bits, which `linear` uses.
fn method_bit(m: &http::Method) -> u16 {
    routes::method_bit(m)
}

/// A `/proc/self/status` field in bytes (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> Option<usize> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

struct Measured {
    retained: isize,
    allocated: usize,
    allocations: usize,
    peak_rss: Option<usize>,
}

/// Build a value with `f`, keep it, and measure.
fn measure<T>(f: impl FnOnce() -> T) -> (T, Measured) {
    // Reset the high-water mark to the current resident set ("5", Linux 4.0+).
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let rss_before = status_kib("VmRSS:");
    let region = Region::new(GLOBAL);
    let v = black_box(f());
    let s = region.change();
    let peak_rss = match (reset, rss_before, status_kib("VmHWM:")) {
        (true, Some(b), Some(h)) => Some(h.saturating_sub(b)),
        _ => None,
    };
    (
        v,
        Measured {
            // (`bytes_allocated` and `bytes_deallocated` include reallocations' growth and
            // shrinking.)
            retained: s.bytes_allocated as isize - s.bytes_deallocated as isize,
            allocated: s.bytes_allocated,
            allocations: s.allocations + s.reallocations,
            peak_rss,
        },
    )
}

fn row(what: &str, m: &Measured, per: usize) {
    let peak = m.peak_rss.map_or("n/a".to_owned(), |p| {
        format!("{:.1} MiB", p as f64 / 1048576.0)
    });
    println!(
        "| {what} | {:.2} MiB ({} B/route) | {} ({:.1} MiB) | {peak} |",
        m.retained as f64 / 1048576.0,
        m.retained / per as isize,
        m.allocations,
        m.allocated as f64 / 1048576.0,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep it short then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 1_000 } else { 10_000 };
    let ups = n / 10;
    let yaml = routes::yaml(n, ups);
    let (res, parsed) = measure(|| routes::resources(&yaml));
    let pairs: Vec<(&Route, usize)> = res.routes.iter().zip(0..).collect();
    println!("{n} routes, {ups} upstreams\n");
    println!("| what | retained | allocations while building (bytes) | peak RSS growth |");
    println!("| --- | --- | --- | --- |");
    row("parsed and validated resources", &parsed, n);
    let (tries, m) = measure(|| Router::new(pairs.iter().map(|(r, i)| (*r, *i))));
    row("router: tries", &m, n);
    let (lin, m) = measure(|| linear::Router::new(pairs.iter().map(|(r, i)| (*r, *i))));
    row("router: linear (before)", &m, n);
    // Both agree on a request, so that neither is optimised away.
    let probe = |h: &str, p: &str| {
        (
            tries
                .find_pair(h, p, &http::Method::GET)
                .map(|(t, i)| (*t, i)),
            lin.find_pair(h, p, &http::Method::GET)
                .map(|(t, i)| (*t, i)),
        )
    };
    let (a, b) = probe("api.example.org", "/svc3/v3/item3");
    assert_eq!(a, b);
    drop((tries, lin));
    let (handle, m) = measure(|| SnapshotHandle::new(&res));
    row("first load: snapshot and tables", &m, n);
    // A reload: the new snapshot, with the old one still held (as by requests in flight).
    let reload = |what: &str| {
        let old = handle.load();
        let (_, m) = measure(|| handle.apply(&res));
        row(what, &m, n);
        drop(old);
    };
    reload("reload: new snapshot");
    handle.tables().metrics.enable();
    reload("reload with metrics on (first)");
    reload("reload with metrics on (again)");
    assert!(handle
        .load()
        .route("api.example.org", "/svc3/v3/item3", &http::Method::GET)
        .is_some());
}
