//! The etcd client layer (`weir_store::etcd::client`) against a real etcd server
//! (`weir_testkit::Etcd`, `/usr/bin/etcd`): paged listing at one revision, watches (events in
//! order, compaction, the end of a watch when etcd goes away), connection failures, user and
//! password authentication, TLS with a client certificate.
//!
//! Every wait is bounded: `tokio::time::timeout(HANG_GUARD, ..)` only turns a hang into a
//! failure, it asserts nothing about speed.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use weir_config::{EtcdSource, EtcdTls, Secret};
use weir_store::etcd::client::{EtcdConn, EtcdError, Event, Kv, Watch, WatchItem};
use weir_testkit::pki::TestCa;
use weir_testkit::Etcd;

/// The bound of anything that should end but might hang if the code under test is wrong.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// The request timeout of the configurations (generous: other suites load the machine).
const TIMEOUT: Duration = Duration::from_secs(10);

fn source(endpoint: &str) -> EtcdSource {
    EtcdSource {
        endpoints: vec![endpoint.to_owned()],
        prefix: "/weir".to_owned(),
        timeout: TIMEOUT,
        user: None,
        password: None,
        tls: None,
    }
}

async fn connect(cfg: &EtcdSource) -> Result<EtcdConn, EtcdError> {
    tokio::time::timeout(HANG_GUARD, EtcdConn::connect(cfg, &cfg.endpoints[0]))
        .await
        .expect("connect hangs")
}

async fn conn(etcd: &Etcd) -> EtcdConn {
    connect(&source(&etcd.endpoint()))
        .await
        .expect("connect to etcd")
}

/// The next watch item, failing the test on a hang.
async fn next(w: &mut Watch) -> Result<WatchItem, EtcdError> {
    tokio::time::timeout(HANG_GUARD, w.next())
        .await
        .expect("watch next hangs")
}

