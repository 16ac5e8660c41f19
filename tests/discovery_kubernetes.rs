//! End-to-end tests of the Kubernetes registry: the proxy in-process, a fake API server
//! speaking the real list/watch API, and real backends. Every backend listens on 127.0.0.1, so
//! the Endpoints tell them apart by port.

#[path = "discovery_kubernetes/failures.rs"]
mod failures;
#[path = "discovery_kubernetes/support.rs"]
mod support;

use serde_json::{json, Value};
use support::*;
use weir_testkit::fake_kubernetes::{slice_endpoint, subset, FakeKubernetes, Resource};
use weir_testkit::pki::TestCa;
use weir_testkit::{wait_for, Backend, TestProxy};

#[test]
fn named_and_numbered_ports_follow_registration_and_deregistration() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let k = FakeKubernetes::start("t0k3n");
    let token = TokenFile::new("t0k3n");
    // One subset with a named and an unnamed port.
    k.put_endpoints(
        "shop",
        "cart",
        json!([subset(
            &[LOCAL],
            &[],
            &[(Some("http"), a.port()), (None, b.port())]
        )]),
    );
    let numbered = format!("shop/cart:{}", b.port());
    let p = TestProxy::start(config(
        cluster(&k, &token, none()),
        &[("/named", "shop/cart:http"), ("/numbered", &numbered)],
    ));
    wait_serves(&p, "/named", &["a"]);
    wait_serves(&p, "/numbered", &["b"]);
    // Watch events arrive split across chunks: they are joined.
    k.split_events(true);
    // Registration: a second subset adds c under the same port name.
    k.put_endpoints("shop", "cart", named("http", &[&a, &c]));
    wait_serves(&p, "/named", &["a", "c"]);
    // The unnamed port is gone from the new subsets: its service is gone.
    wait_serves(&p, "/numbered", &[]);
    // Deregistration.
    k.put_endpoints("shop", "cart", named("http", &[&c]));
    wait_serves(&p, "/named", &["c"]);
    k.delete_endpoints("shop", "cart");
    wait_serves(&p, "/named", &[]);
    let d = dump(&p);
    assert_eq!(d["services"].get("shop/cart:http"), None, "{d}");
    // What the registry sent: Accept, the bearer token, the list and watch parameters.
    let reqs = k.requests();
    let list = &reqs[0];
    assert_eq!(
        (list.path.as_str(), list.param("limit")),
        ("/api/v1/endpoints", Some("120"))
    );
    assert_eq!(
        list.headers.get("accept").map(String::as_str),
        Some("application/json")
    );
    assert_eq!(
        list.headers.get("authorization").map(String::as_str),
        Some("Bearer t0k3n")
    );
    let watch = reqs.iter().find(|r| r.is_watch()).expect("a watch");
    assert_eq!(watch.param("allowWatchBookmarks"), Some("true"));
    let t: u64 = watch
        .param("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .expect("timeoutSeconds");
    assert!((1809..=2799).contains(&t), "timeoutSeconds {t}");
    assert_eq!(
        watch.param("resourceVersion"),
        Some("101"),
        "the list's resourceVersion"
    );
}

#[test]
fn not_ready_addresses_are_not_used() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let k = FakeKubernetes::start("t");
    let token = TokenFile::new("t");
    let subsets = |b_ready: bool| {
        let (ready, not_ready): (&[&str], &[&str]) = if b_ready {
            (&[LOCAL], &[])
        } else {
            (&[], &[LOCAL])
        };
        json!([
            subset(&[LOCAL], &[], &[(Some("http"), a.port())]),
            subset(ready, not_ready, &[(Some("http"), b.port())]),
        ])
    };
    k.put_endpoints("shop", "cart", subsets(false));
    let p = TestProxy::start(config(
        cluster(&k, &token, none()),
        &[("/*", "shop/cart:http")],
    ));
    wait_serves(&p, "/", &["a"]);
    assert_eq!(bodies(&p, "/", 20).expect("200s"), vec!["a"; 20]);
    assert_eq!(b.hits(), 0);
    k.put_endpoints("shop", "cart", subsets(true));
    wait_serves(&p, "/", &["a", "b"]);
    // All addresses not ready: the service is known without nodes (503).
    k.put_endpoints(
        "shop",
        "cart",
        json!([subset(&[], &[LOCAL], &[(Some("http"), a.port())])]),
    );
    wait_serves(&p, "/", &[]);
    assert_eq!(dump(&p)["services"]["shop/cart:http"], json!([]));
}

