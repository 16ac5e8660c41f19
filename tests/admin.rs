//! The Admin API of the real `weir` binary over the file source: every verb on every kind in
//! APISIX 3's shapes, the key and `allow_admin` gate, body limits and validation errors with
//! body paths, write-back into the file (settings kept as written, never a torn file), and no
//! failed request while 100 writes land.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use weir_testkit::{
    pki::TestCa, reserve_port, wait_for, AdminClient, Backend, PortReservation, RequestStream,
    WeirProcess,
};

const KEY: &str = "test-admin-key-0123456789";
const PATIENCE: Duration = Duration::from_secs(10);

/// A `weir` process on a file with the Admin API, and the ports it holds.
struct Gateway {
    weir: WeirProcess,
    admin: std::net::SocketAddr,
    conf: PathBuf,
    _ports: (PortReservation, PortReservation),
}

impl Gateway {
    fn admin(&self) -> AdminClient {
        AdminClient::new(self.admin, KEY)
    }

    fn file(&self) -> String {
        std::fs::read_to_string(&self.conf).expect("read conf")
    }

    /// Poll until `GET path` answers `status`.
    fn answers(&self, path: &str, status: u16) -> bool {
        wait_for(PATIENCE, || {
            (self.weir.get_path(path).0 == status).then_some(())
        })
        .is_some()
    }

    /// Poll until `GET path` answers `status` with `body`.
    fn serves(&self, path: &str, status: u16, body: &str) -> bool {
        wait_for(PATIENCE, || {
            (self.weir.get_path(path) == (status, body.to_owned())).then_some(())
        })
        .is_some()
    }
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-admin-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

/// The process settings every test starts from, with comments and formatting the write-back
/// must keep.
fn settings(d: &Path, port: u16, admin: u16, extra_admin: &str) -> String {
    format!(
        "# Weir under test: these comments must survive Admin API writes.\n\
server:\n  listen: [\"127.0.0.1:{port}\"]   # the proxy\n  threads: 1\n  pid_file: {d}/weir.pid\n  upgrade_sock: {d}/weir.sock\n\n\
admin:\n  listen: \"127.0.0.1:{admin}\"\n  api_key: \"{KEY}\"\n{extra_admin}\
config_source: {{file: {{watch: true}}}}\n",
        d = d.display()
    )
}

fn start(name: &str, resources: &str, extra_admin: &str) -> Gateway {
    let d = dir(name);
    let (p, a) = (reserve_port(), reserve_port());
    let conf = d.join("weir.yaml");
    let text = format!("{}{resources}", settings(&d, p.port, a.port, extra_admin));
    std::fs::write(&conf, text).expect("write conf");
    let weir = WeirProcess::start(env!("CARGO_BIN_EXE_weir"), &conf, p.port);
    let admin = ([127, 0, 0, 1], a.port).into();
    let up = wait_for(PATIENCE, || std::net::TcpStream::connect(admin).ok());
    assert!(up.is_some(), "admin API did not listen:\n{}", weir.log());
    Gateway {
        weir,
        admin,
        conf,
        _ports: (p, a),
    }
}

fn nodes(b: &Backend) -> Value {
    json!({ b.addr.to_string(): 1 })
}

#[test]
fn every_verb_on_every_kind_in_apisix_shapes() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let g = start("crud", "", "");
    let mut admin = g.admin();

