//! The Admin API's security, with the real `weir` binary: a wrong key, a missing key and the
//! key in the wrong place (another header, the query string) are all 401 and take the same
//! time; every write leaves one audit line; and no secret (certificate private keys,
//! consumers' key-auth keys, upstream `tls.client_key`, the admin key, the etcd password)
//! ever comes back in an answer, an error message or a log line.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weir_testkit::{
    pki::TestCa, reserve_port, wait_for, AdminClient, Backend, Etcd, PortReservation, WeirProcess,
};

const KEY: &str = "security-admin-key-7d1f0c9a2b";
const CONSUMER_KEY: &str = "alice-key-auth-secret-93c1";
const ETCD_USER: &str = "weir";
const ETCD_PASSWORD: &str = "etcd-pa55-w0rd-5e2a";
const PATIENCE: Duration = Duration::from_secs(15);

struct Gateway {
    weir: WeirProcess,
    dir: PathBuf,
    admin: SocketAddr,
    _ports: (PortReservation, PortReservation),
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-adminsec-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn start(name: &str, source: &str) -> Gateway {
    let d = dir(name);
    let (p, a) = (reserve_port(), reserve_port());
    let conf = d.join("weir.yaml");
    std::fs::write(&conf, conf_text(&d, p.port, a.port, source)).expect("write conf");
    let weir = WeirProcess::start(env!("CARGO_BIN_EXE_weir"), &conf, p.port);
    let admin: SocketAddr = ([127, 0, 0, 1], a.port).into();
    let up = wait_for(PATIENCE, || TcpStream::connect(admin).ok());
    assert!(up.is_some(), "admin API did not listen:\n{}", weir.log());
    Gateway {
        weir,
        dir: d,
        admin,
        _ports: (p, a),
    }
}

fn conf_text(d: &Path, port: u16, admin: u16, source: &str) -> String {
    format!(
        "server:\n  listen: [\"127.0.0.1:{port}\"]\n  threads: 1\n  pid_file: {d}/weir.pid\n  upgrade_sock: {d}/weir.sock\n\
admin:\n  listen: \"127.0.0.1:{admin}\"\n  api_key: \"{KEY}\"\n{source}",
        d = d.display()
    )
}

/// One request on a fresh connection: (status, whole answer, time from the first byte
/// written to the end of the answer). The connection is made before the clock starts, so
/// the time is the server's handling plus loopback, not the TCP handshake.
fn timed_request(addr: SocketAddr, head: &str) -> (u16, String, Duration) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let t = Instant::now();
    s.write_all(head.as_bytes()).expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if answer_complete(&got) {
                    break;
                }
            }
            Err(e) => panic!("read: {e} after {:?}", String::from_utf8_lossy(&got)),
        }
    }
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text, took)
}

