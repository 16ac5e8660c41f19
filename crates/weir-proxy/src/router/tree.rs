//! Compressed byte tries (radix trees) for the router: built once, then walked with no
//! allocation.
//!
//! A [`Trie`] is a forest: several tries share its arrays, each named by the index of its
//! root. A node stands for the bytes from its root to its end (its `depth` bytes); it carries
//! two values, one for a key *equal* to those bytes and one for a key *starting with* them. A
//! walk goes down along the request key as far as whole edges match
//! ([`Trie::deepest`]); every node a key passes through, and only those, stands for a prefix
//! of the key, so the nodes with a prefix value among the deepest node and its ancestors
//! ([`Trie::prefixes`]) are the prefixes of the key that the trie holds, longest first.
//!
//! Nodes are laid out breadth first, so that a node's children are adjacent: a node names
//! its first child and their number, and keeps their first label bytes, which the walk
//! searches (for many children, `first`, parallel to the nodes, holds them sorted).

/// No node.
const NO_NODE: u32 = u32::MAX;

#[cfg(test)]
thread_local! {
    /// Steps taken by walks on this thread (nodes visited, candidates looked at), for tests
    /// of the cost of a match.
    pub(super) static STEPS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Count one step of a walk (tests only; nothing otherwise).
#[inline(always)]
pub(super) fn step() {
    #[cfg(test)]
    STEPS.with(|s| s.set(s.get() + 1));
}

/// A key to walk: bytes by position, and whether a run of bytes matches an edge label.
pub(super) trait Key {
    fn at(&self, i: usize) -> Option<u8>;
    /// Whether the key's bytes from `at` are `label`.
    fn matches(&self, at: usize, label: &[u8]) -> bool;
}

/// A request path, compared byte for byte.
pub(super) struct Forward<'a>(pub &'a [u8]);

impl Key for Forward<'_> {
    #[inline]
    fn at(&self, i: usize) -> Option<u8> {
        self.0.get(i).copied()
    }
    #[inline]
    fn matches(&self, at: usize, label: &[u8]) -> bool {
        match self.0.get(at..at + label.len()) {
            Some(s) => same(s, label),
            None => false,
        }
    }
}

/// The first position of `b` in `edges` (`INLINE` if none), without a branch per byte: the
/// bytes equal to `b` are the zero bytes of `edges ^ b…b`, found with the classic
/// has-zero-byte mask (exact for the lowest zero byte).
#[inline]
fn position(e: &[u8; INLINE], b: u8) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let zero = |w: u64| {
        let x = w ^ (ONES * u64::from(b));
        x.wrapping_sub(ONES) & !x & HIGHS
    };
    let lo = u64::from_le_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
    // The last four bytes, padded with bytes that differ from `b`.
    let pad = u64::from(!b) * 0x0101_0101;
    let hi = u64::from_le_bytes([e[8], e[9], e[10], e[11], 0, 0, 0, 0]) | (pad << 32);
    match zero(lo) {
        0 => 8 + (zero(hi).trailing_zeros() / 8) as usize,
        m => (m.trailing_zeros() / 8) as usize,
    }
}

/// Eight bytes ASCII-lowercased at once: `A..=Z` gain 0x20, every other byte is kept.
#[inline]
fn lower8(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let low7 = x & !HIGHS;
    // High bit of each byte: its low 7 bits are >= 'A', and > 'Z'.
    let ge_a = low7 + ONES * u64::from(0x80 - b'A');
    let gt_z = low7 + ONES * u64::from(0x80 - b'Z' - 1);
    let upper = ge_a & !gt_z & !x & HIGHS;
    x | (upper >> 2)
}

/// Equal slices of the same length. Labels are short: words and bytes compared inline beat a
/// call to `memcmp`.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    if a.len() < 8 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    let (mut wa, mut wb) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut wa).zip(&mut wb) {
        match (<[u8; 8]>::try_from(x), <[u8; 8]>::try_from(y)) {
            (Ok(x), Ok(y)) if x == y => {}
            _ => return false,
        }
    }
    let (ra, rb) = (wa.remainder(), wb.remainder());
    ra.len() == rb.len() && ra.iter().zip(rb).all(|(x, y)| x == y)
}