    // PUT creates (201), then replaces (200); the value carries its id and timestamps.
    let (s, v) = admin.put("upstreams/u1", &json!({"nodes": nodes(&a)}));
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["key"], "/apisix/upstreams/u1");
    assert_eq!(v["value"]["id"], "u1");
    assert!(v["value"]["create_time"].is_u64() && v["value"]["update_time"].is_u64());
    let (s, v) = admin.put("upstreams/u1", &json!({"nodes": nodes(&a), "retries": 0}));
    assert_eq!(s, 200, "{v}");

    let (s, v) = admin.put("routes/r1", &json!({"uri": "/one", "upstream_id": "u1"}));
    assert_eq!(s, 201, "{v}");
    assert!(g.serves("/one", 200, "a"), "{}", g.weir.log());

    // POST creates with a generated id.
    let (s, v) = admin.post("routes", &json!({"uri": "/two", "upstream_id": "u1"}));
    assert_eq!(s, 201, "{v}");
    let key = v["key"].as_str().expect("key").to_owned();
    let id = key.rsplit('/').next().expect("id").to_owned();
    assert!(
        key.starts_with("/apisix/routes/") && id.len() == 20,
        "{key}"
    );
    assert!(g.serves("/two", 200, "a"));

    // GET one and the collection.
    let (s, v) = admin.get("routes/r1");
    assert_eq!(s, 200);
    assert_eq!(v["key"], "/apisix/routes/r1");
    assert_eq!(v["value"]["uri"], "/one");
    let (s, v) = admin.get("routes");
    assert_eq!(s, 200);
    assert_eq!(v["total"], 2);
    let keys: Vec<&str> = v["list"]
        .as_array()
        .expect("list")
        .iter()
        .map(|i| i["key"].as_str().expect("key"))
        .collect();
    assert_eq!(keys, ["/apisix/routes/r1", key.as_str()]);

    // PATCH merges (RFC 7396): the nodes move to b, everything else stays.
    let mut patch = json!({"nodes": {a.addr.to_string(): null}});
    patch["nodes"][b.addr.to_string()] = json!(1);
    let (s, v) = admin.patch("upstreams/u1", &patch);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"]["nodes"], nodes(&b));
    assert_eq!(v["value"]["retries"], 0);
    assert!(g.serves("/one", 200, "b"));
    // A member path replaces that member (APISIX's sub-path PATCH).
    let (s, v) = admin.call("PATCH", "upstreams/u1/nodes", Some(&nodes(&a)));
    assert_eq!(s, 200, "{v}");
    assert!(g.serves("/one", 200, "a"));

    // Services, consumers, certificates and CA certificates.
    let (s, v) = admin.put(
        "services/s1",
        &json!({"upstream_id": "u1", "plugins": {"key-auth": {}}}),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = admin.put("routes/r3", &json!({"uri": "/three", "service_id": "s1"}));
    assert_eq!(s, 201, "{v}");
    // key-auth from the service: no `apikey`, no entry.
    assert!(g.answers("/three", 401), "{}", g.weir.log());
    let (s, v) = admin.call(
        "PUT",
        "consumers",
        Some(&json!({"username": "alice", "plugins": {"key-auth": {"key": "alice-secret-key"}}})),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["key"], "/apisix/consumers/alice");
    assert_eq!(v["value"]["plugins"]["key-auth"]["key"], "******");
    let ca = TestCa::new("admin-test-ca");
    let leaf = ca.issue("client", &["client"], &[], true);
    let (s, v) = admin.put(
        "certificates/c1",
        &json!({"cert": leaf.cert_pem(), "key": leaf.key_pem()}),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["value"]["key"], "******");
    let (s, v) = admin.put("ca_certificates/ca1", &json!({"cert": ca.cert_pem()}));
    assert_eq!(s, 201, "{v}");
    // No answer and no log line ever shows a private key or an API key.
    let (_, all) = admin.get("certificates");
    let (_, consumers) = admin.get("consumers");
    for text in [all.to_string(), consumers.to_string(), g.weir.log()] {
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        assert!(!text.contains("alice-secret-key"), "{text}");
        assert!(!text.contains(KEY), "{text}");
    }

    // Reading a consumer and writing it back (as a dashboard does) keeps its real key: the
    // mask never replaces it.
    let (_, alice) = admin.get("consumers/alice");
    let (s, v) = admin.put("consumers/alice", &alice["value"]);
    assert_eq!(s, 200, "{v}");
    let r = weir_testkit::Client::new(([127, 0, 0, 1], g.weir.port).into())
        .request("GET", "/three", &[("apikey", "alice-secret-key")], b"")
        .expect("request");
    assert_eq!(r.status, 200, "{}", r.body);
    let (s, v) = admin.put(
        "consumers/bob",
        &json!({"plugins": {"key-auth": {"key": "******"}}}),
    );
    assert_eq!(s, 400, "{v}");

    // DELETE: 200 with APISIX's shape; unknown ids 404; referenced resources refused.
    let (s, v) = admin.delete("upstreams/u1");
    assert_eq!(s, 400, "{v}");
    let msg = v["error_msg"].as_str().expect("error_msg");
    assert!(
        msg.contains("route \"r1\"") && msg.contains("service \"s1\""),
        "{msg}"
    );
    let (s, v) = admin.delete(&format!("routes/{id}"));
    assert_eq!((s, &v["key"]), (200, &json!(key)), "{v}");
    assert_eq!(v["deleted"], "1");
    assert!(g.answers("/two", 404));
    let (s, _) = admin.get(&format!("routes/{id}"));
    assert_eq!(s, 404);
    let (s, v) = admin.delete("routes/nope");
    assert_eq!(s, 404, "{v}");
    let (s, v) = admin.patch("upstreams/nope", &json!({"retries": 1}));
    assert_eq!(s, 404, "{v}");
}

