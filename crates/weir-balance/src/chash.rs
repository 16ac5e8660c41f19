//! `chash` (docs/algorithms.md): a consistent-hash ring bit-compatible with APISIX's
//! `resty.chash` (NGINX-style ketama with CRC-32), so a migrating user's keys keep their nodes;
//! optionally with bounded loads (`hash_balance_factor`).
//!
//! Written here rather than taken from `pingora-ketama` because the point construction differs
//! (APISIX hashes `id ++ previous hash` with CRC-32 and scales points by gcd-reduced weight),
//! and Pingora's ring panics on weight 0.

use crate::node::NodeState;
use crate::selection::{BackendNode, Eligible, FromBackends, LevelSelector, SelectionConfig};
use pingora_load_balancing::Backend;
use std::net::SocketAddr;
use std::sync::Arc;

/// Points per unit of (gcd-reduced) weight.
const POINTS: u64 = 160;

#[derive(Debug)]
pub struct ConsistentHash {
    /// `(hash, node index)`, sorted by hash (ties: node order, then emission order).
    ring: Vec<(u32, u32)>,
    weights: Box<[u64]>,
    nodes: Box<[Arc<NodeState>]>,
    /// Bounded loads: skip nodes at or above `ceil(c × M × w / Σw)` in-flight.
    factor: Option<f64>,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The ring identity of a node: `"<addr>:<port>"` with every `:` replaced by NUL.
pub fn ring_id(addr: &str, port: u16) -> Vec<u8> {
    format!("{addr}:{port}")
        .into_bytes()
        .into_iter()
        .map(|b| if b == b':' { 0 } else { b })
        .collect()
}

/// The ring identity of a Pingora backend, as Weir's proxy hashes an IP node: IPv4 as
/// `a.b.c.d`, IPv6 in brackets, then the port (see [`ring_id`]). A Unix-socket backend hashes
/// its path.
pub fn backend_ring_id(backend: &Backend) -> Vec<u8> {
    match backend.addr.as_inet() {
        Some(SocketAddr::V4(a)) => ring_id(&a.ip().to_string(), a.port()),
        Some(SocketAddr::V6(a)) => ring_id(&format!("[{}]", a.ip()), a.port()),
        None => backend
            .addr
            .to_string()
            .into_bytes()
            .into_iter()
            .map(|b| if b == b':' { 0 } else { b })
            .collect(),
    }
}

/// For `LoadBalancer<Selection<ConsistentHash>>`: the ring of the backends' addresses
/// ([`backend_ring_id`]) and weights, bit-compatible with APISIX, with the config's
/// `hash_balance_factor`. The key is the one given to `LoadBalancer::select`, hashed with
/// CRC-32 as APISIX does.
impl FromBackends for ConsistentHash {
    fn from_backends(nodes: &[BackendNode<'_>], config: &SelectionConfig) -> Self {
        let ring: Vec<(Vec<u8>, u64, Arc<NodeState>)> = nodes
            .iter()
            .map(|n| (backend_ring_id(n.backend), n.weight(), Arc::clone(n.state)))
            .collect();
        ConsistentHash::new(&ring, config.hash_balance_factor())
    }
}

impl ConsistentHash {
    /// `nodes`: `(ring id, weight, state)` in node order; see [`ring_id`].
    pub fn new(nodes: &[(Vec<u8>, u64, Arc<NodeState>)], factor: Option<f64>) -> Self {
        let g = nodes.iter().fold(0, |g, (_, w, _)| gcd(g, *w)).max(1);
        let mut ring = Vec::new();
        for (idx, (id, w, _)) in nodes.iter().enumerate() {
            let mut h: u32 = 0;
            let mut buf = Vec::with_capacity(id.len() + 4);
            for _ in 0..(w / g) * POINTS {
                buf.clear();
                buf.extend_from_slice(id);
                buf.extend_from_slice(&h.to_le_bytes());
                h = crc32fast::hash(&buf);
                ring.push((h, idx as u32));
            }
        }
        // Stable: equal hashes keep node order, then emission order.
        ring.sort_by_key(|p| p.0);
        ConsistentHash {
            ring,
            weights: nodes.iter().map(|(_, w, _)| *w).collect(),
            nodes: nodes.iter().map(|(_, _, n)| Arc::clone(n)).collect(),
            factor,
        }
    }

    /// Index of the first point with hash >= crc32(key), wrapping to 0.
    fn start(&self, key: &[u8]) -> usize {
        let h = crc32fast::hash(key);
        let i = self.ring.partition_point(|p| p.0 < h);
        if i == self.ring.len() {
            0
        } else {
            i
        }
    }

    /// The first point's hash values of the ring (for tests and tooling).
    pub fn points(&self) -> impl Iterator<Item = (u32, usize)> + '_ {
        self.ring.iter().map(|(h, i)| (*h, *i as usize))
    }
}

impl LevelSelector for ConsistentHash {
    fn can_pick(&self, index: usize) -> bool {
        self.weights.get(index).is_some_and(|w| *w > 0)
    }