/// A request host read from its last byte to its first, ASCII-lowercased on the fly (the
/// trie holds lowercased, reversed host patterns).
pub(super) struct ReversedLower<'a>(pub &'a [u8]);

impl Key for ReversedLower<'_> {
    #[inline]
    fn at(&self, i: usize) -> Option<u8> {
        let n = self.0.len();
        if i < n {
            self.0.get(n - 1 - i).map(u8::to_ascii_lowercase)
        } else {
            None
        }
    }
    #[inline]
    fn matches(&self, at: usize, label: &[u8]) -> bool {
        let n = self.0.len();
        if at + label.len() > n {
            return false;
        }
        // Key bytes at..at+len are host bytes n-at-len..n-at, reversed.
        let Some(host) = self.0.get(..n - at) else {
            return false;
        };
        let mut words = label.chunks_exact(8);
        let mut end = host.len();
        for w in &mut words {
            // Eight host bytes ending at `end`, last byte first, lowercased.
            let h = match host.get(end - 8..end).map(<[u8; 8]>::try_from) {
                Some(Ok(h)) => lower8(u64::from_be_bytes(h)),
                _ => return false,
            };
            match <[u8; 8]>::try_from(w) {
                Ok(w) if u64::from_le_bytes(w) == h => end -= 8,
                _ => return false,
            }
        }
        let rest = words.remainder();
        match host.get(end - rest.len()..end) {
            Some(h) => h
                .iter()
                .rev()
                .zip(rest)
                .all(|(a, b)| a.to_ascii_lowercase() == *b),
            None => false,
        }
    }
}

/// Labels and child lists up to this many bytes are kept in the node itself.
const INLINE: usize = 12;

/// One cache line: a walk step reads the node it reaches and nothing else, unless its label
/// or its child list is longer than [`INLINE`].
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct Node<V> {
    /// Bytes from the root to the end of this node.
    pub depth: u32,
    /// The nearest strict ancestor with a prefix value, or `NO_NODE`.
    up: u32,
    /// Children: `children..children + fanout`, sorted by their first label byte.
    children: u32,
    fanout: u32,
    /// The edge label from the parent after its first byte (that one is the parent's):
    /// `labels[label..label + label_len]`, also in `short` when it fits.
    label: u32,
    label_len: u32,
    short: [u8; INLINE],
    /// The children's first label bytes when they fit (else `first[children..]`).
    edges: [u8; INLINE],
    /// The value for keys equal to this node's bytes.
    pub exact: V,
    /// The value for keys starting with this node's bytes.
    pub prefix: V,
}

#[derive(Debug)]
pub(super) struct Trie<V> {
    nodes: Vec<Node<V>>,
    /// Each node's first label byte (0 for roots).
    first: Vec<u8>,
    labels: Vec<u8>,
}

impl<V: Copy> Trie<V> {
    pub fn new() -> Self {
        Trie {
            nodes: Vec::new(),
            first: Vec::new(),
            labels: Vec::new(),
        }
    }

    #[inline]
    pub fn node(&self, i: u32) -> Option<&Node<V>> {
        self.nodes.get(i as usize)
    }

    #[inline]
    fn child(&self, n: &Node<V>, b: u8) -> Option<u32> {
        let fanout = n.fanout as usize;
        let k = if fanout <= INLINE {
            Some(position(&n.edges, b)).filter(|&k| k < fanout)?
        } else {
            let start = n.children as usize;
            self.first
                .get(start..start + fanout)?
                .binary_search(&b)
                .ok()?
        };
        Some(n.children + k as u32)
    }

    #[inline]
    fn label<'s>(&'s self, n: &'s Node<V>) -> Option<&'s [u8]> {
        let len = n.label_len as usize;
        match n.short.get(..len) {
            Some(l) => Some(l),
            None => self.labels.get(n.label as usize..n.label as usize + len),
        }
    }

    /// The deepest node under `root` whose bytes are a prefix of `key`.
    #[inline]
    pub fn deepest<K: Key>(&self, root: u32, key: &K) -> u32 {
        let mut cur = root;
        while let Some(n) = self.node(cur) {
            step();
            let d = n.depth as usize;
            let Some(b) = key.at(d) else { break };
            let Some(c) = self.child(n, b) else { break };
            let Some(cn) = self.node(c) else { break };
            match self.label(cn) {
                Some(rest) if key.matches(d + 1, rest) => cur = c,
                _ => break,
            }
        }
        cur
    }