#[test]
fn malformed_instances_are_skipped_and_the_rest_used() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let k = FakeKubernetes::start("t");
    let token = TokenFile::new("t");
    k.put_endpoints(
        "shop",
        "cart",
        json!([{"addresses": [{"ip": "not an ip"}, {"ip": 12}, {"hostname": "x"}, {"ip": LOCAL}],
                "ports": [{"name": "http", "port": a.port()}, {"name": "http", "port": 0},
                          {"name": "http", "port": "80"}]}]),
    );
    // An object without a name, and one whose subsets are not a list.
    k.put(
        Resource::Endpoints,
        json!({"metadata": {"namespace": "shop"}}),
    );
    k.put(
        Resource::Endpoints,
        json!({"metadata": {"name": "odd", "namespace": "shop"}, "subsets": 7}),
    );
    k.put_endpoints("shop", "web", one_port(Some("http"), b.port()));
    let p = TestProxy::start(config(
        cluster(&k, &token, none()),
        &[("/cart", "shop/cart:http"), ("/web", "shop/web:http")],
    ));
    wait_serves(&p, "/cart", &["a"]);
    wait_serves(&p, "/web", &["b"]);
    assert_eq!(
        dump(&p)["services"]["shop/cart:http"],
        json!([{"host": LOCAL, "port": a.port(), "weight": 50, "priority": 0}])
    );
    assert_eq!(dump(&p)["last_error"], Value::Null);
}

#[test]
fn default_weight_is_given_to_every_node_and_round_robin_is_exact() {
    let bs: Vec<Backend> = ["a", "b", "c"].iter().map(|n| Backend::start(n)).collect();
    let k = FakeKubernetes::start("t");
    let token = TokenFile::new("unused");
    k.put_endpoints(
        "shop",
        "cart",
        named("http", &bs.iter().collect::<Vec<_>>()),
    );
    // A literal token instead of the file.
    let mut inline_token = cluster(&k, &token, json!({"default_weight": 7}));
    inline_token["client"] = json!({"token": "t"});
    let p = TestProxy::start(config(inline_token, &[("/*", "shop/cart:http")]));
    wait_serves(&p, "/", &["a", "b", "c"]);
    let got = bodies(&p, "/", 300).expect("200s");
    for n in ["a", "b", "c"] {
        assert_eq!(got.iter().filter(|b| *b == n).count(), 100, "{n}");
    }
    // Every node has default_weight; nodes are sorted by host, then port.
    let d = dump(&p);
    let mut ports: Vec<u16> = bs.iter().map(Backend::port).collect();
    ports.sort();
    let want: Vec<Value> = ports
        .iter()
        .map(|p| json!({"host": LOCAL, "port": p, "weight": 7, "priority": 0}))
        .collect();
    assert_eq!(d["services"]["shop/cart:http"], Value::Array(want), "{d}");
    // The token is masked in the dump.
    assert_eq!(d["config"]["client"]["token"], "******", "{d}");
    assert!(!d.to_string().contains("\"t\""), "{d}");
}

