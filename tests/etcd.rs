//! The etcd source with the real `weir` binary and a real etcd: what loads at start-up (and
//! what is skipped), watch updates, Admin API writes stored in etcd and served by every
//! instance on it, etcd down at start, and a connection loss that keeps the configuration.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use weir_testkit::{
    reserve_port, wait_for, AdminClient, Backend, Etcd, PortReservation, RequestStream, WeirProcess,
};

const KEY: &str = "etcd-test-admin-key";
/// Generous: another suite may load the machine. Nothing here asserts a duration.
const PATIENCE: Duration = Duration::from_secs(15);
/// After etcd comes back: the source's reconnect backoff (at most 30 s) plus patience.
const RECONNECT: Duration = Duration::from_secs(60);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One `weir` instance reading etcd, with its Admin API.
struct Instance {
    weir: WeirProcess,
    admin: std::net::SocketAddr,
    _ports: (PortReservation, PortReservation),
}

impl Instance {
    fn start(name: &str, endpoints: &[String]) -> Instance {
        let d = std::env::temp_dir().join(format!("weir-etcd-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("mkdir");
        let (p, a) = (reserve_port(), reserve_port());
        let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        let conf = d.join("weir.yaml");
        std::fs::write(
            &conf,
            format!(
                "server:\n  listen: [\"127.0.0.1:{}\"]\n  threads: 1\n  pid_file: {d}/weir.pid\n  upgrade_sock: {d}/weir.sock\n\
admin:\n  listen: \"127.0.0.1:{}\"\n  api_key: {KEY}\n\
config_source:\n  etcd:\n    endpoints: [{}]\n    prefix: /weir\n    timeout: 2\n",
                p.port,
                a.port,
                eps.join(", "),
                d = d.display()
            ),
        )
        .expect("write conf");
        let weir = WeirProcess::start(env!("CARGO_BIN_EXE_weir"), &conf, p.port);
        let admin = ([127, 0, 0, 1], a.port).into();
        assert!(
            wait_for(PATIENCE, || std::net::TcpStream::connect(admin).ok()).is_some(),
            "admin API did not listen:\n{}",
            weir.log()
        );
        Instance {
            weir,
            admin,
            _ports: (p, a),
        }
    }

    fn admin(&self) -> AdminClient {
        AdminClient::new(self.admin, KEY)
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.weir.get_path(path)
    }

    fn serves(&self, path: &str, status: u16, body: &str) -> bool {
        self.serves_within(PATIENCE, path, status, body)
    }

    fn serves_within(&self, patience: Duration, path: &str, status: u16, body: &str) -> bool {
        wait_for(patience, || {
            (self.get(path) == (status, body.to_owned())).then_some(())
        })
        .is_some()
    }

    fn logged(&self, text: &str) -> bool {
        wait_for(PATIENCE, || self.weir.log().contains(text).then_some(())).is_some()
    }
}

fn put(etcd: &Etcd, key: &str, v: &Value) {
    rt().block_on(etcd.put(key, &v.to_string()));
}

fn node(b: &Backend) -> Value {
    json!({ b.addr.to_string(): 1 })
}

#[test]
fn loads_what_is_valid_skips_the_rest_and_follows_the_watch() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let etcd = Etcd::start();
    put(&etcd, "/weir/upstreams/u", &json!({"nodes": node(&a)}));
    put(
        &etcd,
        "/weir/routes/r",
        &json!({"id": "r", "uri": "/a", "upstream_id": "u"}),
    );
    put(
        &etcd,
        "/weir/routes/bad",
        &json!({"uri": 7, "upstream_id": "u"}),
    );
    put(
        &etcd,
        "/weir/upstreams/broken",
        &json!({"nodes": {"127.0.0.1:0": 1}}),
    );
    put(
        &etcd,
        "/weir/routes/dep",
        &json!({"uri": "/dep", "upstream_id": "broken"}),
    );
    put(
        &etcd,
        "/weir/routes/other",
        &json!({"id": "not-other", "uri": "/other", "upstream_id": "u"}),
    );
    rt().block_on(etcd.put("/weir/routes/notjson", "{\"uri\": "));
    rt().block_on(etcd.put("/weir/plugins/x", "{}"));

    let w = Instance::start("load", &[etcd.endpoint()]);
    assert!(w.serves("/a", 200, "a"), "{}", w.weir.log());
    // A value stored without its id reads with the key's.
    let (s, v) = w.admin().get("upstreams/u");
    assert_eq!((s, &v["value"]["id"]), (200, &json!("u")), "{v}");
    assert_eq!(w.get("/dep").0, 404);
    assert_eq!(w.get("/other").0, 404);
    for line in [
        "etcd key /weir/routes/bad: uri: must be a string",
        "etcd key /weir/upstreams/broken: nodes[\"127.0.0.1:0\"]",
        "etcd key /weir/routes/dep: upstream_id: unknown upstream \"broken\"; skipped",
        "etcd key /weir/routes/other: id: must equal the id it is stored under (\"other\"), got \"not-other\"",
        "etcd key /weir/routes/notjson: invalid JSON",
        "etcd key /weir/plugins/x: unknown kind \"plugins\"",
    ] {
        assert!(w.logged(line), "no {line:?} in:\n{}", w.weir.log());
    }

    // The watch: a new route, a changed upstream, a deletion.
    put(
        &etcd,
        "/weir/routes/r2",
        &json!({"uri": "/b", "upstream_id": "u"}),
    );
    assert!(w.serves("/b", 200, "a"));
    put(&etcd, "/weir/upstreams/u", &json!({"nodes": node(&b)}));
    assert!(w.serves("/a", 200, "b"));
    rt().block_on(etcd.delete("/weir/routes/r2"));
    assert!(wait_for(PATIENCE, || (w.get("/b").0 == 404).then_some(())).is_some());

    // An invalid new value keeps the previous one; a deletion something depends on is undone.
    put(
        &etcd,
        "/weir/upstreams/u",
        &json!({"nodes": node(&a), "retires": 1}),
    );
    assert!(
        w.logged("etcd key /weir/upstreams/u: retires: unknown field; it keeps its previous value")
    );
    assert_eq!(w.get("/a"), (200, "b".into()));
    rt().block_on(etcd.delete("/weir/upstreams/u"));
    assert!(w.logged("etcd key /weir/upstreams/u: routes"));
    assert_eq!(w.get("/a"), (200, "b".into()));
    // Fixing a skipped key brings it in.
    put(
        &etcd,
        "/weir/routes/bad",
        &json!({"uri": "/fixed", "upstream_id": "u"}),
    );
    assert!(w.serves("/fixed", 200, "b"));
}

#[test]
fn admin_writes_are_stored_in_etcd_and_served_by_every_instance() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let etcd = Etcd::start();
    let one = Instance::start("fleet-1", &[etcd.endpoint()]);
    let two = Instance::start("fleet-2", &[etcd.endpoint()]);
    let (mut admin1, mut admin2) = (one.admin(), two.admin());

