//! Property tests of every parser in the configuration model a stranger's text reaches: chash
//! key variables and `vars_combinations` templates, access log templates, and whole
//! configuration documents (arbitrary YAML text, arbitrary documents in the configuration's
//! vocabulary, and mutations of every example in conf/examples). Each input must give `Ok` or
//! errors, never a panic, in bounded time. `PROPTEST_CASES` sets the number of cases per
//! property (256 by default).

use proptest::prelude::*;
use serde_json::{Map, Number, Value};
use std::time::Duration;
use weir_config::access_log::{Segment, Template as LogTemplate, Var as LogVar};
use weir_config::upstream::{Part, Template as KeyTemplate, Var as KeyVar};
use weir_config::{parse_document, parse_yaml, yaml_to_value, ConfigErrors};

/// The longest one input may take. Generous (the test machine is shared and loaded); a
/// parser that loops or goes quadratic on these small inputs blows far past it.
const PER_INPUT: Duration = Duration::from_secs(3);

/// CPU time this thread has run so far (Linux: `/proc/thread-self/schedstat`, 0 elsewhere).
/// The per-input bound is on CPU time, not wall time: a thread waiting for a CPU on a loaded
/// machine does not count, so the bound catches loops and blow-ups without depending on load.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = thread_cpu();
    let out = f();
    let took = thread_cpu().saturating_sub(t);
    assert!(took < PER_INPUT, "{what} took {took:?} of CPU time");
    out
}

/// Errors must say something: at least one, each with a reason.
fn check_errors(e: &ConfigErrors) {
    assert!(e.iter().count() > 0, "an Err without errors");
    for err in e.iter() {
        assert!(!err.reason.is_empty(), "an error without a reason: {err:?}");
    }
}

fn validate_text(text: &str) {
    if let Err(e) = timed("parse_yaml", || parse_yaml(text)) {
        check_errors(&e);
    }
}

fn validate_value(doc: &Value) {
    if let Err(e) = timed("parse_document", || parse_document(doc)) {
        check_errors(&e);
    }
}

/// Text that looks like template syntax more often than random text does.
fn template_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("$".to_owned()),
        Just("$$".to_owned()),
        Just("${".to_owned()),
        Just("}".to_owned()),
        Just("\\$".to_owned()),
        Just("??".to_owned()),
        Just(" ".to_owned()),
        prop::sample::select(
            &[
                "host",
                "uri",
                "remote_addr",
                "arg_",
                "arg_user",
                "http_",
                "http_x-id",
                "cookie_",
                "cookie_sid",
                "status",
                "request_time",
                "upstream_http_",
                "upstream_http_x_cache",
                "time_local",
                "request_id",
                "é",
                "\u{0}",
                "{{",
            ][..]
        )
        .prop_map(str::to_owned),
        "\\PC{0,6}",
    ];
    prop::collection::vec(piece, 0..16).prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn chash_key_variables(name in prop_oneof![template_text(), "\\PC{0,24}"]) {
        // A parsed variable names a request attribute; the named kinds carry a non-empty
        // suffix of [A-Za-z0-9_-].
        if let Some(KeyVar::Arg(s) | KeyVar::Cookie(s) | KeyVar::Http(s)) =
            timed("Var::parse", || KeyVar::parse(&name))
        {
            prop_assert!(!s.is_empty());
            prop_assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        }
    }

    #[test]
    fn chash_key_templates(t in prop_oneof![template_text(), "\\PC{0,64}"]) {
        match timed("Template::parse", || KeyTemplate::parse(&t)) {
            Ok(parsed) => {
                // Literal text is never lost: every literal piece comes from the input.
                for p in &parsed.parts {
                    if let Part::Lit(l) = p {
                        prop_assert!(!l.is_empty());
                    }
                }
            }
            Err(e) => prop_assert!(!e.is_empty()),
        }
    }

    #[test]
    fn chash_upstreams(hash_on in prop::sample::select(&["vars", "header", "cookie", "consumer", "vars_combinations", "bogus"][..]),
                       key in prop_oneof![template_text(), "\\PC{0,32}"]) {
        let doc = serde_json::json!({
            "upstreams": [{"id": "u", "type": "chash", "hash_on": hash_on, "key": key,
                           "nodes": {"127.0.0.1:1980": 1}}]
        });
        validate_value(&doc);
    }

    #[test]
    fn access_log_templates(t in prop_oneof![template_text(), "\\PC{0,64}"]) {
        match timed("access_log::Template::parse", || LogTemplate::parse(&t)) {
            Ok(parsed) => {
                prop_assert_eq!(parsed.source(), t.as_str());
                for s in parsed.segments() {
                    if let Segment::Var(v) = s {
                        // Every variable parsed from a template names itself back.
                        let back = LogVar::parse(&v.name());
                        prop_assert_eq!(back.as_ref(), Some(v));
                    }
                }
            }
            Err(e) => prop_assert!(!e.is_empty()),
        }
    }

    #[test]
    fn access_log_settings(format in prop_oneof![template_text(), Just("json".to_owned()), Just("default".to_owned())],
                           target in "\\PC{0,16}") {
        let doc = serde_json::json!({"server": {"access_log": {"format": format, "path": target}}});
        validate_value(&doc);
        let doc = serde_json::json!({"server": {"access_log": format}});
        validate_value(&doc);
    }
}

