//! Weir's four algorithms inside a plain Pingora `LoadBalancer<Selection<S>>`, over weighted
//! static backends on 127.0.0.1 (nothing connects to them): the picks each one makes, and how
//! the caller feeds `least_conn` and `ewma` their state with `Attempt`s.
//!
//! `cargo run -p weir-balance --example pingora_load_balancer`

use pingora_load_balancing::{discovery, Backend, Backends, LoadBalancer};
use std::fmt::Write;
use std::time::{Duration, Instant};
use weir_balance::{
    node_state, Attempt, ConsistentHash, FromBackends, LeastConn, PeakEwma, Selection,
    SelectionConfig, SmoothWeighted,
};

fn main() {
    print!("{}", run());
}

/// A Pingora balancer over static `(address, weight)` backends: `LoadBalancer::try_from_iter`
/// gives every backend weight 1, so build the set and run the first update by hand.
fn balancer<S: FromBackends + 'static>(
    nodes: &[(&str, usize)],
    config: SelectionConfig,
) -> LoadBalancer<Selection<S>> {
    let set = nodes
        .iter()
        .map(|(addr, w)| Backend::new_with_weight(addr, *w).expect("socket address"))
        .collect();
    let lb = LoadBalancer::from_backends_with_config(
        Backends::new(discovery::Static::new(set)),
        Some(config),
    );
    // Static discovery's update is ready on its first poll.
    {
        let update = std::pin::pin!(lb.update());
        let cx = &mut std::task::Context::from_waker(std::task::Waker::noop());
        match std::future::Future::poll(update, cx) {
            std::task::Poll::Ready(r) => r.expect("static discovery"),
            std::task::Poll::Pending => unreachable!("static discovery does not wait"),
        }
    }
    lb
}

fn port(b: &Backend) -> u16 {
    b.addr.as_inet().map_or(0, |a| a.port())
}

fn pick<S: FromBackends + 'static>(lb: &LoadBalancer<Selection<S>>, key: &[u8]) -> Backend {
    lb.select(key, 8).expect("a backend")
}

const NODES: [(&str, usize); 3] = [
    ("127.0.0.1:8001", 3),
    ("127.0.0.1:8002", 2),
    ("127.0.0.1:8003", 1),
];

/// The demo's output.
fn run() -> String {
    let mut out = String::new();

    // roundrobin: smooth WRR, exact interleaving.
    let rr = balancer::<SmoothWeighted>(&NODES, SelectionConfig::new());
    let picks: Vec<String> = (0..6).map(|_| port(&pick(&rr, b"")).to_string()).collect();
    writeln!(out, "roundrobin 3:2:1: {}", picks.join(" ")).ok();
    // A refused backend (down, or `select_with`'s accept says no) keeps its turn frozen.
    let picks: Vec<String> = (0..6)
        .map(|_| {
            let b = rr.select_with(b"", 8, |b, healthy| healthy && port(b) != 8001);
            port(&b.expect("8002 or 8003")).to_string()
        })
        .collect();
    writeln!(out, "roundrobin without 8001: {}", picks.join(" ")).ok();

    // chash: the key given to `select` is hashed (CRC-32, APISIX's ring).
    let chash = balancer::<ConsistentHash>(&NODES, SelectionConfig::new());
    let keys: Vec<String> = ["alice", "bob", "carol", "dave", "erin"]
        .iter()
        .map(|k| format!("{k}->{}", port(&pick(&chash, k.as_bytes()))))
        .collect();
    writeln!(out, "chash: {}", keys.join(" ")).ok();

    // least_conn: the caller holds an `Attempt` per request in flight.
    let lc = balancer::<LeastConn>(&NODES, SelectionConfig::new());
    let mut attempts = Vec::new();
    let mut picks = Vec::new();
    for _ in 0..6 {
        let b = pick(&lc, b"");
        picks.push(port(&b).to_string());
        attempts.push(Attempt::begin(&b).expect("from a Selection"));
    }
    writeln!(out, "least_conn, 6 in flight: {}", picks.join(" ")).ok();
    drop(attempts); // every request done: counts back to 0

    // ewma: latency samples steer the picks. `Attempt::finish` samples the time since
    // `Attempt::begin`; here one explicit sample: 8001 answers in 400 ms (above its 30 ms
    // estimate, so it replaces it at once).
    let config = SelectionConfig::new();
    let ewma = balancer::<PeakEwma>(&NODES[..2], config.clone());
    let before = port(&pick(&ewma, b""));
    let now = Instant::now();
    let slow = Backend::new(NODES[0].0).expect("socket address");
    let slow = config
        .node_state(&slow)
        .expect("live while the balancer holds it");
    slow.observe_at(Duration::from_millis(400), now);
    let after = pick(&ewma, b"");
    let ms = |b: &Backend| node_state(b).map_or(0.0, |s| s.ewma_at(now) * 1e3);
    writeln!(
        out,
        "ewma 3:2: {before} before samples, {} after a 400 ms sample on 8001 \
         (estimates {:.0} ms, {:.0} ms)",
        port(&after),
        slow.ewma_at(now) * 1e3,
        ms(&after),
    )
    .ok();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_runs_and_picks_as_documented() {
        let out = run();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "roundrobin 3:2:1: 8001 8002 8001 8003 8002 8001");
        assert_eq!(
            lines[1],
            "roundrobin without 8001: 8002 8003 8002 8002 8003 8002"
        );
        // chash: the same keys land on the same backends every run, on more than one.
        assert_eq!(run().lines().nth(2), Some(lines[2]));
        let ports: std::collections::BTreeSet<&str> = lines[2]
            .split(' ')
            .skip(1)
            .map(|kv| kv.split("->").nth(1).expect("key->port"))
            .collect();
        assert!(ports.len() >= 2, "{}", lines[2]);
        // Lowest (in_flight + 1) / weight, ties to the first after the previous pick.
        assert_eq!(
            lines[3],
            "least_conn, 6 in flight: 8001 8002 8001 8002 8003 8001"
        );
        assert_eq!(
            lines[4],
            "ewma 3:2: 8001 before samples, 8002 after a 400 ms sample on 8001 \
             (estimates 400 ms, 30 ms)"
        );
        print!("{out}");
    }
}