    fn select(&self, key: &[u8], eligible: Eligible<'_>) -> Option<usize> {
        if self.ring.is_empty() {
            return None;
        }
        // Bounded loads: caps from the eligible positive-weight nodes' loads and weights.
        let caps = self.factor.map(|c| {
            let (mut load, mut wsum) = (0u64, 0u64);
            for i in 0..self.weights.len() {
                if self.weights[i] > 0 && eligible.test(i) {
                    load += self.nodes[i].in_flight();
                    wsum += self.weights[i];
                }
            }
            (c, (load + 1) as f64, wsum.max(1) as f64)
        });
        let under_cap = |i: usize| match caps {
            None => true,
            Some((c, m, wsum)) => {
                let cap = (c * m * self.weights[i] as f64 / wsum).ceil();
                (self.nodes[i].in_flight() as f64) < cap
            }
        };
        let start = self.start(key);
        let n = self.ring.len();
        // One turn at most; a node met again is skipped cheaply by the checks.
        (0..n)
            .map(|k| self.ring[(start + k) % n].1 as usize)
            .find(|&i| eligible.test(i) && under_cap(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(
        addrs: &[(&str, u16, u64)],
        factor: Option<f64>,
    ) -> (ConsistentHash, Vec<Arc<NodeState>>) {
        let states: Vec<Arc<NodeState>> = addrs
            .iter()
            .map(|_| Arc::new(NodeState::default()))
            .collect();
        let nodes: Vec<(Vec<u8>, u64, Arc<NodeState>)> = addrs
            .iter()
            .zip(&states)
            .map(|((a, p, w), s)| (ring_id(a, *p), *w, Arc::clone(s)))
            .collect();
        (ConsistentHash::new(&nodes, factor), states)
    }

    #[test]
    fn apisix_check_values() {
        // First points of node 10.0.0.1:8080, as emitted.
        let id = ring_id("10.0.0.1", 8080);
        let mut buf = id.clone();
        buf.extend_from_slice(&0u32.to_le_bytes());
        let h1 = crc32fast::hash(&buf);
        let mut buf = id.clone();
        buf.extend_from_slice(&h1.to_le_bytes());
        let h2 = crc32fast::hash(&buf);
        assert_eq!((h1, h2), (0xf1ea5a8f, 0x4bd08e68));

        assert_eq!(crc32fast::hash(b"alice"), 0x278ebc47);
        let (r, _) = ring(
            &[
                ("10.0.0.1", 8080, 1),
                ("10.0.0.2", 8080, 1),
                ("10.0.0.3", 8080, 1),
            ],
            None,
        );
        let pick = |k: &[u8]| r.select(k, Eligible::All);
        assert_eq!(pick(b"alice"), Some(0));
        assert_eq!(pick(b"bob"), Some(2));
        assert_eq!(pick(b"carol"), Some(1));
        assert_eq!(pick(b"/index.html"), Some(0));
    }

    #[test]
    fn ipv6_ids_replace_every_colon() {
        assert_eq!(ring_id("[::1]", 8080), b"[\0\x001]\x008080".to_vec());
    }

    #[test]
    fn weights_are_gcd_reduced_and_zero_gets_no_points() {
        let (r, _) = ring(&[("a", 1, 3000), ("b", 1, 6000), ("z", 1, 0)], None);
        let counts = r.points().fold([0usize; 3], |mut c, (_, i)| {
            c[i] += 1;
            c
        });
        assert_eq!(counts, [160, 320, 0]);
        let (r, _) = ring(&[("z", 1, 0)], None);
        assert_eq!(r.select(b"k", Eligible::All), None);
    }

    #[test]
    fn removing_a_node_moves_only_its_keys() {
        let three = [
            ("10.0.0.1", 80, 1),
            ("10.0.0.2", 80, 1),
            ("10.0.0.3", 80, 1),
        ];
        let (r3, _) = ring(&three, None);
        let (r2, _) = ring(&[three[0], three[2]], None);
        let map2 = [0usize, 2];
        let mut moved = 0;
        for k in 0..2000 {
            let key = format!("user-{k}");
            let before = r3.select(key.as_bytes(), Eligible::All).unwrap();
            let after = map2[r2.select(key.as_bytes(), Eligible::All).unwrap()];
            if before != 1 {
                assert_eq!(before, after, "{key} moved although its node stayed");
            } else {
                moved += 1;
            }
        }
        assert!(
            moved > 400 && moved < 900,
            "{moved} keys were on the removed node"
        );
    }

    #[test]
    fn unavailable_owner_is_skipped_clockwise_and_the_ring_is_stable() {
        let (r, _) = ring(&[("a", 1, 1), ("b", 1, 1), ("c", 1, 1)], None);
        let owner = r.select(b"key", Eligible::All).unwrap();
        let next = r.select(b"key", Eligible::Only(&|i| i != owner)).unwrap();
        assert_ne!(owner, next);
        // The same walk every time: retries see the nodes in the same order.
        assert_eq!(
            r.select(b"key", Eligible::Only(&|i| i != owner)),
            Some(next)
        );
        assert_eq!(r.select(b"key", Eligible::All), Some(owner));
    }

    #[test]
    fn bounded_loads_cap_a_hot_key() {
        let (r, states) = ring(&[("a", 1, 1), ("b", 1, 1), ("c", 1, 1)], Some(1.25));
        let owner = r.select(b"hot", Eligible::All).unwrap();
        let mut guards = Vec::new();
        let mut per_node = [0u32; 3];
        for _ in 0..30 {
            let i = r.select(b"hot", Eligible::All).unwrap();
            per_node[i] += 1;
            guards.push(states[i].begin());
        }
        // Without bounds all 30 would go to the owner; with c = 1.25 none exceeds
        // ceil(1.25 × M / 3) where M ≤ 30.
        assert!(per_node[owner] <= 13, "{per_node:?}");
        assert!(per_node.iter().all(|&c| c > 0), "{per_node:?}");
    }
}
