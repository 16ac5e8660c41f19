//! Strategies for the property tests of the registry payload parsers (the `fuzz` modules of
//! `consul/parse.rs`, `nacos/parse.rs` and `kubernetes/parse.rs`): arbitrary JSON built from
//! the registries' own member names, and byte-level mutations of valid answers. A parser must
//! return `Ok` or `Err` for each input, never panic, and answer in bounded time.

use proptest::prelude::*;
use serde_json::{Map, Number, Value};
use std::time::Duration;

/// The longest one input may take. Generous: the machine running the tests is shared and
/// loaded; a parser that loops or goes quadratic on a small input blows far past it.
pub(crate) const PER_INPUT: Duration = Duration::from_secs(2);

/// Run `f` and fail the case when it took longer than [`PER_INPUT`].
pub(crate) fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = thread_cpu();
    let out = f();
    let took = thread_cpu().saturating_sub(t);
    assert!(took < PER_INPUT, "{what} took {took:?} of CPU time");
    out
}

/// CPU time this thread has run so far (Linux: `/proc/thread-self/schedstat`, 0 elsewhere).
/// The per-input bound is on CPU time, not wall time: a thread waiting for a CPU on a loaded
/// machine does not count, so the bound catches loops and blow-ups without depending on load.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// Member names the three registries use, so that random objects often hit the paths the
/// parsers read.
const NAMES: &[&str] = &[
    // Consul
    "Node",
    "Service",
    "Address",
    "Port",
    "Meta",
    "Checks",
    "Status",
    "consul",
    // Nacos
    "hosts",
    "ip",
    "port",
    "weight",
    "healthy",
    "enabled",
    "metadata",
    "gRPC_port",
    "accessToken",
    "tokenTtl",
    // Kubernetes
    "kind",
    "apiVersion",
    "type",
    "object",
    "name",
    "namespace",
    "resourceVersion",
    "continue",
    "items",
    "subsets",
    "addresses",
    "notReadyAddresses",
    "ports",
    "endpoints",
    "conditions",
    "ready",
    "serving",
    "terminating",
    "labels",
    "kubernetes.io/service-name",
    "code",
    "message",
    "reason",
    "protocol",
    "addressType",
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(NAMES).prop_map(str::to_owned),
        1 => "\\PC{0,8}",
    ]
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "",
                "10.0.0.1",
                "::1",
                "[::1]",
                "web-1.shop.svc",
                "-x",
                "a..b",
                "http",
                "80",
                "65536",
                "-1",
                "ADDED",
                "MODIFIED",
                "DELETED",
                "BOOKMARK",
                "ERROR",
                "Endpoints",
                "EndpointSlice",
                "IPv4",
                "IPv6",
                "FQDN",
                "shop",
                "cart",
                "Expired",
                "\u{0}",
            ][..]
        )
        .prop_map(str::to_owned),
        "\\PC{0,16}",
        // A long host name: the label and length checks must stay linear.
        (1usize..2000).prop_map(|n| "a.".repeat(n)),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-2i64..70_000).prop_map(Value::from),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
    ]
}

/// Arbitrary JSON, up to a few levels deep.
pub(crate) fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        string().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((name(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// JSON tokens and troublesome values to insert.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"null",
    b"-1",
    b"1e999",
    b"\\u0000",
    b"\\ud800",
    b"99999999999999999999",
];

/// One edit of a byte string.
#[derive(Debug, Clone)]
pub(crate) enum Edit {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Duplicate(usize, usize),
}

pub(crate) fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Edit::Flip(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
        (
            any::<usize>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..8),
                prop::sample::select(TOKENS).prop_map(<[u8]>::to_vec),
            ]
        )
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 1usize..16).prop_map(|(i, n)| Edit::Remove(i, n)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Duplicate(i, n)),
    ];
    prop::collection::vec(edit, 1..6)
}

/// `valid` with `edits` applied (positions taken modulo the length).
pub(crate) fn mutate(valid: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut b = valid.to_vec();
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match e {
            Edit::Flip(i, bit) => {
                if !b.is_empty() {
                    let i = i % b.len();
                    b[i] ^= 1 << bit;
                }
            }
            Edit::Truncate(i) => b.truncate(at(*i, b.len())),
            Edit::Insert(i, bytes) => {
                let i = at(*i, b.len());
                b.splice(i..i, bytes.iter().copied());
            }
            Edit::Remove(i, n) => {
                let i = at(*i, b.len());
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
            Edit::Duplicate(i, n) => {
                let i = at(*i, b.len());
                let end = (i + n).min(b.len());
                let copy = b[i..end].to_vec();
                b.splice(end..end, copy);
            }
        }
    }
    b
}

/// `valid` with the member at a random position replaced by `with` (a structural mutation:
/// the document stays JSON but one value has the wrong shape).
pub(crate) fn replace_somewhere(valid: &Value, pick: usize, with: Value) -> Value {
    let mut v = valid.clone();
    let mut count = 0;
    count_nodes(&v, &mut count);
    let target = pick % count.max(1);
    let mut seen = 0;
    replace_nth(&mut v, target, &mut seen, &mut Some(with));
    v
}

fn count_nodes(v: &Value, n: &mut usize) {
    *n += 1;
    match v {
        Value::Array(a) => a.iter().for_each(|x| count_nodes(x, n)),
        Value::Object(o) => o.values().for_each(|x| count_nodes(x, n)),
        _ => {}
    }
}

fn replace_nth(v: &mut Value, target: usize, seen: &mut usize, with: &mut Option<Value>) {
    if *seen == target {
        if let Some(w) = with.take() {
            *v = w;
        }
        *seen += 1;
        return;
    }
    *seen += 1;
    match v {
        Value::Array(a) => a
            .iter_mut()
            .for_each(|x| replace_nth(x, target, seen, with)),
        Value::Object(o) => o
            .values_mut()
            .for_each(|x| replace_nth(x, target, seen, with)),
        _ => {}
    }
}