    /// The nodes with a prefix value among `from` and its ancestors, deepest first.
    #[inline]
    pub fn prefixes(&self, from: u32, has_prefix: fn(&V) -> bool) -> Prefixes<'_, V> {
        let next = match self.node(from) {
            Some(n) if has_prefix(&n.prefix) => from,
            Some(n) => n.up,
            None => NO_NODE,
        };
        Prefixes { trie: self, next }
    }

    /// Give back the arrays' spare capacity (once built: they grow by doubling).
    pub fn shrink_to_fit(&mut self) {
        self.nodes.shrink_to_fit();
        self.first.shrink_to_fit();
        self.labels.shrink_to_fit();
    }

    /// Bytes of heap held (capacity of the arrays).
    #[cfg(test)]
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node<V>>()
            + self.first.capacity()
            + self.labels.capacity()
    }
}

pub(super) struct Prefixes<'a, V> {
    trie: &'a Trie<V>,
    next: u32,
}

impl<'a, V: Copy> Iterator for Prefixes<'a, V> {
    type Item = &'a Node<V>;

    #[inline]
    fn next(&mut self) -> Option<&'a Node<V>> {
        let n = self.trie.node(self.next)?;
        step();
        self.next = n.up;
        Some(n)
    }
}

/// A trie under construction: plain nodes with owned labels, split as keys arrive.
#[derive(Debug)]
struct BNode<B> {
    label: Vec<u8>,
    /// Sorted by their labels' first byte.
    children: Vec<usize>,
    exact: Option<B>,
    prefix: Option<B>,
}

#[derive(Debug)]
pub(super) struct Builder<B> {
    nodes: Vec<BNode<B>>,
}

impl<B> Builder<B> {
    pub fn new() -> Self {
        Builder {
            nodes: vec![BNode {
                label: Vec::new(),
                children: Vec::new(),
                exact: None,
                prefix: None,
            }],
        }
    }

    /// The node for `key`, created (and edges split) as needed.
    fn node(&mut self, key: &[u8]) -> usize {
        let mut cur = 0usize;
        let mut rest = key;
        while let Some(&b) = rest.first() {
            let nodes = &self.nodes;
            let found = nodes[cur]
                .children
                .binary_search_by_key(&b, |&c| nodes[c].label.first().copied().unwrap_or(0));
            match found {
                Err(pos) => {
                    let new = self.nodes.len();
                    self.nodes.push(BNode {
                        label: rest.to_vec(),
                        children: Vec::new(),
                        exact: None,
                        prefix: None,
                    });
                    self.nodes[cur].children.insert(pos, new);
                    return new;
                }
                Ok(pos) => {
                    let c = self.nodes[cur].children[pos];
                    let label = &self.nodes[c].label;
                    let common = label.iter().zip(rest).take_while(|(a, b)| a == b).count();
                    if common < label.len() {
                        // Split the edge: cur -> mid (label[..common]) -> c (label[common..]).
                        let head: Vec<u8> = self.nodes[c].label.drain(..common).collect();
                        let mid = self.nodes.len();
                        self.nodes.push(BNode {
                            label: head,
                            children: vec![c],
                            exact: None,
                            prefix: None,
                        });
                        self.nodes[cur].children[pos] = mid;
                        cur = mid;
                    } else {
                        cur = c;
                    }
                    rest = &rest[common..];
                }
            }
        }
        cur
    }

    /// The value for keys equal to `key`, created by `init` if absent.
    pub fn exact(&mut self, key: &[u8], init: impl FnOnce() -> B) -> &mut B {
        let n = self.node(key);
        let slot = &mut self.nodes[n].exact;
        slot.get_or_insert_with(init)
    }

    /// The value for keys starting with `key`, created by `init` if absent.
    pub fn prefix(&mut self, key: &[u8], init: impl FnOnce() -> B) -> &mut B {
        let n = self.node(key);
        let slot = &mut self.nodes[n].prefix;
        slot.get_or_insert_with(init)
    }