/// Member names of the configuration, so that random documents reach deep validators.
const NAMES: &[&str] = &[
    "routes",
    "services",
    "upstreams",
    "consumers",
    "certificates",
    "ca_certificates",
    "server",
    "admin",
    "discovery",
    "config_source",
    "id",
    "uri",
    "uris",
    "host",
    "hosts",
    "methods",
    "priority",
    "upstream",
    "upstream_id",
    "service_id",
    "plugins",
    "nodes",
    "type",
    "hash_on",
    "key",
    "host",
    "port",
    "weight",
    "scheme",
    "pass_host",
    "upstream_host",
    "timeout",
    "connect",
    "send",
    "read",
    "retries",
    "retry_timeout",
    "checks",
    "active",
    "passive",
    "healthy",
    "unhealthy",
    "http_statuses",
    "interval",
    "successes",
    "failures",
    "tls",
    "client_cert",
    "client_key",
    "keepalive_pool",
    "size",
    "idle_timeout",
    "requests",
    "discovery_type",
    "service_name",
    "discovery_args",
    "key-auth",
    "request-id",
    "username",
    "cert",
    "snis",
    "listen",
    "tls_listen",
    "access_log",
    "format",
    "path",
    "api_key",
    "allow_admin",
    "etcd",
    "file",
    "watch",
    "vars",
    "remote_addrs",
    "hash_balance_factor",
    "slow_start",
    "outlier_detection",
    "limits",
    "metadata",
    "labels",
    "desc",
    "name",
];

fn name() -> impl Strategy<Value = String> {
    prop_oneof![4 => prop::sample::select(NAMES).prop_map(str::to_owned), 1 => "\\PC{0,8}"]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-2i64..70_000).prop_map(Value::from),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(
            &[
                "",
                "/",
                "/*",
                "/a/*",
                "127.0.0.1:1980",
                "[::1]:80",
                "10.0.0.1:0",
                "*.example.com",
                "roundrobin",
                "chash",
                "ewma",
                "least_conn",
                "http",
                "https",
                "grpc",
                "GET",
                "remote_addr",
                "$host",
                "${",
                "1s",
                "-1",
                "nan",
                "consul",
                "nacos",
                "kubernetes",
                "dns",
            ][..]
        )
        .prop_map(|s| Value::String(s.to_owned())),
        "\\PC{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((name(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Every example configuration, as text.
fn examples() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conf/examples");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .expect("conf/examples")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read example");
            (p.display().to_string(), text)
        })
        .collect();
    out.sort();
    assert!(out.len() >= 10, "examples not found in {}", dir.display());
    out
}

fn example_values() -> &'static [Value] {
    static V: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        examples()
            .iter()
            .map(|(p, t)| yaml_to_value(t).unwrap_or_else(|e| panic!("{p}: {e}")))
            .collect()
    })
}

fn example_texts() -> &'static [(String, String)] {
    static T: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    T.get_or_init(examples)
}

/// `doc` with its `pick`-th value (in document order) replaced by `with`.
fn replace_somewhere(doc: &Value, pick: usize, with: Value) -> Value {
    fn count(v: &Value) -> usize {
        1 + match v {
            Value::Array(a) => a.iter().map(count).sum(),
            Value::Object(o) => o.values().map(count).sum(),
            _ => 0,
        }
    }
    fn go(v: &mut Value, n: &mut usize, with: &mut Option<Value>) {
        if *n == 0 {
            if let Some(w) = with.take() {
                *v = w;
            }
            return;
        }
        *n -= 1;
        match v {
            Value::Array(a) => a.iter_mut().for_each(|x| go(x, n, with)),
            Value::Object(o) => o.values_mut().for_each(|x| go(x, n, with)),
            _ => {}
        }
    }
    let mut v = doc.clone();
    let mut n = pick % count(&v);
    go(&mut v, &mut n, &mut Some(with));
    v
}