#[test]
fn the_key_and_allow_admin_guard_every_request() {
    let g = start("auth", "", "");
    let (s, v) = AdminClient::without_key(g.admin).get("routes");
    assert_eq!(s, 401, "{v}");
    let (s, _) = AdminClient::new(g.admin, "wrong").get("routes");
    assert_eq!(s, 401);
    let (s, _) = AdminClient::new(g.admin, &format!("{KEY}x")).put("upstreams/u", &json!({}));
    assert_eq!(s, 401);
    let (s, _) = g.admin().get("routes");
    assert_eq!(s, 200);

    // A client outside allow_admin is refused even with the key.
    let g = start("allow", "", "  allow_admin: [\"10.0.0.0/8\"]\n");
    let (s, v) = g.admin().get("routes");
    assert_eq!(s, 403, "{v}");
    let g = start("allow-ok", "", "  allow_admin: [\"127.0.0.0/24\"]\n");
    assert_eq!(g.admin().get("routes").0, 200);
}

#[test]
fn bad_bodies_are_refused_with_paths_relative_to_the_body() {
    let a = Backend::start("a");
    let g = start(
        "bad",
        &format!(
            "routes: [{{id: r, uri: /*, upstream_id: u}}]\nupstreams: [{{id: u, nodes: {{\"{}\": 1}}}}]\n",
            a.addr
        ),
        "",
    );
    let mut admin = g.admin();
    let (s, v) = admin.put(
        "upstreams/u2",
        &json!({"nodes": [{"host": "127.0.0.1", "port": 0, "weight": 1}], "retires": 1}),
    );
    assert_eq!(s, 400);
    assert_eq!(
        v,
        json!({"error_msg": "nodes[0].port: must be 1..65535, got 0; retires: unknown field"})
    );
    let (s, v) = admin.put("routes/r2", &json!({"uri": "/x", "upstream_id": "u9"}));
    assert_eq!(
        (s, v),
        (
            400,
            json!({"error_msg": "upstream_id: unknown upstream \"u9\""})
        )
    );
    let (s, v) = admin.put("upstreams/u3", &json!({"id": "other", "nodes": nodes(&a)}));
    assert_eq!(s, 400);
    assert_eq!(
        v["error_msg"],
        "id: must equal the id in the path (\"u3\"), got \"other\""
    );
    let (s, v) = admin.raw("PUT", "/apisix/admin/upstreams/u4", b"{\"nodes\": ");
    assert_eq!(s, 400);
    assert!(
        v["error_msg"]
            .as_str()
            .expect("msg")
            .starts_with("invalid JSON"),
        "{v}"
    );
    let (s, v) = admin.raw("PUT", "/apisix/admin/upstreams/u4", b"[1, 2]");
    assert_eq!((s, v), (400, json!({"error_msg": "must be an object"})));

    // Over 1 MiB: 413, whether announced by Content-Length or not.
    let big = format!("{{\"desc\": \"{}\"}}", "x".repeat(1 << 20));
    let (s, _) = g
        .admin()
        .raw("PUT", "/apisix/admin/upstreams/u5", big.as_bytes());
    assert_eq!(s, 413);

    // The same without Content-Length (chunked): read up to the limit, then refused; the
    // client still sending reads the answer, not a reset.
    {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(g.admin).expect("connect");
        write!(
            c,
            "PUT /apisix/admin/upstreams/u6 HTTP/1.1\r\nHost: admin\r\nX-API-KEY: {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .expect("head");
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..24 {
            write!(c, "{:x}\r\n", chunk.len()).expect("chunk size");
            c.write_all(&chunk).expect("chunk");
            c.write_all(b"\r\n").expect("chunk end");
        }
        c.write_all(b"0\r\n\r\n").expect("last chunk");
        let mut answer = String::new();
        let _ = c.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }

    // Unknown paths and kinds.
    assert_eq!(admin.get("nothing/1").0, 404);
    assert_eq!(admin.raw("GET", "/apisix/other", b"").0, 404);

    // Nothing of it reached the configuration.
    let (_, v) = admin.get("upstreams");
    assert_eq!(v["total"], 1);
    assert_eq!(g.weir.get(), (200, "a".into()));
}

/// The process settings sections as written: everything before the first resource section.
fn settings_part(text: &str) -> &str {
    let end = ["routes:", "services:", "upstreams:", "consumers:"]
        .iter()
        .filter_map(|k| text.find(&format!("\n{k}")))
        .min()
        .map_or(text.len(), |i| i + 1);
    &text[..end]
}

#[test]
fn writes_rewrite_the_file_and_keep_the_settings_as_written() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let g = start(
        "writeback",
        &format!(
            "# resources below are rewritten by the Admin API\nroutes: [{{id: r, uri: /*, upstream_id: u}}]\nupstreams: [{{id: u, nodes: {{\"{}\": 1}}}}]\n",
            a.addr
        ),
        "",
    );
    let before = g.file();
    let mut admin = g.admin();
    let (s, v) = admin.put("upstreams/u", &json!({"nodes": nodes(&b)}));
    assert_eq!(s, 200, "{v}");
    assert!(g.serves("/", 200, "b"));
    let after = g.file();
    assert_eq!(settings_part(&after), settings_part(&before), "{after}");
    assert!(after.contains(&b.addr.to_string()), "{after}");
    assert!(!after.contains(&a.addr.to_string()), "{after}");
    // The file is valid on its own, and a restart serves what the API wrote.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["-t", "-c"])
        .arg(&g.conf)
        .output()
        .expect("weir -t");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No write-back leaves a temporary file behind.
    let dir = g.conf.parent().expect("dir");
    let stray: Vec<_> = std::fs::read_dir(dir)
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");

    // A hand edit is picked up, and the next API write builds on it.
    let edited = after.replace(&b.addr.to_string(), &a.addr.to_string());
    std::fs::write(g.conf.with_extension("edit"), &edited).expect("write");
    std::fs::rename(g.conf.with_extension("edit"), &g.conf).expect("rename");
    let (s, v) = admin.put("routes/r2", &json!({"uri": "/two", "upstream_id": "u"}));
    assert_eq!(s, 201, "{v}");
    assert!(g.serves("/two", 200, "a"));
    assert!(g.serves("/", 200, "a"));

    // While the file has errors, writes are refused (409) and the running set stays.
    let broken = format!(
        "{}upstreams: [{{id: u, nodes: {{}}, retires: 1}}]\n",
        settings_part(&edited)
    );
    std::fs::write(&g.conf, &broken).expect("write");
    let (s, v) = admin.put("routes/r3", &json!({"uri": "/three", "upstream_id": "u"}));
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error_msg"].as_str().expect("msg").contains("retires"),
        "{v}"
    );
    assert_eq!(g.file(), broken);
    assert_eq!(g.weir.get(), (200, "a".into()));
}