#[test]
fn endpoint_slices_merge_per_service_ready_only() {
    let (a, b, c, d) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
        Backend::start("d"),
    );
    let k = FakeKubernetes::start("t");
    let token = TokenFile::new("t");
    let port = |n: Option<&str>, b: &Backend| match n {
        Some(n) => json!([{"name": n, "port": b.port(), "protocol": "TCP"}]),
        None => json!([{"name": "", "port": b.port(), "protocol": "TCP"}]),
    };
    k.put_slice(
        "shop",
        "cart-1",
        Some("cart"),
        json!([slice_endpoint(LOCAL, true)]),
        port(Some("http"), &a),
    );
    k.put_slice(
        "shop",
        "cart-2",
        Some("cart"),
        json!([slice_endpoint(LOCAL, true)]),
        port(Some("http"), &b),
    );
    // Not ready, and a slice without the service-name label: never used.
    k.put_slice(
        "shop",
        "cart-3",
        Some("cart"),
        json!([slice_endpoint(LOCAL, false)]),
        port(Some("http"), &c),
    );
    k.put_slice(
        "shop",
        "stray",
        None,
        json!([slice_endpoint(LOCAL, true)]),
        port(Some("http"), &d),
    );
    // An unnamed port is keyed by its number.
    k.put_slice(
        "shop",
        "web-1",
        Some("web"),
        json!([slice_endpoint(LOCAL, true)]),
        port(None, &c),
    );
    let web = format!("shop/web:{}", c.port());
    let p = TestProxy::start(config(
        cluster(&k, &token, json!({"watch_endpoint_slices": true})),
        &[("/cart", "shop/cart:http"), ("/web", &web)],
    ));
    wait_serves(&p, "/cart", &["a", "b"]);
    wait_serves(&p, "/web", &["c"]);
    // A slice of the service is deleted while another remains.
    k.delete_slice("shop", "cart-1");
    wait_serves(&p, "/cart", &["b"]);
    // The not-ready endpoint becomes ready.
    k.put_slice(
        "shop",
        "cart-3",
        Some("cart"),
        json!([slice_endpoint(LOCAL, true)]),
        port(Some("http"), &c),
    );
    wait_serves(&p, "/cart", &["b", "c"]);
    k.delete_slice("shop", "cart-2");
    k.delete_slice("shop", "cart-3");
    wait_serves(&p, "/cart", &[]);
    assert_eq!(d.hits(), 0);
    assert!(a.hits() > 0);
    assert!(k
        .requests()
        .iter()
        .all(|r| r.path == "/apis/discovery.k8s.io/v1/endpointslices"));
}

#[test]
fn an_expired_watch_relists_and_picks_up_changes_made_meanwhile() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let k = FakeKubernetes::start("t");
    let token = TokenFile::new("t");
    k.put_endpoints("shop", "cart", named("http", &[&a]));
    let p = TestProxy::start(config(
        cluster(&k, &token, none()),
        &[("/*", "shop/cart:http")],
    ));
    wait_serves(&p, "/", &["a"]);
    assert!(wait_for(WAIT, || (k.open_watches() == 1).then_some(())).is_some());
    // Changes the watch never delivers.
    k.hold_events(true);
    k.put_endpoints("shop", "cart", named("http", &[&b]));
    k.put_endpoints("shop", "extra", named("http", &[&a]));
    assert_eq!(bodies(&p, "/", 10).expect("200s"), vec!["a"; 10]);
    assert_eq!(k.lists(), 1);
    // 410 on the open watch: the registry lists again and sees both changes.
    k.hold_events(false);
    k.expire_watches();
    wait_serves(&p, "/", &["b"]);
    assert_eq!(k.lists(), 2);
    assert_eq!(dump(&p)["services"]["shop/extra:http"][0]["port"], a.port());
    assert_eq!(dump(&p)["last_error"], Value::Null, "a 410 is not an error");
    // The new watch starts from the new list's resourceVersion and gets events again.
    let rv = k.resource_version().to_string();
    let ok = wait_for(WAIT, || {
        k.requests()
            .iter()
            .rev()
            .find(|r| r.is_watch())
            .filter(|r| r.param("resourceVersion") == Some(rv.as_str()))
            .map(|_| ())
    });
    assert!(ok.is_some(), "no watch from {rv}: {:?}", k.requests());
    k.put_endpoints("shop", "cart", named("http", &[&a, &b]));
    wait_serves(&p, "/", &["a", "b"]);
}

