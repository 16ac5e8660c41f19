//! gRPC through Weir (docs/grpc.md): a real tonic client and real tonic servers; h2c and
//! h2-over-TLS listeners; `grpc` (h2c) and `grpcs` (h2 over TLS) upstreams; unary, server
//! streaming and bidirectional calls; statuses and trailers relayed unchanged.

use std::net::IpAddr;
use tonic::Code;
use weir_testkit::grpc::{GrpcBackend, GrpcClient};
use weir_testkit::pki::{yaml_block, TestCa};
use weir_testkit::TestProxy;

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn grpc_route(scheme: &str, lb: &str, nodes: &[&GrpcBackend], extra: &str) -> String {
    let list: Vec<String> = nodes.iter().map(|b| format!("\"{}\": 1", b.addr)).collect();
    format!(
        "routes:\n  - id: grpc\n    uri: /weir.test.Echo/*\n    upstream:\n      scheme: {scheme}\n      {lb}\n      nodes: {{{}}}\n{extra}",
        list.join(", ")
    )
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
    for lb in [
        "type: roundrobin",
        "type: chash\n      key: uri",
        "type: least_conn",
        "type: ewma",
    ] {
        let p = TestProxy::start(&grpc_route("grpc", lb, &[&a, &b], ""));
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
    let extra = format!(
        "      tls_verify: true\n      ca_certificates: [ca]\nca_certificates:\n  - id: ca\n    cert: {}",
        yaml_block(&ca.cert_pem(), 6)
    );
    for lb in [
        "type: roundrobin",
        "type: chash\n      key: uri",
        "type: least_conn",
        "type: ewma",
    ] {
        let p = TestProxy::start(&grpc_route("grpcs", lb, &[&a, &b], &extra));
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
    for (fields, want) in [
        (
            "      pass_host: rewrite\n      upstream_host: greeter.internal\n".to_owned(),
            "greeter.internal".to_owned(),
        ),
        ("      pass_host: node\n".to_owned(), a.addr.to_string()),
    ] {
        let p = TestProxy::start(&grpc_route("grpc", "type: roundrobin", &[&a], &fields));
        let c = GrpcClient::connect(p.addr);
        assert_eq!(c.unary("Unary", "hi").expect("unary"), "a:hi");
        assert_eq!(a.authorities().last(), Some(&want), "{fields}");
    }
}

/// `keepalive_pool.requests` counts streams per HTTP/2 connection; `size` never breaks calls.
#[test]
fn keepalive_limits_apply_to_http2_streams() {
    let a = GrpcBackend::start("a");
    let p = TestProxy::start(&grpc_route(
        "grpc",
        "type: roundrobin",
        &[&a],
        "      keepalive_pool: {size: 1, requests: 2, idle_timeout: 60}\n",
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
    let extra = format!(
        "      tls_verify: true\n      ca_certificates: [ca]\nca_certificates:\n  - id: ca\n    cert: {}",
        yaml_block(&ca.cert_pem(), 6)
    );
    let p = TestProxy::start(&grpc_route("grpcs", "type: roundrobin", &[&a], &extra));
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
    let extra = format!(
        "      tls_verify: true\n      ca_certificates: [ca]\nca_certificates:\n  - id: ca\n    cert: {}",
        yaml_block(&ca.cert_pem(), 6)
    );
    let p = TestProxy::start(&grpc_route("grpcs", "type: roundrobin", &[&a], &extra));
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
    let dead = refused.addr().to_string();
    let p = TestProxy::start(&format!(
        "routes:\n  - id: grpc\n    uri: /weir.test.Echo/*\n    upstream: {{scheme: grpc, nodes: {{\"{dead}\": 1}}}}\n"
    ));
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
    let p = TestProxy::start(&format!(
        "server:\n  tls_listen: [{{addr: \"127.0.0.1:1\", certificate: edge}}]\n{}certificates:\n  - id: edge\n    cert: {}    key: {}",
        grpc_route("grpc", "type: roundrobin", &[&a], ""),
        yaml_block(&edge.cert_pem(), 6),
        yaml_block(&edge.key_pem(), 6)
    ));
    let c = GrpcClient::connect_tls(p.tls[0], "weir.test", &ca.id.cert);
    assert_eq!(c.unary("Unary", "over tls").expect("unary"), "a:over tls");
    assert_eq!(c.server_stream("Stream", "2").expect("stream").len(), 2);
    // HTTP/1.1 still works on the TLS listener (ALPN falls back) and on the plain one.
    let r = weir_testkit::Client::new(p.addr)
        .get("/nowhere")
        .expect("h1");
    assert_eq!(r.status, 404);
}
