//! gRPC through Weir (docs/grpc.md): a real tonic client and real tonic servers; h2c and
//! h2-over-TLS listeners; `grpc` (h2c) and `grpcs` (h2 over TLS) upstreams; unary, server
//! streaming and bidirectional calls; statuses and trailers relayed unchanged.

use serde_json::{json, Value};
use std::net::IpAddr;
use tonic::Code;
use weir_testkit::config::{Conf, Route, Upstream};
use weir_testkit::grpc::{GrpcBackend, GrpcClient};
use weir_testkit::pki::TestCa;
use weir_testkit::TestProxy;

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// The route of the test service, to `upstream`.
fn grpc_route(upstream: Upstream) -> Conf {
    Conf::new().route(Route::new("grpc", "/weir.test.Echo/*").upstream(upstream))
}

/// An upstream of `scheme` (`grpc`, `grpcs`) over `nodes`.
fn grpc_upstream(scheme: &str, nodes: &[&GrpcBackend]) -> Upstream {
    Upstream::nodes(nodes).scheme(scheme)
}

/// Every load-balancing type, by name, as upstream fields.
fn every_lb() -> [(&'static str, Value); 4] {
    [
        ("roundrobin", json!({"type": "roundrobin"})),
        ("chash", json!({"type": "chash", "key": "uri"})),
        ("least_conn", json!({"type": "least_conn"})),
        ("ewma", json!({"type": "ewma"})),
    ]
}

/// A grpcs upstream over `nodes` verified against the CA certificate `ca` (added too).
fn grpcs_route(nodes: &[&GrpcBackend], lb: Value, ca: &TestCa) -> Conf {
    grpc_route(
        grpc_upstream("grpcs", nodes)
            .merge(lb)
            .tls_verify(true)
            .ca_certificates(&["ca"]),
    )
    .ca_certificate("ca", ca)
}

/// Every kind of call, through `client`, against backends named a and b.
fn exercise(client: &GrpcClient, what: &str) {
    let r = client
        .unary("Unary", "hi")
        .unwrap_or_else(|s| panic!("{what}: unary: {s:?}"));
    assert!(r == "a:hi" || r == "b:hi", "{what}: {r}");
    let msgs = client
        .server_stream("Stream", "3")
        .unwrap_or_else(|s| panic!("{what}: server streaming: {s:?}"));
    assert_eq!(msgs.len(), 3, "{what}");
    let node = &msgs[0][..2];
    assert_eq!(
        msgs,
        [format!("{node}0"), format!("{node}1"), format!("{node}2")]
    );
    let msgs = client
        .chat(&["x", "y"])
        .unwrap_or_else(|s| panic!("{what}: bidi: {s:?}"));
    assert_eq!(msgs.len(), 2, "{what}");
    assert!(
        msgs[0].ends_with(":x") && msgs[1].ends_with(":y"),
        "{what}: {msgs:?}"
    );
    // A status from the server, trailers-only, passes through unchanged.
    let e = client.unary("Fail", "").expect_err("Fail must fail");
    assert_eq!(
        (e.code(), e.message()),
        (Code::NotFound, "no such thing"),
        "{what}"
    );
    let e = client.unary("Nope", "").expect_err("unknown method");
    assert_eq!(e.code(), Code::Unimplemented, "{what}");
}

#[test]
fn the_test_backend_speaks_grpc_directly() {
    let a = GrpcBackend::start("a");
    let c = GrpcClient::connect(a.addr);
    assert_eq!(c.unary("Unary", "hi").expect("unary"), "a:hi");
}

#[test]
fn grpc_over_h2c_through_every_load_balancing_type() {
    let (a, b) = (GrpcBackend::start("a"), GrpcBackend::start("b"));
    for (lb, fields) in every_lb() {
        let p = TestProxy::start(grpc_route(grpc_upstream("grpc", &[&a, &b]).merge(fields)));
        exercise(&GrpcClient::connect(p.addr), lb);
    }
    assert!(a.calls() > 0 && b.calls() > 0, "both nodes served calls");
}

#[test]
fn grpcs_upstreams_verify_the_backend_and_pass_the_authority() {
    let ca = TestCa::new("gRPC CA");
    let id = || ca.issue("grpc backend", &["grpc.test"], &[LOCAL], false);
    let (a, b) = (
        GrpcBackend::start_tls("a", id()),
        GrpcBackend::start_tls("b", id()),
    );
    for (lb, fields) in every_lb() {
        let p = TestProxy::start(grpcs_route(&[&a, &b], fields, &ca));
        let before = (a.authorities().len(), b.authorities().len());
        exercise(&GrpcClient::connect(p.addr), lb);
        // pass_host: pass: the client's :authority reaches the backend, on every call of this
        // proxy, whichever node served it.
        let want = p.addr.to_string();
        let seen: Vec<String> = a.authorities()[before.0..]
            .iter()
            .chain(&b.authorities()[before.1..])
            .cloned()
            .collect();
        assert_eq!(seen.len(), 5, "{lb}: five calls reach the backends");
        assert!(
            seen.iter().all(|s| *s == want),
            "{lb}: {seen:?}, want {want}"
        );
    }
}

#[test]
fn pass_host_sets_the_upstream_authority() {
    let a = GrpcBackend::start("a");
    let upstream = || grpc_upstream("grpc", &[&a]).lb("roundrobin");
    for (upstream, want) in [
        (
            upstream().rewrite_host("greeter.internal"),
            "greeter.internal".to_owned(),
        ),
        (upstream().pass_host("node"), a.addr.to_string()),
    ] {
        let fields = upstream.to_value();
        let p = TestProxy::start(grpc_route(upstream));
        let c = GrpcClient::connect(p.addr);
        assert_eq!(c.unary("Unary", "hi").expect("unary"), "a:hi");
        assert_eq!(a.authorities().last(), Some(&want), "{fields}");
    }
}

/// `keepalive_pool.requests` counts streams per HTTP/2 connection; `size` never breaks calls.
#[test]
fn keepalive_limits_apply_to_http2_streams() {
    let a = GrpcBackend::start("a");
    let p = TestProxy::start(grpc_route(
        grpc_upstream("grpc", &[&a])
            .lb("roundrobin")
            .keepalive_pool(json!({"size": 1, "requests": 2, "idle_timeout": 60})),
    ));
    let c = GrpcClient::connect(p.addr);
    for i in 0..6 {
        assert_eq!(
            c.unary("Unary", &i.to_string()).expect("unary"),
            format!("a:{i}")
        );
        // The client has its answer before the proxy has released the stream's connection;
        // wait for that, so the next call finds the connection where the pool keeps it.
        p.wait_finished(i + 1);
    }
    // Two streams per connection: six sequential calls open three connections.
    assert_eq!(a.connections(), 3);
}

#[test]
fn grpcs_to_an_untrusted_backend_is_unavailable() {
    let rogue = TestCa::new("Rogue CA");
    let ca = TestCa::new("gRPC CA");
    let a = GrpcBackend::start_tls("a", rogue.issue("grpc", &["grpc.test"], &[LOCAL], false));
    let p = TestProxy::start(grpcs_route(&[&a], json!({"type": "roundrobin"}), &ca));
    let e = GrpcClient::connect(p.addr)
        .unary("Unary", "hi")
        .expect_err("an unverified backend must not be used");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert_eq!(a.calls(), 0);
}

#[test]
fn grpcs_to_an_ip_the_certificate_does_not_name_is_refused_on_every_call() {
    let ca = TestCa::new("gRPC CA");
    // Trusted chain, but no IP SAN: the IP node fails verification after the handshake, and
    // the HTTP/2 connection (pooled by Pingora before Weir's check) is never used.
    let a = GrpcBackend::start_tls("a", ca.issue("grpc", &["grpc.test"], &[], false));
    let p = TestProxy::start(grpcs_route(&[&a], json!({"type": "roundrobin"}), &ca));
    let c = GrpcClient::connect(p.addr);
    for _ in 0..3 {
        let e = c.unary("Unary", "hi").expect_err("must be refused");
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    }
    assert_eq!(a.calls(), 0);
}

#[test]
fn weirs_own_failures_are_unavailable_to_grpc_clients() {
    let refused = weir_testkit::Backend::refused();
    let p = TestProxy::start(grpc_route(Upstream::nodes(&[&refused]).scheme("grpc")));
    let e = GrpcClient::connect(p.addr)
        .unary("Unary", "hi")
        .expect_err("no upstream answers");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
}

#[test]
fn tls_listen_serves_h2_with_a_certificate_from_the_configuration() {
    let ca = TestCa::new("Edge CA");
    let edge = ca.issue("weir edge", &["weir.test"], &[], false);
    let a = GrpcBackend::start("a");
    let p = TestProxy::start(
        grpc_route(grpc_upstream("grpc", &[&a]).lb("roundrobin"))
            .tls_listen("edge")
            .certificate("edge", &edge),
    );
    let c = GrpcClient::connect_tls(p.tls[0], "weir.test", &ca.id.cert);
    assert_eq!(c.unary("Unary", "over tls").expect("unary"), "a:over tls");
    assert_eq!(c.server_stream("Stream", "2").expect("stream").len(), 2);
    // HTTP/1.1 still works on the TLS listener (ALPN falls back) and on the plain one.
    let r = weir_testkit::Client::new(p.addr)
        .get("/nowhere")
        .expect("h1");
    assert_eq!(r.status, 404);
}
