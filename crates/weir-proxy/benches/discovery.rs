//! What discovery costs: a pick on a discovered upstream against the same static upstream,
//! and applying a registry update of 1,000 instances (a recompile, off the request path).
//! `cargo bench -p weir-proxy --bench discovery`.

use async_trait::async_trait;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use weir_discovery::{DiscoveryRegistry, Feed, Node, Registry};
use weir_proxy::upstream::Walk;
use weir_proxy::SnapshotHandle;

/// A registry that never runs: the bench publishes into its feed directly.
struct Idle;

#[async_trait]
impl Registry for Idle {
    async fn run(&self, _feed: Arc<Feed>) {
        std::future::pending::<()>().await;
    }
}

fn instances(n: usize) -> Vec<Node> {
    (0..n)
        .map(|i| {
            Node::new(
                format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
                8080,
                1 + (i % 3) as u32,
                0,
            )
        })
        .collect()
}

fn yaml_static(n: usize) -> String {
    let nodes: Vec<String> = instances(n)
        .iter()
        .map(|x| format!("\"{}:{}\": {}", x.host, x.port, x.weight))
        .collect();
    format!(
        "routes: [{{id: r, uri: /*, upstream_id: u}}]\nupstreams:\n  - id: u\n    type: roundrobin\n    nodes: {{{}}}\n",
        nodes.join(", ")
    )
}

const YAML_DISCOVERED: &str = "routes: [{id: r, uri: /*, upstream_id: u}]\nupstreams:\n  - id: u\n    type: roundrobin\n    service_name: web\n    discovery_type: idle\n";

fn resources(yaml: &str) -> weir_config::Resources {
    let ext = weir_config::Extensions::new().discovery("idle");
    match weir_config::parse_yaml_ext(yaml, &ext) {
        Ok(l) => l.config.resources,
        Err(e) => panic!("{e}"),
    }
}

fn discovered(n: usize) -> (Arc<SnapshotHandle>, Arc<Feed>) {
    let mut reg = DiscoveryRegistry::new();
    reg.register("idle", Arc::new(Idle));
    let feed = Arc::clone(&reg.get("idle").expect("registered").feed);
    feed.publish(HashMap::from([("web".to_owned(), instances(n))]));
    let h = SnapshotHandle::with_discovery(&resources(YAML_DISCOVERED), Arc::new(reg));
    (h, feed)
}

fn pick(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    for n in [3usize, 100] {
        let stat = SnapshotHandle::new(&resources(&yaml_static(n)));
        let (disc, _feed) = discovered(n);
        for (name, h) in [("static", &stat), ("discovered", &disc)] {
            let snap = h.load();
            let up = Arc::clone(&snap.upstreams["upstreams/u"]);
            assert_eq!(up.nodes.len(), n);
            g.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    let mut walk = Walk::default();
                    black_box(up.pick(b"", &mut walk))
                })
            });
        }
    }
    g.finish();
}

fn update(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply_update");
    g.sample_size(20);
    let (h, feed) = discovered(1000);
    let flip = Mutex::new(false);
    g.bench_function("1000_instances", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                // A real change each time: one instance's weight moves.
                let mut nodes = instances(1000);
                let mut f = flip.lock().unwrap_or_else(|p| p.into_inner());
                *f = !*f;
                if *f {
                    nodes[0].weight += 10;
                }
                drop(f);
                feed.publish(HashMap::from([("web".to_owned(), nodes)]));
                let t = Instant::now();
                h.refresh();
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, pick, update);
criterion_main!(benches);
