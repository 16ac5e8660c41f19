//! TLS to upstreams (docs/tls.md): verification against `ca_certificates` by name
//! and by IP, `tls_verify: false`, client certificates (mTLS) and the APISIX `tls` alias, and
//! pools that never cross TLS settings. Certificates are generated at test time.

use std::net::IpAddr;
use std::time::Duration;
use weir_testkit::pki::{yaml_block, Identity, TestCa};
use weir_testkit::{wait_for, Backend, TestProxy, TlsConfig};

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

fn ca_object(id: &str, ca: &TestCa) -> String {
    format!("  - id: {id}\n    cert: {}", yaml_block(&ca.cert_pem(), 6))
}

fn cert_object(id: &str, who: &Identity) -> String {
    format!(
        "  - id: {id}\n    cert: {}    key: {}",
        yaml_block(&who.cert_pem(), 6),
        yaml_block(&who.key_pem(), 6)
    )
}

/// One route per `(uri prefix, upstream YAML fields)`, each to `node`, plus objects.
fn config(node: &Backend, routes: &[(&str, &str)], objects: &str) -> String {
    let mut s = String::from("routes:\n");
    for (i, (prefix, fields)) in routes.iter().enumerate() {
        s.push_str(&format!(
            "  - id: r{i}\n    uri: {prefix}/*\n    upstream:\n      scheme: https\n      nodes: {{\"{}\": 1}}\n{fields}",
            node.addr
        ));
    }
    s.push_str(objects);
    s
}

#[test]
fn tls_verify_accepts_a_certificate_chaining_to_the_ca_by_name_and_by_ip() {
    let ca = TestCa::new("Weir test CA");
    let b = Backend::start_https("tls", &ca, &["backend.test"], &[LOCAL]);
    let p = TestProxy::start(&config(
        &b,
        &[
            (
                "/name",
                "      pass_host: rewrite\n      upstream_host: backend.test\n      tls_verify: true\n      ca_certificates: [ca]\n",
            ),
            // IP node, `pass_host: node`: no SNI; the certificate's IP SAN is verified.
            ("/ip", "      pass_host: node\n      tls_verify: true\n      ca_certificates: [ca]\n"),
        ],
        &format!("ca_certificates:\n{}", ca_object("ca", &ca)),
    ));
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
    let p = TestProxy::start(&config(
        &b,
        &[
            (
                "/wrong-ca",
                "      pass_host: rewrite\n      upstream_host: backend.test\n      tls_verify: true\n      ca_certificates: [other]\n",
            ),
            // No ca_certificates: the system store, which does not know the test CA.
            (
                "/system",
                "      pass_host: rewrite\n      upstream_host: backend.test\n      tls_verify: true\n",
            ),
            (
                "/wrong-name",
                "      pass_host: rewrite\n      upstream_host: elsewhere.test\n      tls_verify: true\n      ca_certificates: [ca]\n",
            ),
            // The certificate names no IP: an IP-literal node fails verification.
            ("/ip", "      pass_host: node\n      tls_verify: true\n      ca_certificates: [ca]\n"),
        ],
        &format!(
            "ca_certificates:\n{}{}",
            ca_object("ca", &ca),
            ca_object("other", &other)
        ),
    ));
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
    let p = TestProxy::start(&format!(
        "routes:\n  - id: r\n    uri: /*\n    upstream:\n      scheme: https\n      pass_host: rewrite\n      upstream_host: backend.test\n      tls_verify: true\n      ca_certificates: [ca]\n      nodes: {{\"{}\": 1, \"{}\": 1}}\nca_certificates:\n{}",
        bad.addr,
        good.addr,
        ca_object("ca", &ca)
    ));
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
    let p = TestProxy::start(&config(&b, &[("/off", "      tls_verify: false\n")], ""));
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
    let inline = format!(
        "      tls:\n        client_cert: {}        client_key: {}",
        yaml_block(&carol.cert_pem(), 10),
        yaml_block(&carol.key_pem(), 10)
    );
    let p = TestProxy::start(&config(
        &b,
        &[
            ("/none", ""),
            ("/ref", "      client_certificate: alice\n"),
            (
                "/alias-id",
                "      pass_host: node\n      tls: {client_cert_id: bob, verify: true}\n      ca_certificates: [ca]\n",
            ),
            ("/alias-inline", &inline),
        ],
        &format!(
            "certificates:\n{}{}ca_certificates:\n{}",
            cert_object("alice", &alice),
            cert_object("bob", &bob),
            ca_object("ca", &ca)
        ),
    ));
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
    let p = TestProxy::start(&config(
        &b,
        &[
            ("/alice", "      client_certificate: alice\n"),
            ("/bob", "      client_certificate: bob\n"),
            // Same node and identity as /alice, but verifying against a CA that did not sign
            // the backend: it must never ride on /alice's unverified connection.
            (
                "/strict",
                "      client_certificate: alice\n      tls_verify: true\n      ca_certificates: [other]\n",
            ),
        ],
        &format!(
            "certificates:\n{}{}ca_certificates:\n{}",
            cert_object("alice", &alice),
            cert_object("bob", &bob),
            ca_object("other", &other)
        ),
    ));
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
    let p = TestProxy::start(&format!(
        "control: {{listen: \"127.0.0.1:1\"}}\nupstreams:\n  - id: u1\n    scheme: https\n    tls_verify: true\n    ca_certificates: [ca]\n    client_certificate: alice\n    nodes: {{\"{}\": 1}}\n    checks:\n      active: {{type: https, http_path: /healthz}}\ncertificates:\n{}ca_certificates:\n{}",
        b.addr,
        cert_object("alice", &alice),
        ca_object("ca", &ca)
    ));
    let probe = wait_for(Duration::from_secs(15), || {
        b.seen().into_iter().find(|s| s.target == "/healthz")
    })
    .expect("a verified probe with the client certificate");
    assert_eq!(probe.client_cert.as_deref(), Some("alice"));
    assert_eq!(probe.sni, None);
    let (_, state) = p.control_get("/v1/healthcheck/upstreams/u1");
    assert_eq!(state["nodes"][0]["status"], "healthy");
}