#[test]
fn concurrent_writes_are_serialised_and_the_file_is_never_torn() {
    let a = Backend::start("a");
    let g = start("concurrent", "", "");
    let conf = g.conf.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let text = std::fs::read_to_string(&conf).expect("read");
                if let Err(e) = weir_config::parse_yaml(&text) {
                    panic!(
                        "torn or invalid file after {reads} reads: {}\n{text}",
                        e.joined()
                    );
                }
                reads += 1;
            }
            reads
        })
    };
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let addr = g.admin;
            let node = nodes(&a);
            std::thread::spawn(move || {
                let mut admin = AdminClient::new(addr, KEY);
                for i in 0..10 {
                    let (s, v) = admin.put(&format!("upstreams/w{w}-{i}"), &json!({"nodes": node}));
                    assert_eq!(s, 201, "{v}");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let reads = reader.join().expect("reader");
    assert!(reads > 0);
    let loaded = weir_config::parse_yaml(&g.file()).expect("valid file");
    assert_eq!(loaded.config.resources.upstreams.len(), 40);
    let (_, v) = g.admin().get("upstreams");
    assert_eq!(v["total"], 40);
}

#[test]
fn no_request_fails_while_100_writes_land() {
    let backends: Vec<Backend> = (0..4).map(|i| Backend::start(&format!("n{i}"))).collect();
    let g = start(
        "steady",
        &format!(
            "routes: [{{id: r, uri: /*, upstream_id: u}}]\nupstreams: [{{id: u, nodes: {{\"{}\": 1}}}}]\n",
            backends[0].addr
        ),
        "",
    );
    let stream = RequestStream::start(([127, 0, 0, 1], g.weir.port).into(), "/", None);
    let mut admin = g.admin();
    stream.more(20);
    for i in 0..100 {
        admin.mixed_write(i, &backends);
    }
    stream.more(20);
    // Every request got a 200, from one of the backends.
    stream.finish_clean();
}

#[test]
fn writes_keep_the_round_robin_cycle_of_unchanged_upstreams() {
    let bs: Vec<Backend> = ["a", "b", "c"].iter().map(|n| Backend::start(n)).collect();
    let nodes: Vec<String> = bs.iter().map(|b| format!("\"{}\": 1", b.addr)).collect();
    let g = start(
        "cycle",
        &format!(
            "routes: [{{id: r, uri: /*, upstream_id: u}}]\nupstreams: [{{id: u, nodes: {{{}}}}}]\n",
            nodes.join(", ")
        ),
        "",
    );
    let mut admin = g.admin();
    // Three requests with a write before each of the last two: a cycle that survived the
    // writes serves each node once; one restarted by them would repeat its first node.
    let mut seen = vec![g.weir.get().1];
    for i in 0..2 {
        let (s, v) = admin.put(
            &format!("routes/other{i}"),
            &json!({"uri": format!("/o{i}"), "upstream_id": "u"}),
        );
        assert_eq!(s, 201, "{v}");
        seen.push(g.weir.get().1);
    }
    seen.sort();
    assert_eq!(seen, ["a", "b", "c"]);
}
