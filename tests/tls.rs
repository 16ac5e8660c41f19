//! TLS to upstreams (docs/tls.md): verification against `ca_certificates` by name
//! and by IP, `tls_verify: false`, client certificates (mTLS) and the APISIX `tls` alias, and
//! pools that never cross TLS settings. Certificates are generated at test time.

use serde_json::json;
use std::net::IpAddr;
use std::time::Duration;
use weir_testkit::config::{Conf, Route, Upstream};
use weir_testkit::pki::TestCa;
use weir_testkit::{wait_for, Backend, TestProxy, TlsConfig};

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// An https upstream with the one node `node`.
fn https(node: &Backend) -> Upstream {
    Upstream::nodes(&[node]).scheme("https")
}

/// One route `r<i>` per `(uri prefix, upstream)`.
fn config(routes: Vec<(&str, Upstream)>) -> Conf {
    routes
        .into_iter()
        .enumerate()
        .fold(Conf::new(), |conf, (i, (prefix, upstream))| {
            conf.route(Route::new(&format!("r{i}"), &format!("{prefix}/*")).upstream(upstream))
        })
}

#[test]
fn tls_verify_accepts_a_certificate_chaining_to_the_ca_by_name_and_by_ip() {
    let ca = TestCa::new("Weir test CA");
    let b = Backend::start_https("tls", &ca, &["backend.test"], &[LOCAL]);
    let p = TestProxy::start(
        config(vec![
            (
                "/name",
                https(&b)
                    .rewrite_host("backend.test")
                    .tls_verify(true)
                    .ca_certificates(&["ca"]),
            ),
            // IP node, `pass_host: node`: no SNI; the certificate's IP SAN is verified.
            (
                "/ip",
                https(&b)
                    .pass_host("node")
                    .tls_verify(true)
                    .ca_certificates(&["ca"]),
            ),
        ])
        .ca_certificate("ca", &ca),
    );
    let mut c = p.client();
    let r = c.get("/name/x").expect("request");
    assert_eq!((r.status, r.body.as_str()), (200, "tls"));
    let r = c.get("/ip/x").expect("request");
    assert_eq!((r.status, r.body.as_str()), (200, "tls"));
    let seen = b.seen();
    assert_eq!(seen[0].sni.as_deref(), Some("backend.test"));
    assert_eq!(seen[1].sni, None, "no SNI is sent for an IP literal");
}

#[test]
fn tls_verify_rejects_a_wrong_ca_a_wrong_name_and_a_missing_ip_san() {
    let ca = TestCa::new("Weir test CA");
    let other = TestCa::new("Another CA");
    let b = Backend::start_https("tls", &ca, &["backend.test"], &[]);
    let p = TestProxy::start(
        config(vec![
            (
                "/wrong-ca",
                https(&b)
                    .rewrite_host("backend.test")
                    .tls_verify(true)
                    .ca_certificates(&["other"]),
            ),
            // No ca_certificates: the system store, which does not know the test CA.
            (
                "/system",
                https(&b).rewrite_host("backend.test").tls_verify(true),
            ),
            (
                "/wrong-name",
                https(&b)
                    .rewrite_host("elsewhere.test")
                    .tls_verify(true)
                    .ca_certificates(&["ca"]),
            ),
            // The certificate names no IP: an IP-literal node fails verification.
            (
                "/ip",
                https(&b)
                    .pass_host("node")
                    .tls_verify(true)
                    .ca_certificates(&["ca"]),
            ),
        ])
        .ca_certificate("ca", &ca)
        .ca_certificate("other", &other),
    );
    for path in ["/wrong-ca/x", "/system/x", "/wrong-name/x", "/ip/x"] {
        let r = p.client().get(path).expect("request");
        assert_eq!(r.status, 502, "{path} must fail verification");
        assert_eq!(r.header("x-weir-upstream-status"), Some("502"), "{path}");
    }
    assert_eq!(
        b.hits(),
        0,
        "no request is sent over an unverified connection"
    );
}

#[test]
fn a_failed_verification_moves_on_to_a_node_that_passes() {
    let ca = TestCa::new("Weir test CA");
    let rogue = TestCa::new("Rogue CA");
    let bad = Backend::start_https("tls", &rogue, &["backend.test"], &[]);
    let good = Backend::start_https("tls", &ca, &["backend.test"], &[]);
    let p = TestProxy::start(
        Conf::new()
            .route(
                Route::new("r", "/*").upstream(
                    Upstream::nodes(&[&bad, &good])
                        .scheme("https")
                        .rewrite_host("backend.test")
                        .tls_verify(true)
                        .ca_certificates(&["ca"]),
                ),
            )
            .ca_certificate("ca", &ca),
    );
    let mut c = p.client();
    for _ in 0..4 {
        // POST too: a certificate failure happens before anything is sent.
        let r = c.request("POST", "/", &[], b"x").expect("request");
        assert_eq!(r.status, 200);
    }
    assert_eq!(bad.hits(), 0);
}

