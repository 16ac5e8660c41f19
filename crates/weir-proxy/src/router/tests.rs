use super::*;
use proptest::prelude::*;
use weir_config::Id;

fn routes(yaml: &str) -> Vec<Route> {
    weir_config::parse_yaml(yaml)
        .unwrap()
        .config
        .resources
        .routes
}

fn find<'a>(r: &'a Router<&'a str>, host: &str, path: &str) -> Option<&'a str> {
    r.find(host, path, &http::Method::GET).copied()
}

#[test]
fn specificity_order() {
    let rs = routes(
        r#"
routes:
  - {id: any-prefix, uri: /*}
  - {id: api-prefix, uri: /api/*}
  - {id: api-v1, uri: /api/v1/*}
  - {id: exact, uri: /api/v1/x}
  - {id: wild, uri: /*, host: "*.example.com"}
  - {id: wild-long, uri: /*, host: "*.a.example.com"}
  - {id: exact-host, uri: /*, host: "a.example.com"}
  - {id: prio-low, uri: /p/*, priority: 1}
  - {id: prio-high, uri: /p/*, priority: 5}
  - {id: b, uri: /tie}
  - {id: a, uri: /tie}
"#,
    );
    let r = Router::new(rs.iter().map(|r| (r, r.id.as_str())));
    assert_eq!(find(&r, "x.org", "/other"), Some("any-prefix"));
    assert_eq!(find(&r, "x.org", "/api"), Some("any-prefix"));
    assert_eq!(find(&r, "x.org", "/api/"), Some("api-prefix"));
    assert_eq!(find(&r, "x.org", "/api/v1/y"), Some("api-v1"));
    assert_eq!(find(&r, "x.org", "/api/v1/x"), Some("exact"));
    assert_eq!(find(&r, "b.example.com", "/api/v1/x"), Some("wild"));
    assert_eq!(find(&r, "z.a.example.com", "/"), Some("wild-long"));
    assert_eq!(find(&r, "A.Example.COM", "/"), Some("exact-host"));
    assert_eq!(find(&r, "example.com", "/"), Some("any-prefix"));
    assert_eq!(find(&r, "x.org", "/p/1"), Some("prio-high"));
    assert_eq!(find(&r, "x.org", "/tie"), Some("a"));
}

#[test]
fn methods_filter() {
    let rs = routes("routes:\n  - {id: r, uri: /m, methods: [POST]}\n");
    let r = Router::new(rs.iter().map(|r| (r, r.id.as_str())));
    assert_eq!(r.find("h", "/m", &http::Method::GET), None);
    assert_eq!(r.find("h", "/m", &http::Method::POST), Some(&"r"));
}

#[test]
fn the_matched_pair_is_reported() {
    let rs = routes("routes:\n  - {id: r, uris: [/a, /b/*], hosts: [x.org, \"*.y.org\"]}\n");
    let r = Router::new(rs.iter().map(|r| (r, r.id.as_str())));
    let pair = |h: &str, p: &str| r.find_pair(h, p, &http::Method::GET).map(|(_, i)| i);
    assert_eq!(pair("x.org", "/a"), Some(0));
    assert_eq!(pair("x.org", "/b/c"), Some(1));
    assert_eq!(pair("a.y.org", "/a"), Some(2));
    assert_eq!(pair("a.y.org", "/b/"), Some(3));
}

#[test]
fn ports_are_stripped() {
    assert_eq!(strip_port("foo.com:9080"), "foo.com");
    assert_eq!(strip_port("foo.com"), "foo.com");
    assert_eq!(strip_port("[::1]:80"), "[::1]");
}

#[test]
fn exact_path_beats_a_longer_prefix_and_methods_fall_through() {
    let rs = routes(
        r#"
routes:
  - {id: long-prefix, uri: /a/b/c*}
  - {id: exact-post, uri: /a/b, methods: [POST]}
  - {id: short-prefix, uri: /a*, methods: [GET, PUT]}
  - {id: exact-any, uri: /a/b, priority: -1}
  - {id: host-wild-get, uri: /*, host: "*.x.org", methods: [GET]}
  - {id: host-prefix, uri: /a/*, host: "b.x.org"}
"#,
    );
    let r = Router::new(rs.iter().map(|r| (r, r.id.as_str())));
    let m = |h: &str, p: &str, m: http::Method| r.find(h, p, &m).copied();
    assert_eq!(m("h", "/a/b", http::Method::POST), Some("exact-post"));
    assert_eq!(m("h", "/a/b", http::Method::GET), Some("exact-any"));
    assert_eq!(m("h", "/a/b/cd", http::Method::GET), Some("long-prefix"));
    assert_eq!(m("h", "/a/x", http::Method::PUT), Some("short-prefix"));
    assert_eq!(m("h", "/a/x", http::Method::POST), None);
    // The exact host's routes first; then its wildcard; then routes without a host.
    assert_eq!(
        m("B.X.org", "/a/b", http::Method::POST),
        Some("host-prefix")
    );
    assert_eq!(m("b.x.org", "/z", http::Method::GET), Some("host-wild-get"));
    assert_eq!(
        m("b.x.org", "/a/b", http::Method::DELETE),
        Some("host-prefix")
    );
    assert_eq!(m("c.x.org", "/a/b", http::Method::POST), Some("exact-post"));
    assert_eq!(m("x.org", "/z", http::Method::GET), None);
    // A method no route can name matches nothing.
    let purge = http::Method::from_bytes(b"PURGE").unwrap();
    let other = http::Method::from_bytes(b"BREW").unwrap();
    assert_eq!(m("h", "/a/b", purge), Some("exact-any"));
    assert_eq!(m("h", "/a/b", other), None);
}

#[test]
fn long_hosts_and_paths() {
    let host = format!("{}.example.com", "a".repeat(300));
    let path = format!("/{}", "p/".repeat(5000));
    let rs = routes(&format!(
        "routes:\n  - {{id: w, uri: /p/*, host: \"*.example.com\"}}\n  - {{id: x, uri: \"{path}\"}}\n"
    ));
    let r = Router::new(rs.iter().map(|r| (r, r.id.as_str())));
    assert_eq!(find(&r, &host.to_uppercase(), "/p/q"), Some("w"));
    assert_eq!(find(&r, "q.org", &path), Some("x"));
    assert_eq!(find(&r, &host, &path), Some("w"));
}

#[test]
fn every_host_pattern_has_its_own_path_trie() {
    let rs = routes(
        r#"
routes:
  - {id: a, uri: /*, host: a.com}
  - {id: b, uri: /}
  - {id: c, uri: /x/*, host: "*.a.com"}
"#,
    );
    let r = Router::new(rs.iter().map(|r| (r, r.id.as_str())));
    assert_eq!(find(&r, "b.a.com", "/a"), None);
    assert_eq!(find(&r, "b.a.com", "/"), Some("b"));
    assert_eq!(find(&r, "b.a.com", "/x/y"), Some("c"));
    assert_eq!(find(&r, "a.com", "/x/y"), Some("a"));
}

// The reference: every answer equals the linear matcher's.

/// Host labels: single letters (many first bytes, so wide trie nodes), upper case, non-ASCII,
/// punycode, and labels longer than a node keeps inline.
fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-pA-C]",
        1 => Just("ab".to_owned()),
        1 => Just("é".to_owned()),
        1 => Just("xn--bcher-kva".to_owned()),
        1 => Just("a-label-longer-than-twelve-bytes".to_owned()),
    ]
}

fn host_name() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..4).prop_map(|v| v.join("."))
}

/// A host condition: an exact host, or a `*.` wildcard (kept as its suffix `.b.c`).
fn host_pattern() -> impl Strategy<Value = HostPattern> {
    prop_oneof![
        4 => host_name().prop_map(HostPattern::Exact),
        4 => host_name().prop_map(|h| HostPattern::Wildcard(format!(".{h}"))),
        1 => Just(HostPattern::Exact("[::1]".to_owned())),
        1 => Just(HostPattern::Exact("127.0.0.1".to_owned())),
    ]
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => "[a-uA-C]",
        1 => Just(String::new()),
        1 => Just("ab".to_owned()),
        1 => Just("é".to_owned()),
        1 => Just("%2F".to_owned()),
        1 => Just("a-segment-longer-than-twelve-bytes".to_owned()),
    ]
}

/// A uri pattern's path: `/` and up to three segments, maybe a trailing `/`; rarely empty.
fn uri_path() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just(String::new()),
        12 => (prop::collection::vec(segment(), 0..4), any::<bool>()).prop_map(|(s, slash)| {
            let mut p = format!("/{}", s.join("/"));
            if slash && !p.ends_with('/') {
                p.push('/');
            }
            p
        }),
    ]
}

fn uri_pattern() -> impl Strategy<Value = UriPattern> {
    (any::<bool>(), uri_path()).prop_map(|(prefix, p)| {
        if prefix {
            UriPattern::Prefix(p)
        } else {
            UriPattern::Exact(p)
        }
    })
}

#[derive(Debug, Clone)]
struct Spec {
    /// Few ids, so that ties are common (then the earlier route wins).
    id: u8,
    hosts: Vec<HostPattern>,
    uris: Vec<UriPattern>,
    methods: Option<Vec<Method>>,
    priority: i64,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0u8..8,
        prop::collection::vec(host_pattern(), 0..3),
        prop::collection::vec(uri_pattern(), 1..4),
        prop::option::of(prop::sample::subsequence(KNOWN.to_vec(), 0..=3)),
        -1i64..=1,
    )
        .prop_map(|(id, hosts, uris, methods, priority)| Spec {
            id,
            hosts,
            uris,
            methods,
            priority,
        })
}

fn template() -> Route {
    routes("routes:\n  - {id: t, uri: /}\n").remove(0)
}

fn route(template: &Route, s: &Spec) -> Route {
    let mut r = template.clone();
    r.id = Id(format!("r{}", s.id));
    r.hosts = s.hosts.clone();
    r.uris = s.uris.clone();
    r.methods = s.methods.clone();
    r.priority = s.priority;
    r
}

const REQUEST_METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "HEAD", "PURGE", "BREW"];

/// How to make a request, mostly from one of the routes' own conditions.
#[derive(Debug, Clone)]
struct Recipe {
    /// Which route, host and uri to start from.
    route: prop::sample::Index,
    host: prop::sample::Index,
    uri: prop::sample::Index,
    /// 0: the route's host (for a wildcard: with `label` in front); 1: the wildcard's suffix
    /// alone (must not match it); 2: another host; 3: an empty host.
    host_kind: u8,
    label: String,
    other_host: String,
    /// Characters whose case is flipped (bit `i % 64` for the `i`th), in the host and path.
    host_case: u64,
    path_case: u64,
    port: Option<u16>,
    /// 0: the route's uri; 1: with `tail` appended; 2: with `cut` characters cut off; 3:
    /// another path; 4: empty.
    path_kind: u8,
    tail: String,
    cut: usize,
    other_path: String,
    /// Hosts 300 bytes longer and paths 6,000 bytes longer.
    long: bool,
    method: usize,
}

fn recipe() -> impl Strategy<Value = Recipe> {
    (
        (
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>(),
            prop_oneof![6 => Just(0u8), 1 => Just(1), 1 => Just(2), 1 => Just(3)],
            label(),
            host_name(),
            any::<u64>(),
            prop_oneof![3 => Just(0u64), 1 => any::<u64>()],
        ),
        (
            prop::option::of(any::<u16>()),
            prop_oneof![4 => Just(0u8), 3 => Just(1), 2 => Just(2), 1 => Just(3), 1 => Just(4)],
            prop_oneof![segment(), "/[a-c/]{0,3}"],
            1usize..4,
            uri_path(),
            prop::bool::weighted(0.1),
            prop_oneof![3 => Just(0usize), 2 => 0..REQUEST_METHODS.len()],
        ),
    )
        .prop_map(
            |(
                (route, host, uri, host_kind, label, other_host, host_case, path_case),
                (port, path_kind, tail, cut, other_path, long, method),
            )| Recipe {
                route,
                host,
                uri,
                host_kind,
                label,
                other_host,
                host_case,
                path_case,
                port,
                path_kind,
                tail,
                cut,
                other_path,
                long,
                method,
            },
        )
}

/// `s` with the case of the characters `mask` names flipped (non-ASCII ones too: `é` and `É`
/// are different hosts to both matchers).
fn flip_case(s: &str, mask: u64) -> String {
    s.chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let flip = mask >> (i % 64) & 1 == 1;
            let v: Vec<char> = if !flip {
                vec![c]
            } else if c.is_lowercase() {
                c.to_uppercase().collect()
            } else {
                c.to_lowercase().collect()
            };
            v
        })
        .collect()
}

/// The request a recipe makes against `rs`: the `Host` header value (maybe with a port) and
/// the path.
fn request(rs: &[Route], q: &Recipe) -> (String, String) {
    let r = (!rs.is_empty()).then(|| &rs[q.route.index(rs.len())]);
    let host = match (q.host_kind, r.filter(|r| !r.hosts.is_empty())) {
        (0 | 1, Some(r)) => match &r.hosts[q.host.index(r.hosts.len())] {
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Wildcard(s) if q.host_kind == 0 => format!("{}{s}", q.label),
            HostPattern::Wildcard(s) => s.clone(),
        },
        (3, _) => String::new(),
        _ => q.other_host.clone(),
    };
    let mut host = flip_case(&host, q.host_case);
    let mut path = match (q.path_kind, r) {
        (3, _) | (_, None) => q.other_path.clone(),
        (4, _) => String::new(),
        (k, Some(r)) => {
            let mut p = match &r.uris[q.uri.index(r.uris.len())] {
                UriPattern::Exact(p) | UriPattern::Prefix(p) => p.clone(),
            };
            match k {
                1 => p.push_str(&q.tail),
                2 => {
                    let keep = p.chars().count().saturating_sub(q.cut);
                    p = p.chars().take(keep).collect();
                }
                _ => {}
            }
            p
        }
    };
    path = flip_case(&path, q.path_case);
    if q.long {
        host = format!("{}.{host}", "x".repeat(300));
        path.push_str(&"ab/".repeat(2000));
    }
    if let Some(port) = q.port {
        host = format!("{host}:{port}");
    }
    (host, path)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// Mixed route sets (exact and prefix uris, exact and wildcard hosts, several of each per
    /// route, methods, priorities, tied ids) and requests made from their conditions: every
    /// answer, and the pair it reports, is the linear matcher's.
    #[test]
    fn same_answers_as_the_linear_matcher(
        specs in prop::collection::vec(spec(), 0..16),
        recipes in prop::collection::vec(recipe(), 1..24),
    ) {
        let template = template();
        let rs: Vec<Route> = specs.iter().map(|s| route(&template, s)).collect();
        let tries = Router::new(rs.iter().zip(0usize..));
        let linear = linear::Router::new(rs.iter().zip(0usize..));
        for q in &recipes {
            let (authority, path) = request(&rs, q);
            let host = strip_port(&authority);
            if q.port.is_some() {
                prop_assert_eq!(host.len() + 1 + q.port.unwrap_or(0).to_string().len(), authority.len());
            }
            let method = http::Method::from_bytes(REQUEST_METHODS[q.method].as_bytes()).unwrap();
            let got = tries.find_pair(host, &path, &method).map(|(t, i)| (*t, i));
            let want = linear.find_pair(host, &path, &method).map(|(t, i)| (*t, i));
            prop_assert_eq!(got, want, "host {:?} path {:?} method {}", host, path, method);
        }
    }
}

/// A bound on the steps (trie nodes visited, candidates looked at) of a match, whatever the
/// routes: the host walk and its suffix chain (each at most one step per host byte, plus one),
/// then for each host pattern the host matches (its exact host, each matching suffix, "any
/// host": at most `host + 3`) the path walk and its prefix chain, and at each of the exact path
/// and the path's prefixes at most 10 candidates (one per method a route can name).
fn step_bound(host: usize, path: usize) -> usize {
    2 * (host + 1) + (host + 3) * (2 * (path + 1) + 10 * (path + 2))
}

/// Steps taken by `f`.
fn steps<R>(f: impl FnOnce() -> R) -> (R, usize) {
    tree::STEPS.with(|s| s.set(0));
    let r = f();
    (r, tree::STEPS.with(|s| s.get()))
}

/// Arbitrary text or bytes (made into text, as the proxy's header values are): the
/// generators of the fuzz test below.
fn junk(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..max)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        "[a-cA-C./:%\\[\\]*0-9]{0,40}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Arbitrary patterns and arbitrary host and path bytes: no panic, the linear matcher's
    /// answers, and a walk within `step_bound` (so a match ends, at a cost set by the
    /// request's length and not by the routes). The wall-clock limit only catches a hang: a
    /// match takes microseconds, the limit is a second.
    #[test]
    fn arbitrary_input_never_panics_and_walks_a_bounded_path(
        patterns in prop::collection::vec(
            (any::<bool>(), junk(64), any::<bool>(), junk(64), 0..REQUEST_METHODS.len()),
            0..12,
        ),
        hosts in prop::collection::vec(junk(600), 1..6),
        paths in prop::collection::vec(junk(4000), 1..6),
    ) {
        let template = template();
        let rs: Vec<Route> = patterns
            .iter()
            .enumerate()
            .map(|(i, (wild, h, prefix, p, m))| {
                let mut r = template.clone();
                r.id = Id(format!("r{i}"));
                r.hosts = match (i % 3, wild) {
                    (0, _) => Vec::new(),
                    (_, true) => vec![HostPattern::Wildcard(h.clone())],
                    (_, false) => vec![HostPattern::Exact(h.clone())],
                };
                r.uris = vec![if *prefix { UriPattern::Prefix(p.clone()) } else { UriPattern::Exact(p.clone()) }];
                r.methods = (i % 2 == 0).then(|| vec![KNOWN[*m % KNOWN.len()]]);
                r
            })
            .collect();
        let tries = Router::new(rs.iter().zip(0usize..));
        let linear = linear::Router::new(rs.iter().zip(0usize..));
        for authority in &hosts {
            let host = strip_port(authority);
            for path in &paths {
                for method in [http::Method::GET, http::Method::POST] {
                    // Bounded by counted steps, not by a clock (which would depend on load).
                    let (got, n) = steps(|| tries.find_pair(host, path, &method).map(|(t, i)| (*t, i)));
                    prop_assert!(n <= step_bound(host.len(), path.len()), "{} steps", n);
                    let want = linear.find_pair(host, path, &method).map(|(t, i)| (*t, i));
                    prop_assert_eq!(got, want, "host {:?} path {:?}", host, path);
                }
            }
        }
    }
}

/// Inputs of a megabyte: a walk of their length (each byte read about once), no stack depth
/// or allocation that grows with them.
#[test]
fn megabyte_inputs_cost_a_walk_of_their_length() {
    let seg = "a".repeat(1000);
    let rs = routes(&format!(
        "routes:\n  - {{id: a, uri: \"/{seg}/*\", host: \"*.example.com\"}}\n  - {{id: b, uri: \"/{seg}/{seg}\"}}\n  - {{id: c, uri: /*}}\n"
    ));
    let r = Router::new(rs.iter().map(|r| (r, r.id.as_str())));
    let host = format!("{}example.com", "x.".repeat(500_000));
    let path = format!("/{}", "a/".repeat(500_000));
    let (got, n) = steps(|| find(&r, &host, &path));
    assert_eq!(got, Some("c"));
    assert!(n < 100, "{n} steps");
    let path = format!("/{seg}/{}", "a".repeat(1_000_000));
    let (got, n) = steps(|| find(&r, &host, &path));
    assert_eq!(got, Some("a"));
    assert!(n < 100, "{n} steps");
    let (got, n) = steps(|| find(&r, &host.to_uppercase(), &format!("/{seg}/{seg}")));
    assert_eq!(got, Some("a"));
    assert!(n < 100, "{n} steps");
    let (got, _) = steps(|| find(&r, "q.org", &format!("/{seg}/{seg}")));
    assert_eq!(got, Some("b"));
}

/// 10,000 routes of the bench's mix: the heap they take, and the same answers as the linear
/// matcher on a sample of requests.
#[test]
fn ten_thousand_routes() {
    let template = routes("routes:\n  - {id: t, uri: /}\n").remove(0);
    let rs: Vec<Route> = (0..10_000usize)
        .map(|i| {
            let mut r = template.clone();
            r.id = Id(format!("r{i:05}"));
            let (svc, v) = (i % 50, i % 4);
            r.uris = vec![match i % 10 {
                0..=3 => UriPattern::Exact(format!("/svc{svc}/v{v}/item{i}")),
                4..=7 => UriPattern::Prefix(format!("/svc{svc}/v{v}/res{i}/")),
                8 => UriPattern::Prefix("/app/".into()),
                _ => UriPattern::Prefix("/".into()),
            }];
            r.hosts = match i % 10 {
                8 => vec![HostPattern::Exact(format!("h{i}.example.com"))],
                9 => vec![HostPattern::Wildcard(format!(".t{i}.example.com"))],
                _ => Vec::new(),
            };
            r.methods = match i % 10 {
                1 => Some(vec![Method::Get]),
                5 => Some(vec![Method::Get, Method::Post]),
                8 => Some(vec![Method::Get, Method::Put]),
                _ => None,
            };
            r.priority = (i % 3) as i64;
            r
        })
        .collect();
    let tries = Router::new(rs.iter().zip(0usize..));
    let bytes = tries.heap_bytes();
    println!(
        "10000 routes: {bytes} bytes of heap ({} per route)",
        bytes / 10_000
    );
    assert!(bytes < 10_000 * 256, "{bytes} bytes");
    let linear = linear::Router::new(rs.iter().zip(0usize..));
    let mut most_steps = 0;
    for i in (0..10_000usize).step_by(7) {
        let (svc, v) = (i % 50, i % 4);
        for (host, path) in [
            (
                "api.example.org".to_owned(),
                format!("/svc{svc}/v{v}/item{i}"),
            ),
            (
                "api.example.org".to_owned(),
                format!("/svc{svc}/v{v}/res{i}/x"),
            ),
            (
                "api.example.org".to_owned(),
                format!("/svc{svc}/v{v}/res{i}"),
            ),
            (format!("H{i}.example.com"), "/app/login".to_owned()),
            (format!("www.t{i}.Example.com"), "/static".to_owned()),
            (format!("t{i}.example.com"), "/app/x".to_owned()),
        ] {
            for method in [http::Method::GET, http::Method::POST, http::Method::PUT] {
                let (got, n) =
                    steps(|| tries.find_pair(&host, &path, &method).map(|(t, i)| (*t, i)));
                // A handful of steps per request, as among 10 routes.
                most_steps = most_steps.max(n);
                assert!(n <= 40, "{host} {path}: {n} steps");
                assert_eq!(
                    got,
                    linear
                        .find_pair(&host, &path, &method)
                        .map(|(t, i)| (*t, i)),
                    "{host} {path} {method}"
                );
            }
        }
    }
    println!("at most {most_steps} steps per match");
}

/// The generators above are not vacuous: the requests they make hit routes through every
/// kind of condition (and sometimes miss).
#[test]
fn generated_requests_exercise_every_kind_of_match() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = (
        prop::collection::vec(spec(), 1..16),
        prop::collection::vec(recipe(), 1..24),
    );
    let template = template();
    // exact host, wildcard host, any host, exact uri, prefix uri, miss, long, port.
    let mut seen = [0usize; 8];
    let mut total = 0;
    for _ in 0..300 {
        let (specs, recipes) = strategy.new_tree(&mut runner).unwrap().current();
        let rs: Vec<Route> = specs.iter().map(|s| route(&template, s)).collect();
        let tries = Router::new(rs.iter().zip(0usize..));
        for q in &recipes {
            let (authority, path) = request(&rs, q);
            let method = http::Method::from_bytes(REQUEST_METHODS[q.method].as_bytes()).unwrap();
            total += 1;
            let Some((&r, pair)) = tries.find_pair(strip_port(&authority), &path, &method) else {
                seen[5] += 1;
                continue;
            };
            seen[6] += usize::from(q.long);
            seen[7] += usize::from(q.port.is_some());
            let route = &rs[r];
            match route.hosts.get(pair / route.uris.len()) {
                Some(HostPattern::Exact(_)) => seen[0] += 1,
                Some(HostPattern::Wildcard(_)) => seen[1] += 1,
                None => seen[2] += 1,
            }
            match &route.uris[pair % route.uris.len()] {
                UriPattern::Exact(_) => seen[3] += 1,
                UriPattern::Prefix(_) => seen[4] += 1,
            }
        }
    }
    println!("of {total} requests: {seen:?}");
    assert!(
        seen.iter().all(|&n| n >= total / 100),
        "{seen:?} of {total}"
    );
    assert!(seen[5] < total * 3 / 4, "{seen:?} of {total}");
}