#[test]
fn eight_watches_in_a_row_then_a_fresh_list() {
    let a = Backend::start("a");
    let k = FakeKubernetes::start("t");
    let token = TokenFile::new("t");
    k.put_endpoints("shop", "cart", named("http", &[&a]));
    let p = TestProxy::start(config(
        cluster(&k, &token, none()),
        &[("/*", "shop/cart:http")],
    ));
    wait_serves(&p, "/", &["a"]);
    for i in 1..=8 {
        let watching = wait_for(WAIT, || {
            (k.open_watches() == 1 && k.watch_requests() == i).then_some(())
        });
        assert!(watching.is_some(), "watch {i} not open: {:?}", k.requests());
        // A change moves the resourceVersion; the next watch starts from there.
        k.put_endpoints("shop", &format!("other-{i}"), named("http", &[&a]));
        let rv = k.resource_version().to_string();
        let seen = wait_for(WAIT, || {
            dump(&p)["services"]
                .get(format!("shop/other-{i}:http"))
                .map(|_| ())
        });
        assert!(seen.is_some(), "event {i} not applied");
        k.close_watches();
        if i < 8 {
            let next = wait_for(WAIT, || {
                let r = k.requests();
                (r.iter().filter(|r| r.is_watch()).count() == i + 1)
                    .then(|| r.last().cloned())
                    .flatten()
            })
            .expect("the next watch");
            assert_eq!(next.param("resourceVersion"), Some(rv.as_str()));
            assert_eq!(k.lists(), 1, "no list before 8 watches");
        }
    }
    let relisted = wait_for(WAIT, || (k.lists() == 2).then_some(()));
    assert!(
        relisted.is_some(),
        "no list after 8 watches: {:?}",
        k.requests().len()
    );
    let order: Vec<bool> = k.requests().iter().map(|r| r.is_watch()).collect();
    let second_list = order
        .iter()
        .enumerate()
        .filter(|(_, w)| !**w)
        .nth(1)
        .map(|(i, _)| i);
    assert_eq!(second_list, Some(9), "list, 8 watches, list: {order:?}");
    wait_serves(&p, "/", &["a"]);
}

#[test]
fn lists_in_pages_with_label_and_namespace_selectors() {
    let bs: Vec<Backend> = (0..5).map(|i| Backend::start(&format!("b{i}"))).collect();
    let k = FakeKubernetes::start("t");
    let token = TokenFile::new("t");
    k.set_page_size(Some(2));
    for (i, b) in bs.iter().enumerate() {
        k.put_endpoints_labeled(
            "shop",
            &format!("s{i}"),
            json!({"team": "x"}),
            one_port(Some("http"), b.port()),
        );
    }
    // Filtered out by the label selector and by the namespace selector.
    k.put_endpoints_labeled(
        "shop",
        "other",
        json!({"team": "y"}),
        one_port(Some("http"), bs[0].port()),
    );
    k.put_endpoints_labeled(
        "dev",
        "s0",
        json!({"team": "x"}),
        one_port(Some("http"), bs[1].port()),
    );
    let routes: Vec<(String, String)> = (0..5)
        .map(|i| (format!("/s{i}"), format!("shop/s{i}:http")))
        .collect();
    let mut r: Vec<(&str, &str)> = routes
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    r.push(("/other", "shop/other:http"));
    r.push(("/dev", "dev/s0:http"));
    let p = TestProxy::start(config(
        cluster(
            &k,
            &token,
            json!({"namespace_selector": {"equal": "shop"}, "label_selector": "team=x"}),
        ),
        &r,
    ));
    for i in 0..5 {
        wait_serves(&p, &format!("/s{i}"), &[&format!("b{i}")]);
    }
    assert!(serves(&p, "/other", &[]));
    assert!(serves(&p, "/dev", &[]));
    let lists: Vec<_> = k.requests().into_iter().filter(|r| !r.is_watch()).collect();
    assert_eq!(lists.len(), 3, "5 objects in pages of 2");
    assert_eq!(lists[0].param("continue"), None);
    assert_eq!(lists[1].param("continue"), Some("1-2"));
    assert_eq!(lists[2].param("continue"), Some("1-4"));
    for l in &lists {
        assert_eq!(l.param("limit"), Some("120"));
        assert_eq!(l.param("labelSelector"), Some("team=x"));
        assert_eq!(l.param("fieldSelector"), Some("metadata.namespace=shop"));
    }
}