/// Byte-level edits of a text: flip a bit, cut, insert, delete or duplicate a run.
fn mutate(text: &str, edits: &[(u8, usize, usize, u8)]) -> String {
    let mut b = text.as_bytes().to_vec();
    for &(op, i, n, x) in edits {
        let at = if b.is_empty() { 0 } else { i % (b.len() + 1) };
        match op % 5 {
            0 if !b.is_empty() => {
                let i = i % b.len();
                b[i] ^= 1 << (x % 8);
            }
            1 => b.truncate(at),
            2 => b
                .splice(
                    at..at,
                    [x, b':', b'\n', b' ', b'-', b'&', b'*', b'[', b'{'][n % 9..]
                        .iter()
                        .copied(),
                )
                .for_each(drop),
            3 => {
                let end = (at + n % 32).min(b.len());
                b.drain(at..end);
            }
            _ => {
                let end = (at + n % 64).min(b.len());
                let copy = b[at..end].to_vec();
                b.splice(end..end, copy);
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

proptest! {
    #[test]
    fn arbitrary_yaml_text(text in prop_oneof![
        "\\PC{0,200}",
        prop::collection::vec(prop::sample::select(&[
            "routes:", "upstreams:", "\n", "  ", "- ", "{", "}", "[", "]", ": ", "&a ", "*a", "!!binary ",
            "!!map ", "<<: ", "? ", "|", ">", "'", "\"", "#", "---", "...", "id: 1", "uri: /", "nodes:",
            "\"127.0.0.1:80\": 1", "type: chash", "key: $host", "%YAML 1.2", "\t", "~",
        ][..]), 0..60).prop_map(|p| p.concat()),
    ]) {
        validate_text(&text);
    }

    #[test]
    fn arbitrary_documents(doc in json()) {
        validate_value(&doc);
        if let Ok(text) = serde_yaml_ng::to_string(&doc) {
            validate_text(&text);
        }
    }

    #[test]
    fn mutated_examples(which in any::<usize>(), pick in any::<usize>(), with in json()) {
        let docs = example_values();
        let doc = replace_somewhere(&docs[which % docs.len()], pick, with);
        validate_value(&doc);
    }

    #[test]
    fn mutated_example_text(which in any::<usize>(),
                            edits in prop::collection::vec((any::<u8>(), any::<usize>(), any::<usize>(), any::<u8>()), 1..6)) {
        let texts = example_texts();
        let (_, text) = &texts[which % texts.len()];
        validate_text(&mutate(text, &edits));
    }
}

/// Hostile documents a fuzzer rarely builds by chance: an alias bomb ("billion laughs"), deep
/// nesting, a huge flat document. Each is refused or read in bounded time.
#[test]
fn hostile_documents_are_bounded() {
    let mut bomb =
        String::from("a0: &a0 [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
    for i in 1..10 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"
        ));
    }
    bomb.push_str("routes: *a9\n");
    let deep_flow = format!("routes: {}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_block: String = (0..3_000)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .collect();
    let deep_json = {
        let mut v = Value::Null;
        for _ in 0..100 {
            v = serde_json::json!({ "upstream": v });
        }
        serde_json::json!({ "routes": [v] })
    };
    let wide: String = (0..20_000)
        .map(|i| {
            format!("  - {{id: r{i}, uri: /{i}, upstream: {{nodes: {{\"127.0.0.1:1\": 1}}}}}}\n")
        })
        .collect();
    for (what, text) in [
        ("alias bomb", bomb),
        ("deep flow", deep_flow),
        ("deep block", deep_block),
        ("wide", format!("routes:\n{wide}")),
    ] {
        let t = thread_cpu();
        let r = parse_yaml(&text);
        let took = thread_cpu().saturating_sub(t);
        // Twenty thousand routes are a valid, large document: allow them more time.
        assert!(took < Duration::from_secs(20), "{what}: {took:?}");
        if what != "wide" {
            let e = r.expect_err(what);
            check_errors(&e);
        }
    }
    validate_value(&deep_json);
}

/// Thousands of errors in one object (an Admin API client can send a megabyte of unknown
/// members) are found and sorted in near-linear time. Sorting them by document position was
/// quadratic (30 000 members took over 40 s); the bound is generous for a loaded machine.
#[test]
fn many_errors_in_one_object_are_bounded() {
    let mut m = Map::new();
    m.insert("id".into(), Value::from("u"));
    m.insert("nodes".into(), serde_json::json!({"127.0.0.1:1": 1}));
    for i in 0..30_000 {
        m.insert(format!("unknown{i}"), Value::from(i));
    }
    let doc = serde_json::json!({ "upstreams": [Value::Object(m)] });
    let t = thread_cpu();
    let e = parse_document(&doc).expect_err("unknown fields");
    let took = thread_cpu().saturating_sub(t);
    assert_eq!(e.iter().count(), 30_000);
    assert!(took < Duration::from_secs(10), "{took:?}");
}