/// Whether `b` holds a whole response (head and the body its Content-Length announces).
fn answer_complete(b: &[u8]) -> bool {
    let Some(end) = b.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&b[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    len.is_some_and(|n| b.len() >= end + 4 + n)
}

fn get_head(path: &str, headers: &[(&str, &str)]) -> String {
    let mut h = format!("GET {path} HTTP/1.1\r\nHost: admin\r\n");
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    h.push_str("\r\n");
    h
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Every way of not presenting the key: all get 401, without the key in the answer, and
/// take the same time as each other.
#[test]
fn wrong_missing_and_misplaced_keys_are_401_in_the_same_time() {
    let g = start("timing", "config_source: {file: {watch: false}}\n");
    let path = "/apisix/admin/routes";
    let wrong_first = format!("X{}", &KEY[1..]);
    let wrong_last = format!("{}X", &KEY[..KEY.len() - 1]);
    let query = |q: &str| format!("{path}?{q}={KEY}");
    let bearer = format!("Bearer {KEY}");
    let long = "k".repeat(4000);
    let classes: Vec<(&str, String)> = vec![
        ("missing", get_head(path, &[])),
        (
            "wrong, first byte",
            get_head(path, &[("X-API-KEY", &wrong_first)]),
        ),
        (
            "wrong, last byte",
            get_head(path, &[("X-API-KEY", &wrong_last)]),
        ),
        (
            "one byte short",
            get_head(path, &[("X-API-KEY", &KEY[..KEY.len() - 1])]),
        ),
        ("empty", get_head(path, &[("X-API-KEY", "")])),
        ("4000 bytes", get_head(path, &[("X-API-KEY", &long)])),
        (
            "Authorization: Bearer",
            get_head(path, &[("Authorization", &bearer)]),
        ),
        ("Authorization", get_head(path, &[("Authorization", KEY)])),
        ("X-API-Key-Foo", get_head(path, &[("X-API-Key-Foo", KEY)])),
        ("apikey header", get_head(path, &[("apikey", KEY)])),
        ("query api_key", get_head(&query("api_key"), &[])),
        ("query X-API-KEY", get_head(&query("X-API-KEY"), &[])),
        ("query apikey", get_head(&query("apikey"), &[])),
    ];

    // The right key, in any letter case of the header name, opens it.
    for name in ["X-API-KEY", "x-api-key", "X-Api-Key"] {
        let (s, text, _) = timed_request(g.admin, &get_head(path, &[(name, KEY)]));
        assert_eq!(s, 200, "{name}: {text}");
    }
    // Every other class is refused, for reads and writes, and the answer never echoes a key.
    for (name, head) in &classes {
        let (s, text, _) = timed_request(g.admin, head);
        assert_eq!(s, 401, "{name}: {text}");
        assert!(!text.contains(KEY), "{name}: {text}");
        let put = head.replacen("GET ", "PUT ", 1).replacen(
            "\r\n\r\n",
            "\r\nContent-Length: 2\r\n\r\n{}",
            1,
        );
        let put = put.replacen("/apisix/admin/routes", "/apisix/admin/routes/r1", 1);
        let (s, text, _) = timed_request(g.admin, &put);
        assert_eq!(s, 401, "PUT {name}: {text}");
    }

    // Timing. The key is compared in constant time by construction (SHA-256 digests of the
    // configured and the presented key, compared with OpenSSL's constant-time memcmp), so no
    // class can be told from another by how long its 401 takes. A leak at the level of a
    // byte comparison (nanoseconds) is far below what loopback round trips on a shared
    // machine can show; what this measures is that no way of presenting a key takes another
    // path (a lookup, a hash of a different cost, a slower error) that a client could see.
    // Robust on a loaded machine: the classes are sampled interleaved, round after round, so
    // that load changes hit all of them alike; medians ignore outliers; and the bound is
    // generous: each class's median within 50% (or 1 ms) of the median of all samples.
    const ROUNDS: usize = 120;
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(ROUNDS); classes.len()];
    for round in 0..ROUNDS {
        // Rotate the order each round, so no class always follows another.
        for k in 0..classes.len() {
            let i = (k + round) % classes.len();
            let (s, _, took) = timed_request(g.admin, &classes[i].1);
            assert_eq!(s, 401);
            samples[i].push(took);
        }
    }
    let mut all: Vec<Duration> = samples.iter().flatten().copied().collect();
    let reference = median(&mut all);
    let bound = (reference / 2).max(Duration::from_millis(1));
    let medians: Vec<(&str, Duration)> = classes
        .iter()
        .zip(samples.iter_mut())
        .map(|((name, _), s)| (*name, median(s)))
        .collect();
    println!("401 median over all: {reference:?}; per class: {medians:?}");
    for (name, m) in &medians {
        let diff = m.abs_diff(reference);
        assert!(
            diff <= bound,
            "{name}: median {m:?} vs {reference:?} for all (bound {bound:?}); {medians:?}"
        );
    }
    // No refusal is a write: nothing was audited as accepted.
    let log = g.weir.log();
    assert!(!log.contains(KEY), "the key is in the log");
    let _ = std::fs::remove_dir_all(&g.dir);
}

/// A PEM's base64 body lines: any one of them is the secret (the armour lines are not).
fn pem_body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 32)
        .map(str::to_owned)
        .collect()
}