    let (s, v) = admin1.put("upstreams/u", &json!({"nodes": node(&a)}));
    assert_eq!(s, 201, "{v}");
    // The second instance validates against what its watch has applied: wait for it.
    assert!(wait_for(PATIENCE, || (admin2.get("upstreams/u").0 == 200)
        .then_some(()))
    .is_some());
    let (s, v) = admin2.put("routes/r", &json!({"uri": "/*", "upstream_id": "u"}));
    assert_eq!(s, 201, "{v}");
    // Stored as the resource's JSON under <prefix>/<kind>/<id>.
    let stored: Value =
        serde_json::from_str(&rt().block_on(etcd.get("/weir/routes/r")).expect("key"))
            .expect("JSON");
    assert_eq!((&stored["id"], &stored["uri"]), (&json!("r"), &json!("/*")));
    // A write answers once it is live on the instance that took it.
    assert_eq!(two.get("/"), (200, "a".into()));
    assert!(one.serves("/", 200, "a"), "{}", one.weir.log());
    // Either instance sees the other's writes in its reads, and refuses what breaks them.
    let (s, v) = admin1.get("routes/r");
    assert_eq!((s, &v["value"]["uri"]), (200, &json!("/*")));
    let (s, v) = admin2.delete("upstreams/u");
    assert_eq!(s, 400, "{v}");

    // Propagation: 100 writes alternating between the instances; each is timed from the
    // request to the moment the other instance serves it.
    let (mut took, mut answered) = (Vec::new(), Vec::new());
    for i in 0..100 {
        let (writer, reader) = if i % 2 == 0 {
            (&mut admin1, &two)
        } else {
            (&mut admin2, &one)
        };
        let (target, other) = if i % 2 == 0 { (&b, &a) } else { (&a, &b) };
        // Exactly one node at a time, so the other instance's answer shows this write.
        let nodes = json!({ target.addr.to_string(): 1, other.addr.to_string(): null });
        let start = Instant::now();
        let (s, v) = writer.patch("upstreams/u", &json!({ "nodes": nodes }));
        assert_eq!(s, 200, "{v}");
        answered.push(start.elapsed());
        let want = if i % 2 == 0 { "b" } else { "a" };
        let seen = wait_for(PATIENCE, || (reader.get("/").1 == want).then_some(()));
        assert!(seen.is_some(), "write {i} not served by the other instance");
        assert_eq!(v["value"]["nodes"], node(target), "write {i}");
        took.push(start.elapsed());
    }
    took.sort();
    answered.sort();
    eprintln!(
        "propagation over 100 writes: served by the other instance p50 {:?}, max {:?}; \
         Admin API answer (live on the writing instance) p50 {:?}, max {:?}",
        took[49], took[99], answered[49], answered[99]
    );
}