#[test]
fn match_and_not_match_select_namespaces_by_full_regex() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let k = FakeKubernetes::start("t");
    let token = TokenFile::new("t");
    for ns in ["shop", "shopping", "team-a"] {
        k.put_endpoints(ns, "cart", one_port(Some("http"), a.port()));
    }
    k.put_endpoints("kube-system", "dns", one_port(Some("http"), b.port()));
    let routes = [
        ("/shop", "shop/cart:http"),
        ("/shopping", "shopping/cart:http"),
        ("/team", "team-a/cart:http"),
    ];
    let p = TestProxy::start(config(
        cluster(
            &k,
            &token,
            json!({"namespace_selector": {"match": ["sho.", "team-.*"]}}),
        ),
        &routes,
    ));
    wait_serves(&p, "/shop", &["a"]);
    wait_serves(&p, "/team", &["a"]);
    assert!(serves(&p, "/shopping", &[]), "full match only");
    assert!(k
        .requests()
        .iter()
        .all(|r| r.param("fieldSelector").is_none()));
    let q = TestProxy::start(config(
        cluster(
            &k,
            &token,
            json!({"namespace_selector": {"not_match": ["kube-.*"]}}),
        ),
        &[
            ("/dns", "kube-system/dns:http"),
            ("/shopping", "shopping/cart:http"),
        ],
    ));
    wait_serves(&q, "/shopping", &["a"]);
    assert!(serves(&q, "/dns", &[]));
}

#[test]
fn multi_cluster_services_are_keyed_by_cluster_id() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let (east, west) = (FakeKubernetes::start("e"), FakeKubernetes::start("w"));
    let (te, tw) = (TokenFile::new("e"), TokenFile::new("w"));
    east.put_endpoints("shop", "cart", named("http", &[&a]));
    west.put_endpoints("shop", "cart", named("http", &[&b]));
    let clusters = json!([
        cluster(&east, &te, json!({"id": "east"})),
        cluster(&west, &tw, json!({"id": "west"})),
    ]);
    let p = TestProxy::start(config(
        clusters,
        &[
            ("/east", "east/shop/cart:http"),
            ("/west", "west/shop/cart:http"),
        ],
    ));
    wait_serves(&p, "/east", &["a"]);
    wait_serves(&p, "/west", &["b"]);
    let d = dump(&p);
    let mut keys: Vec<&String> = d["services"]
        .as_object()
        .expect("services")
        .keys()
        .collect();
    keys.sort();
    assert_eq!(keys, ["east/shop/cart:http", "west/shop/cart:http"]);
    assert_eq!(d["config"][0]["id"], "east");
    // A cluster that stops keeps its last nodes; the other goes on changing.
    let steady = steady(&p, "/west");
    west.stop();
    east.put_endpoints("shop", "cart", named("http", &[&a, &c]));
    wait_serves(&p, "/east", &["a", "c"]);
    wait_error(&p, "cluster west");
    east.delete_endpoints("shop", "cart");
    wait_serves(&p, "/east", &[]);
    west.put_endpoints("shop", "cart", named("http", &[&c]));
    west.restart();
    wait_serves(&p, "/west", &["c"]);
    finish(steady);
}

#[test]
fn https_api_server_is_verified_against_ca_file_or_not_at_all() {
    let a = Backend::start("a");
    let ca = TestCa::new("k8s test CA");
    let id = ca.issue(
        "kube-apiserver",
        &["localhost"],
        &[[127, 0, 0, 1].into()],
        false,
    );
    let k = FakeKubernetes::start_tls("t", &id);
    assert!(k.url().starts_with("https://"));
    let token = TokenFile::new("t");
    let ca_file = TokenFile::new(&ca.cert_pem());
    k.put_endpoints("shop", "cart", named("http", &[&a]));
    let one = |id: &str, tls: Value| {
        let mut service =
            json!({"schema": "https", "host": k.host(), "port": k.port().to_string()});
        if let (Some(s), Value::Object(tls)) = (service.as_object_mut(), tls) {
            s.extend(tls);
        }
        json!({"id": id, "service": service, "client": {"token_file": token.path()}})
    };
    let clusters = json!([
        one(
            "verified",
            json!({"ssl_verify": true, "ca_file": ca_file.path()})
        ),
        one("insecure", json!({"ssl_verify": false})),
        // The system store does not know the test CA.
        one("strict", json!({"ssl_verify": true})),
    ]);
    let p = TestProxy::start(config(
        clusters,
        &[
            ("/verified", "verified/shop/cart:http"),
            ("/insecure", "insecure/shop/cart:http"),
            ("/strict", "strict/shop/cart:http"),
        ],
    ));
    wait_serves(&p, "/verified", &["a"]);
    wait_serves(&p, "/insecure", &["a"]);
    let e = wait_error(&p, "cluster strict");
    assert!(e.contains("certificate"), "{e}");
    assert!(serves(&p, "/strict", &[]));
    assert!(k.requests().len() >= 4, "list and watch of two clusters");
}