fn assert_no_secret(what: &str, text: &str, secrets: &[String]) {
    for s in secrets {
        assert!(
            !text.contains(s.as_str()),
            "{what} shows a secret ({s}):\n{text}"
        );
    }
    assert!(
        !text.contains("PRIVATE KEY"),
        "{what} shows a private key:\n{text}"
    );
}

/// Audit lines of the log: `admin write: peer=... method=... path=... key=... status=...`.
fn audit_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("weir::audit") && l.contains("admin write: "))
        .collect()
}

#[test]
fn writes_are_audited_and_secrets_never_come_back() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut etcd = Etcd::start();
    rt.block_on(etcd.enable_auth(ETCD_USER, ETCD_PASSWORD));
    let source = format!(
        "config_source:\n  etcd:\n    endpoints: [\"{}\"]\n    prefix: /weir\n    timeout: 2\n    user: {ETCD_USER}\n    password: \"{ETCD_PASSWORD}\"\n",
        etcd.endpoint()
    );
    let g = start("secrets", &source);
    let backend = Backend::start("sec");
    let ca = TestCa::new("admin-security-ca");
    let server = ca.issue("sec.example", &["sec.example"], &[], false);
    let client = ca.issue("client", &["client"], &[], true);
    let other = ca.issue("other", &["other.example"], &[], false);
    let mut secrets = vec![
        KEY.to_owned(),
        CONSUMER_KEY.to_owned(),
        ETCD_PASSWORD.to_owned(),
    ];
    secrets.extend(pem_body_lines(&server.key_pem()));
    secrets.extend(pem_body_lines(&client.key_pem()));
    secrets.extend(pem_body_lines(&other.key_pem()));

    let mut admin = AdminClient::new(g.admin, KEY);
    let mut answers: Vec<(String, u16, Value)> = Vec::new();
    let mut call = |admin: &mut AdminClient, m: &str, p: &str, b: Option<Value>| {
        let (s, v) = admin.call(m, p, b.as_ref());
        answers.push((format!("{m} {p}"), s, v.clone()));
        (s, v)
    };
    let nodes = json!({ backend.addr.to_string(): 1 });
    // Writes that succeed: a certificate, a consumer, upstreams with a client key.
    let writes_ok: Vec<(&str, String, Value, u16)> = vec![
        (
            "PUT",
            "certificates/c1".into(),
            json!({"cert": server.cert_pem(), "key": server.key_pem()}),
            201,
        ),
        (
            "PUT",
            "consumers".into(),
            json!({"username": "alice", "plugins": {"key-auth": {"key": CONSUMER_KEY}}}),
            201,
        ),
        (
            "PUT",
            "upstreams/mtls".into(),
            json!({"scheme": "https", "nodes": nodes, "tls": {"client_cert": client.cert_pem(), "client_key": client.key_pem()}}),
            201,
        ),
        (
            "PUT",
            "routes/r1".into(),
            json!({"uri": "/r1", "upstream": {"scheme": "https", "nodes": nodes, "tls": {"client_cert": client.cert_pem(), "client_key": client.key_pem()}}}),
            201,
        ),
        (
            "PATCH",
            "consumers/alice".into(),
            json!({"desc": "patched"}),
            200,
        ),
    ];
    for (m, p, b, want) in &writes_ok {
        let (s, v) = call(&mut admin, m, p, Some(b.clone()));
        assert_eq!(s, *want, "{m} {p}: {v}");
    }
    // Writes that fail validation, each near a secret: the messages must not quote it.
    let writes_bad: Vec<(&str, String, Value)> = vec![
        // A key that does not match its certificate.
        (
            "PUT",
            "certificates/c2".into(),
            json!({"cert": server.cert_pem(), "key": other.key_pem()}),
        ),
        // A key that is not PEM (the text is the secret).
        (
            "PATCH",
            "certificates/c1".into(),
            json!({"key": CONSUMER_KEY}),
        ),
        // The consumer key where a number is expected, and a second consumer with alice's key.
        (
            "PATCH",
            "consumers/alice".into(),
            json!({"plugins": {"key-auth": {"key": CONSUMER_KEY, "header": 7}}}),
        ),
        (
            "PUT",
            "consumers/bob".into(),
            json!({"plugins": {"key-auth": {"key": CONSUMER_KEY}}}),
        ),
        // A client key without its certificate, and one of the wrong type.
        (
            "PUT",
            "upstreams/bad".into(),
            json!({"nodes": nodes, "tls": {"client_key": client.key_pem()}}),
        ),
        (
            "PATCH",
            "upstreams/mtls".into(),
            json!({"tls": {"client_key": [CONSUMER_KEY]}}),
        ),
        // A member path through a secret.
        ("PATCH", "upstreams/mtls/tls/client_key".into(), json!(12)),
    ];
    for (m, p, b) in &writes_bad {
        let (s, v) = call(&mut admin, m, p, Some(b.clone()));
        assert!((400..500).contains(&s), "{m} {p}: {s} {v}");
    }
    // Keys presented wrongly (one of them another secret): 401, and not logged.
    let mut wrong = AdminClient::new(g.admin, CONSUMER_KEY);
    let (s, _) = wrong.delete("routes/r1");
    assert_eq!(s, 401);
    let mut none = AdminClient::without_key(g.admin);
    let (s, _) = none.put("routes/r9", &json!({"uri": "/x", "upstream_id": "mtls"}));
    assert_eq!(s, 401);

    // Every read: each resource, each collection.
    for p in [
        "certificates/c1",
        "certificates",
        "consumers/alice",
        "consumers",
        "upstreams/mtls",
        "upstreams",
        "routes/r1",
        "routes",
        "services",
        "ca_certificates",
    ] {
        let (s, v) = call(&mut admin, "GET", p, None);
        assert_eq!(s, 200, "GET {p}: {v}");
    }
    let (_, c1) = admin.get("certificates/c1");
    assert_eq!(c1["value"]["key"], "******");
    let (_, alice) = admin.get("consumers/alice");
    assert_eq!(alice["value"]["plugins"]["key-auth"]["key"], "******");
    let (_, up) = admin.get("upstreams/mtls");
    assert_eq!(up["value"]["tls"]["client_key"], "******");
    let (_, r1) = admin.get("routes/r1");
    assert_eq!(r1["value"]["upstream"]["tls"]["client_key"], "******");

    // etcd gone: the errors of reads and writes do not carry the password either.
    etcd.stop();
    let (s, v) = call(
        &mut admin,
        "PUT",
        "upstreams/late",
        Some(json!({"nodes": nodes})),
    );
    assert!(s >= 400, "write with etcd down: {s} {v}");
    std::thread::sleep(Duration::from_millis(500));

    for (what, s, v) in &answers {
        assert_no_secret(&format!("{what} ({s})"), &v.to_string(), &secrets);
    }
    let log = g.weir.log();
    assert_no_secret("the log", &log, &secrets);

    // One audit line per write, refused or not, with peer, method, path, key and status;
    // no line for a read.
    let audit = audit_lines(&log);
    let writes = writes_ok.len() + writes_bad.len() + 2 + 1;
    assert_eq!(audit.len(), writes, "audit lines:\n{}", audit.join("\n"));
    for l in &audit {
        assert!(l.contains(" INFO "), "{l}");
        assert!(l.contains("peer=127.0.0.1:"), "{l}");
        assert!(!l.contains("GET"), "{l}");
    }
    let has = |needle: &str| audit.iter().any(|l| l.contains(needle));
    for needle in [
        "method=PUT path=/apisix/admin/certificates/c1 key=/apisix/certificates/c1 status=201",
        "method=PUT path=/apisix/admin/consumers key=/apisix/consumers/alice status=201",
        "method=PATCH path=/apisix/admin/consumers/alice key=/apisix/consumers/alice status=200",
        "method=PUT path=/apisix/admin/certificates/c2 key=- status=400",
        "method=DELETE path=/apisix/admin/routes/r1 key=- status=401",
        "method=PUT path=/apisix/admin/routes/r9 key=- status=401",
    ] {
        assert!(
            has(needle),
            "no audit line with {needle:?}:\n{}",
            audit.join("\n")
        );
    }
    let _ = std::fs::remove_dir_all(&g.dir);
}