#[test]
fn etcd_down_at_start_serves_nothing_then_catches_up() {
    let a = Backend::start("a");
    let mut etcd = Etcd::start();
    put(&etcd, "/weir/upstreams/u", &json!({"nodes": node(&a)}));
    put(
        &etcd,
        "/weir/routes/r",
        &json!({"uri": "/*", "upstream_id": "u"}),
    );
    etcd.stop();
    // The first endpoint refuses: the source cycles to the next one.
    let refused = Backend::refused();
    let w = Instance::start(
        "down",
        &[format!("http://{}", refused.addr()), etcd.endpoint()],
    );
    assert_eq!(w.get("/").0, 404);
    assert!(w.logged("serving an empty configuration until etcd answers"));
    // Writes need etcd.
    let (s, v) = w.admin().put("upstreams/x", &json!({"nodes": node(&a)}));
    assert_eq!(s, 503, "{v}");
    etcd.restart();
    assert!(
        w.serves_within(RECONNECT, "/", 200, "a"),
        "{}",
        w.weir.log()
    );
    // SIGHUP is harmless with etcd (resources are always live).
    w.weir.signal("-HUP");
    assert!(w.logged("SIGHUP: resources come from etcd"));
    assert_eq!(w.get("/"), (200, "a".into()));
}

#[test]
fn a_lost_connection_keeps_the_configuration_and_resumes() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let mut etcd = Etcd::start();
    put(&etcd, "/weir/upstreams/u", &json!({"nodes": node(&a)}));
    put(
        &etcd,
        "/weir/routes/r",
        &json!({"uri": "/*", "upstream_id": "u"}),
    );
    let w = Instance::start("loss", &[etcd.endpoint()]);
    assert!(w.serves("/", 200, "a"));
    etcd.stop();
    assert!(
        w.logged("keeping the last good configuration"),
        "{}",
        w.weir.log()
    );
    for _ in 0..20 {
        assert_eq!(w.get("/"), (200, "a".into()));
    }
    etcd.restart();
    put(&etcd, "/weir/upstreams/u", &json!({"nodes": node(&b)}));
    assert!(
        w.serves_within(RECONNECT, "/", 200, "b"),
        "{}",
        w.weir.log()
    );
}

#[test]
fn watch_updates_keep_the_round_robin_cycle_of_unchanged_upstreams() {
    let bs: Vec<Backend> = ["a", "b", "c"].iter().map(|n| Backend::start(n)).collect();
    let etcd = Etcd::start();
    let mut nodes = serde_json::Map::new();
    for b in &bs {
        nodes.insert(b.addr.to_string(), json!(1));
    }
    put(&etcd, "/weir/upstreams/u", &json!({"nodes": nodes}));
    put(
        &etcd,
        "/weir/routes/r",
        &json!({"uri": "/*", "upstream_id": "u"}),
    );
    let w = Instance::start("cycle", &[etcd.endpoint()]);
    assert!(wait_for(PATIENCE, || (w.get("/").0 == 200).then_some(())).is_some());
    let mut admin = w.admin();
    // As with the file: a change elsewhere does not restart the cycle.
    let mut seen = vec![w.get("/").1];
    for i in 0..2 {
        let (s, v) = admin.put(
            &format!("routes/other{i}"),
            &json!({"uri": format!("/o{i}"), "upstream_id": "u"}),
        );
        assert_eq!(s, 201, "{v}");
        seen.push(w.get("/").1);
    }
    seen.sort();
    assert_eq!(seen, ["a", "b", "c"]);
}

#[test]
fn no_request_fails_while_100_writes_land_through_etcd() {
    let backends: Vec<Backend> = (0..4).map(|i| Backend::start(&format!("n{i}"))).collect();
    let etcd = Etcd::start();
    put(
        &etcd,
        "/weir/upstreams/u",
        &json!({"nodes": node(&backends[0])}),
    );
    put(
        &etcd,
        "/weir/routes/r",
        &json!({"uri": "/*", "upstream_id": "u"}),
    );
    let one = Instance::start("steady-1", &[etcd.endpoint()]);
    let two = Instance::start("steady-2", &[etcd.endpoint()]);
    assert!(one.serves("/", 200, "n0") && two.serves("/", 200, "n0"));
    // Requests to both instances; writes through one of them.
    let streams =
        [&one, &two].map(|w| RequestStream::start(([127, 0, 0, 1], w.weir.port).into(), "/", None));
    let mut admin = one.admin();
    for s in &streams {
        s.more(20);
    }
    for i in 0..100 {
        admin.mixed_write(i, &backends);
    }
    for s in streams {
        s.more(20);
        s.finish_clean();
    }
}