    /// Append this trie to `trie` (breadth first, so that siblings are adjacent), mapping its
    /// values with `value` (`None`: no value); returns its root.
    pub fn freeze<V: Copy>(self, trie: &mut Trie<V>, mut value: impl FnMut(Option<B>) -> V) -> u32 {
        let base = trie.nodes.len() as u32;
        // Breadth-first order of the builder's nodes, and each one's place in it.
        let mut order: Vec<usize> = vec![0];
        let mut place = vec![base; self.nodes.len()];
        let mut i = 0;
        while let Some(&b) = order.get(i) {
            for &c in &self.nodes[b].children {
                place[c] = base + order.len() as u32;
                order.push(c);
            }
            i += 1;
        }
        let mut up = vec![NO_NODE; self.nodes.len()];
        let mut depth = vec![0u32; self.nodes.len()];
        let mut nodes: Vec<Option<BNode<B>>> = self.nodes.into_iter().map(Some).collect();
        trie.nodes.reserve(order.len());
        trie.first.reserve(order.len());
        for &b in &order {
            let Some(n) = nodes[b].take() else { continue };
            let below = if n.prefix.is_some() { place[b] } else { up[b] };
            for &c in &n.children {
                up[c] = below;
                depth[c] = depth[b] + nodes[c].as_ref().map_or(0, |x| x.label.len() as u32);
            }
            let (head, rest) = match n.label.split_first() {
                Some((&h, rest)) => (h, rest),
                None => (0, &[][..]),
            };
            let mut short = [0u8; INLINE];
            let label = match short.get_mut(..rest.len()) {
                Some(s) => {
                    s.copy_from_slice(rest);
                    0
                }
                None => {
                    trie.labels.extend_from_slice(rest);
                    (trie.labels.len() - rest.len()) as u32
                }
            };
            let mut edges = [0u8; INLINE];
            for (e, &c) in edges.iter_mut().zip(&n.children) {
                *e = nodes[c]
                    .as_ref()
                    .and_then(|x| x.label.first().copied())
                    .unwrap_or(0);
            }
            trie.first.push(head);
            trie.nodes.push(Node {
                depth: depth[b],
                up: up[b],
                children: n.children.first().map_or(0, |&c| place[c]),
                fanout: n.children.len() as u32,
                label,
                label_len: rest.len() as u32,
                short,
                edges,
                exact: value(n.exact),
                prefix: value(n.prefix),
            });
        }
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lower8_lowercases_ascii_letters_only() {
        for b in 0..=255u8 {
            let w = u64::from_le_bytes([b, b'A', b'z', b'@', b'[', b'Z', 0x80 | b'A', b]);
            let want = u64::from_le_bytes(
                [b, b'A', b'z', b'@', b'[', b'Z', 0x80 | b'A', b].map(|x| x.to_ascii_lowercase()),
            );
            assert_eq!(lower8(w), want, "{b}");
        }
    }

    #[test]
    fn reversed_lower_keys_match_labels() {
        let host = b"WWW.Example-Host.COM";
        let key = ReversedLower(host);
        let rev: Vec<u8> = host.iter().rev().map(u8::to_ascii_lowercase).collect();
        for at in 0..=rev.len() {
            for len in 0..=rev.len() - at {
                let label = &rev[at..at + len];
                assert!(key.matches(at, label), "{at} {len}");
                let mut wrong = label.to_vec();
                if let Some(b) = wrong.last_mut() {
                    *b ^= 1;
                    assert!(!key.matches(at, &wrong), "{at} {len}");
                }
            }
        }
        assert!(!key.matches(rev.len(), b"x"));
    }

    #[test]
    fn position_finds_the_first_equal_byte() {
        let mut e = [0u8; INLINE];
        for (i, x) in e.iter_mut().enumerate() {
            *x = b'a' + i as u8;
        }
        for (i, &x) in e.iter().enumerate() {
            assert_eq!(position(&e, x), i);
        }
        assert!(position(&e, b'z') >= INLINE);
        assert!(position(&e, 0) >= INLINE);
        assert!(position(&e, 0xff) >= INLINE);
        let mut z = [0u8; INLINE];
        z[0] = b'/';
        z[1] = 0x80;
        assert_eq!(position(&z, b'/'), 0);
        assert_eq!(position(&z, 0x80), 1);
        assert_eq!(position(&z, 0), 2);
        assert!(position(&z, 0x7f) >= INLINE);
    }
}