#[test]
fn tls_verify_false_accepts_a_self_signed_backend() {
    let unknown = TestCa::new("Unknown CA");
    let b = Backend::start_https("tls", &unknown, &["backend.test"], &[]);
    let p = TestProxy::start(config(vec![("/off", https(&b).tls_verify(false))]));
    let r = p.client().get("/off/x").expect("request");
    assert_eq!((r.status, r.body.as_str()), (200, "tls"));
}

fn mtls_backend(server_ca: &TestCa, client_ca: &TestCa) -> Backend {
    Backend::start_tls(
        "mtls",
        TlsConfig {
            identity: server_ca.issue("backend", &["backend.test"], &[LOCAL], false),
            require_client_ca: Some(client_ca.id.cert.clone()),
        },
    )
}

#[test]
fn client_certificates_are_presented_when_the_upstream_names_one() {
    let ca = TestCa::new("Weir test CA");
    let clients = TestCa::new("Client CA");
    let b = mtls_backend(&ca, &clients);
    let alice = clients.issue("alice", &[], &[], true);
    let bob = clients.issue("bob", &[], &[], true);
    let carol = clients.issue("carol", &[], &[], true);
    let p = TestProxy::start(
        config(vec![
            ("/none", https(&b)),
            ("/ref", https(&b).client_certificate("alice")),
            (
                "/alias-id",
                https(&b)
                    .pass_host("node")
                    .set("tls", json!({"client_cert_id": "bob", "verify": true}))
                    .ca_certificates(&["ca"]),
            ),
            (
                "/alias-inline",
                https(&b).set(
                    "tls",
                    json!({"client_cert": carol.cert_pem(), "client_key": carol.key_pem()}),
                ),
            ),
        ])
        .certificate("alice", &alice)
        .certificate("bob", &bob)
        .ca_certificate("ca", &ca),
    );
    let mut c = p.client();
    assert_eq!(c.get("/none/x").expect("request").status, 502);
    for (path, who) in [
        ("/ref/x", "alice"),
        ("/alias-id/x", "bob"),
        ("/alias-inline/x", "carol"),
    ] {
        let r = c.get(path).expect("request");
        assert_eq!(r.status, 200, "{path}");
        let last = b.seen().pop().expect("seen");
        assert_eq!(last.client_cert.as_deref(), Some(who), "{path}");
    }
}

#[test]
fn pooled_connections_never_cross_client_certificates_or_trust() {
    let ca = TestCa::new("Weir test CA");
    let clients = TestCa::new("Client CA");
    let b = mtls_backend(&ca, &clients);
    let alice = clients.issue("alice", &[], &[], true);
    let bob = clients.issue("bob", &[], &[], true);
    let other = TestCa::new("Another CA");
    let p = TestProxy::start(
        config(vec![
            ("/alice", https(&b).client_certificate("alice")),
            ("/bob", https(&b).client_certificate("bob")),
            // Same node and identity as /alice, but verifying against a CA that did not sign
            // the backend: it must never ride on /alice's unverified connection.
            (
                "/strict",
                https(&b)
                    .client_certificate("alice")
                    .tls_verify(true)
                    .ca_certificates(&["other"]),
            ),
        ])
        .certificate("alice", &alice)
        .certificate("bob", &bob)
        .ca_certificate("other", &other),
    );
    let mut c = p.client();
    let mut want = Vec::new();
    for _ in 0..3 {
        for (path, who) in [("/alice/x", "alice"), ("/bob/x", "bob")] {
            assert_eq!(c.get(path).expect("request").status, 200);
            want.push(Some(who.to_owned()));
        }
        assert_eq!(c.get("/strict/x").expect("request").status, 502);
    }
    let got: Vec<Option<String>> = b.seen().into_iter().map(|s| s.client_cert).collect();
    assert_eq!(got, want);
    // Connections were reused within each identity: fewer connections than requests.
    assert!(b.connections() < 6, "{} connections", b.connections());
}

#[test]
fn https_health_probes_verify_against_the_upstreams_ca_and_ip() {
    let ca = TestCa::new("Weir test CA");
    let clients = TestCa::new("Client CA");
    let b = mtls_backend(&ca, &clients);
    let alice = clients.issue("alice", &[], &[], true);
    let p = TestProxy::start(
        Conf::new()
            .control()
            .upstream(
                https(&b)
                    .id("u1")
                    .tls_verify(true)
                    .ca_certificates(&["ca"])
                    .client_certificate("alice")
                    .active_check(json!({"type": "https", "http_path": "/healthz"})),
            )
            .certificate("alice", &alice)
            .ca_certificate("ca", &ca),
    );
    let probe = wait_for(Duration::from_secs(15), || {
        b.seen().into_iter().find(|s| s.target == "/healthz")
    })
    .expect("a verified probe with the client certificate");
    assert_eq!(probe.client_cert.as_deref(), Some("alice"));
    assert_eq!(probe.sni, None);
    let (_, state) = p.control_get("/v1/healthcheck/upstreams/u1");
    assert_eq!(state["nodes"][0]["status"], "healthy");
}