/// Events until there are `n`, checking each batch's revision is its last event's.
async fn events(w: &mut Watch, n: usize) -> Vec<Event> {
    let mut out = Vec::new();
    while out.len() < n {
        match next(w).await.expect("watch item") {
            WatchItem::Batch { revision, events } => {
                let last = match events.last().expect("a batch has events") {
                    Event::Put(kv) => kv.mod_revision,
                    Event::Delete { mod_revision, .. } => *mod_revision,
                };
                assert_eq!(revision, last, "batch revision is its last event's");
                out.extend(events);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

fn put_event(key: &str, value: &str, mod_revision: i64) -> Event {
    Event::Put(Kv {
        key: key.to_owned(),
        value: value.as_bytes().to_vec(),
        mod_revision,
    })
}

/// A temp dir removed on drop (the TLS files of a configuration).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "weir-store-etcd-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write file");
        path.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_reads_every_page_at_the_first_pages_revision() {
    let etcd = Etcd::start();
    let mut c = conn(&etcd).await;
    for i in 0..250 {
        c.put(&format!("/weir/routes/{i:03}"), format!("v{i}").as_bytes())
            .await
            .expect("put");
    }
    // Outside the prefix range, on both sides.
    c.put("/weir", b"no").await.expect("put");
    c.put("/weir0", b"no").await.expect("put");
    let before = c.put("/weiq/x", b"no").await.expect("put");

    let listing = c.list("/weir/", 100).await.expect("list");
    assert_eq!(listing.revision, before);
    assert_eq!(listing.kvs.len(), 250);
    for (i, kv) in listing.kvs.iter().enumerate() {
        assert_eq!(kv.key, format!("/weir/routes/{i:03}"));
        assert_eq!(kv.value, format!("v{i}").into_bytes());
        assert!(kv.mod_revision > 0 && kv.mod_revision <= listing.revision);
    }

    // Writes between pages — a new key in a later page, a change and a deletion of keys in
    // later pages — are not in the listing: later pages are read at the first one's revision.
    let mut calls = Vec::new();
    let listing = c
        .list_with("/weir/", 100, |n| {
            calls.push(n);
            let etcd = &etcd;
            async move {
                if n == 100 {
                    etcd.put("/weir/routes/150a", "new").await;
                    etcd.put("/weir/routes/200", "changed").await;
                    etcd.delete("/weir/routes/249").await;
                }
            }
        })
        .await
        .expect("list");
    assert_eq!(calls, vec![100, 200]);
    assert_eq!(listing.revision, before);
    assert_eq!(listing.kvs.len(), 250);
    assert!(listing.kvs.iter().all(|kv| kv.key != "/weir/routes/150a"));
    assert_eq!(listing.kvs[200].value, b"v200".to_vec());
    assert_eq!(listing.kvs[249].key, "/weir/routes/249");

    // A fresh listing sees them; one page of everything too.
    let now = c.list("/weir/", 0).await.expect("list");
    assert_eq!(now.revision, before + 3);
    assert_eq!(now.kvs.len(), 250);
    assert!(now.kvs.iter().any(|kv| kv.key == "/weir/routes/150a"));
    // An empty range.
    let none = c.list("/nothing/", 100).await.expect("list");
    assert_eq!((none.revision, none.kvs.len()), (before + 3, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_puts_and_deletes_in_order() {
    let etcd = Etcd::start();
    let mut c = conn(&etcd).await;
    c.put("/weir/routes/1", b"a").await.expect("put");
    let listing = c.list("/weir/", 100).await.expect("list");

    // Written after the listing but before the watch: the watch from revision + 1 sees it.
    let r1 = etcd.put("/weir/routes/2", "b").await;
    let mut w = c
        .watch("/weir/", listing.revision + 1)
        .await
        .expect("watch");
    let r2 = etcd.put("/weir/routes/1", "a2").await;
    etcd.put("/weirx/outside", "x").await;
    let r3 = etcd.delete("/weir/routes/2").await;
    let r4 = c.put("/weir/upstreams/1", b"u").await.expect("put");
    let r5 = c.delete("/weir/routes/1").await.expect("delete");

    let got = events(&mut w, 5).await;
    assert_eq!(
        got,
        vec![
            put_event("/weir/routes/2", "b", r1),
            put_event("/weir/routes/1", "a2", r2),
            Event::Delete {
                key: "/weir/routes/2".to_owned(),
                mod_revision: r3,
            },
            put_event("/weir/upstreams/1", "u", r4),
            Event::Delete {
                key: "/weir/routes/1".to_owned(),
                mod_revision: r5,
            },
        ]
    );
    // Deleting a missing key writes nothing: the revision stays.
    assert_eq!(c.delete("/weir/missing").await.expect("delete"), r5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_revision_reports_the_compaction() {
    let etcd = Etcd::start();
    let mut c = conn(&etcd).await;
    let first = c.put("/weir/routes/1", b"a").await.expect("put");
    for i in 0..5 {
        c.put("/weir/routes/1", format!("{i}").as_bytes())
            .await
            .expect("put");
    }
    let compacted = etcd.compact().await;
    assert!(compacted > first);

    let mut w = c.watch("/weir/", first).await.expect("watch");
    assert_eq!(
        next(&mut w).await.expect("watch item"),
        WatchItem::Compacted {
            compact_revision: compacted
        }
    );
    // The watch is over.
    let err = next(&mut w).await.expect_err("ended");
    assert!(err.to_string().contains("ended"), "{err}");

    // From the compaction revision itself it works: the last write before it, then new ones.
    let mut w = c.watch("/weir/", compacted).await.expect("watch");
    let r = c.put("/weir/routes/2", b"b").await.expect("put");
    assert_eq!(
        events(&mut w, 2).await,
        vec![
            put_event("/weir/routes/1", "4", compacted),
            put_event("/weir/routes/2", "b", r)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_stopped_etcd_fails() {
    let mut etcd = Etcd::start();
    etcd.put("/weir/routes/1", "kept").await;
    etcd.stop();
    assert!(!etcd.is_running());

    let mut cfg = source(&etcd.endpoint());
    cfg.timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = connect(&cfg).await.expect_err("nothing listens");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("etcd {}: connect: ", etcd.endpoint())),
        "{text}"
    );
    assert!(
        started.elapsed() < HANG_GUARD,
        "connect took {:?}",
        started.elapsed()
    );

    // Same ports, same data.
    etcd.restart();
    assert!(etcd.is_running());
    let mut c = conn(&etcd).await;
    let listing = c.list("/weir/", 10).await.expect("list");
    assert_eq!(listing.kvs.len(), 1);
    assert_eq!(listing.kvs[0].value, b"kept".to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_ends_with_an_error_when_etcd_stops() {
    let mut etcd = Etcd::start();
    let mut c = conn(&etcd).await;
    let mut w = c.watch("/weir/", 0).await.expect("watch");
    let r = etcd.put("/weir/routes/1", "a").await;
    assert_eq!(
        events(&mut w, 1).await,
        vec![put_event("/weir/routes/1", "a", r)]
    );

    etcd.stop();
    let err = next(&mut w).await.expect_err("etcd is gone");
    assert!(
        err.to_string()
            .starts_with(&format!("etcd {}: watch /weir/", etcd.endpoint())),
        "{err}"
    );
    // And stays ended.
    next(&mut w).await.expect_err("ended");

    // A request on the old connection fails too (bounded by the timeout), and a new
    // connection after the restart works.
    c.put("/weir/routes/2", b"b")
        .await
        .expect_err("etcd is gone");
    etcd.restart();
    let mut c = conn(&etcd).await;
    assert_eq!(c.list("/weir/", 10).await.expect("list").kvs.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_password() {
    let etcd = Etcd::start();
    etcd.put("/weir/routes/1", "a").await;
    etcd.enable_auth("weir", "s3cret-Pw").await;

    let mut cfg = source(&etcd.endpoint());
    cfg.user = Some("weir".to_owned());
    cfg.password = Some(Secret::new("s3cret-Pw"));
    let mut c = connect(&cfg).await.expect("connect with the password");
    let r = c.put("/weir/routes/2", b"b").await.expect("put");
    let listing = c.list("/weir/", 1).await.expect("list");
    assert_eq!(listing.revision, r);
    assert_eq!(listing.kvs.len(), 2);
    let mut w = c.watch("/weir/", r).await.expect("watch");
    assert_eq!(
        events(&mut w, 1).await,
        vec![put_event("/weir/routes/2", "b", r)]
    );
    assert_eq!(etcd.get("/weir/routes/2").await.as_deref(), Some("b"));

    // A wrong password: refused, and the error does not show it.
    cfg.password = Some(Secret::new("Wr0ng-pw-xyz"));
    let err = connect(&cfg).await.expect_err("wrong password");
    let (text, debug) = (err.to_string(), format!("{err:?}"));
    assert!(
        text.starts_with(&format!("etcd {}: connect: ", etcd.endpoint())),
        "{text}"
    );
    assert!(text.contains("authentication failed"), "{text}");
    assert!(!text.contains("Wr0ng-pw-xyz") && !debug.contains("Wr0ng-pw-xyz"));

    // No user at all: connecting works (nothing needs a user) but reading is refused.
    let mut anonymous = conn(&etcd).await;
    let err = anonymous.list("/weir/", 10).await.expect_err("no user");
    assert!(
        err.to_string()
            .starts_with(&format!("etcd {}: range /weir/: ", etcd.endpoint())),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    let ca = TestCa::new("weir test etcd CA");
    let etcd = Etcd::start_tls(&ca, true);
    assert!(etcd.endpoint().starts_with("https://127.0.0.1:"));
    let client = ca.issue("weir", &[], &[], true);
    let files = TempDir::new("tls");
    let tls = EtcdTls {
        ca_file: Some(files.write("ca.pem", &ca.cert_pem())),
        cert_file: Some(files.write("client.pem", &client.cert_pem())),
        key_file: Some(files.write("client-key.pem", &client.key_pem())),
        verify: true,
    };
    let mut cfg = source(&etcd.endpoint());
    cfg.tls = Some(tls.clone());

    let mut c = connect(&cfg).await.expect("connect over TLS");
    let r = c.put("/weir/routes/1", b"a").await.expect("put");
    let mut w = c.watch("/weir/", r).await.expect("watch");
    assert_eq!(
        events(&mut w, 1).await,
        vec![put_event("/weir/routes/1", "a", r)]
    );
    let listing = c.list("/weir/", 10).await.expect("list");
    assert_eq!((listing.revision, listing.kvs.len()), (r, 1));
    assert_eq!(etcd.get("/weir/routes/1").await.as_deref(), Some("a"));

    // Without a client certificate etcd refuses the handshake.
    cfg.tls = Some(EtcdTls {
        cert_file: None,
        key_file: None,
        ..tls.clone()
    });
    connect(&cfg).await.expect_err("no client certificate");

    // A CA that did not sign etcd's certificate: verification fails...
    let other = TestCa::new("another CA");
    cfg.tls = Some(EtcdTls {
        ca_file: Some(files.write("other-ca.pem", &other.cert_pem())),
        ..tls.clone()
    });
    let err = connect(&cfg).await.expect_err("untrusted server");
    assert!(
        err.to_string()
            .starts_with(&format!("etcd {}: connect: ", etcd.endpoint())),
        "{err}"
    );
    // ...unless verification is off.
    cfg.tls = Some(EtcdTls {
        verify: false,
        ..cfg.tls.clone().expect("tls")
    });
    let mut c = connect(&cfg).await.expect("connect without verification");
    assert_eq!(c.list("/weir/", 10).await.expect("list").kvs.len(), 1);

    // A missing file is an error naming it.
    cfg.tls = Some(EtcdTls {
        ca_file: Some("/nonexistent/ca.pem".to_owned()),
        ..tls
    });
    let err = connect(&cfg).await.expect_err("missing file");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}
