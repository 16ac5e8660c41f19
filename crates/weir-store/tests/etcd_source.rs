//! The etcd source in-process against a real etcd, through a relay the test can cut: a
//! reconnect resumes from the last revision, or re-reads everything when that revision was
//! compacted meanwhile; and etcd authentication.

use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weir_config::{EtcdSource as EtcdConfig, Resources, Secret};
use weir_store::etcd::EtcdSource;
use weir_store::{Backend, Change, Kind, StoreError, Validator};
use weir_testkit::{wait_for, Etcd, TcpRelay};

const PATIENCE: Duration = Duration::from_secs(30);

fn config(endpoint: String) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![endpoint],
        prefix: "/weir".into(),
        timeout: Duration::from_secs(2),
        user: None,
        password: None,
        tls: None,
    }
}

/// A source whose applied sets land in `Latest`, running on `rt` until the returned sender
/// says stop.
type Latest = Arc<Mutex<Option<Resources>>>;

fn run(
    rt: &tokio::runtime::Runtime,
    cfg: EtcdConfig,
) -> (Arc<EtcdSource>, Latest, tokio::sync::watch::Sender<bool>) {
    let latest: Latest = Arc::default();
    let l = Arc::clone(&latest);
    let sink = Arc::new(move |r: &Resources| {
        *l.lock().expect("lock") = Some(r.clone());
    });
    let source = Arc::new(EtcdSource::new(cfg, Validator::new(&json!({})), sink));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let s = Arc::clone(&source);
    rt.spawn(async move { s.run(rx, None).await });
    (source, latest, tx)
}

fn routes(latest: &Latest) -> Vec<String> {
    let l = latest.lock().expect("lock");
    l.as_ref()
        .map(|r| r.routes.iter().map(|r| r.id.as_str().to_owned()).collect())
        .unwrap_or_default()
}

fn has_routes(latest: &Latest, want: &[&str]) -> bool {
    wait_for(PATIENCE, || (routes(latest) == want).then_some(())).is_some()
}

#[test]
fn a_reconnect_re_reads_everything_when_its_revision_was_compacted() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let etcd = Etcd::start();
    rt.block_on(async {
        etcd.put("/weir/upstreams/u", r#"{"nodes": {"127.0.0.1:1": 1}}"#)
            .await;
        etcd.put("/weir/routes/r1", r#"{"uri": "/1", "upstream_id": "u"}"#)
            .await;
    });
    let target = etcd
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let relay = TcpRelay::start(target);
    let (source, latest, stop) = run(&rt, config(relay.url()));
    assert!(has_routes(&latest, &["r1"]));
    assert!(source.reachable());

    relay.cut();
    assert!(wait_for(PATIENCE, || (!source.reachable()).then_some(())).is_some());
    // Meanwhile: changes, and a compaction past the revision the source has seen.
    let seen = source.revision();
    let compacted = rt.block_on(async {
        etcd.put("/weir/routes/r2", r#"{"uri": "/2", "upstream_id": "u"}"#)
            .await;
        etcd.delete("/weir/routes/r1").await;
        etcd.compact().await
    });
    assert!(compacted > seen + 1);
    // Still the last good set while cut off.
    assert_eq!(routes(&latest), ["r1"]);

    relay.restore();
    assert!(has_routes(&latest, &["r2"]), "{:?}", routes(&latest));
    assert!(source.revision() >= compacted);
    assert!(source.reachable());

    // And the watch goes on from the re-read.
    rt.block_on(etcd.put("/weir/routes/r3", r#"{"uri": "/3", "upstream_id": "u"}"#));
    assert!(has_routes(&latest, &["r2", "r3"]));
    let _ = stop.send(true);
}

#[test]
fn a_reconnect_resumes_from_the_last_revision() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let etcd = Etcd::start();
    rt.block_on(etcd.put("/weir/upstreams/u", r#"{"nodes": {"127.0.0.1:1": 1}}"#));
    let target = etcd
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .expect("addr");
    let relay = TcpRelay::start(target);
    let (source, latest, stop) = run(&rt, config(relay.url()));
    assert!(wait_for(PATIENCE, || (source.revision() > 0).then_some(())).is_some());
    relay.cut();
    assert!(wait_for(PATIENCE, || (!source.reachable()).then_some(())).is_some());
    // Two changes while cut off, the second undoing part of the first: a watch resumed from
    // the last revision replays both, in order.
    rt.block_on(async {
        etcd.put("/weir/routes/a", r#"{"uri": "/a", "upstream_id": "u"}"#)
            .await;
        etcd.put("/weir/routes/b", r#"{"uri": "/b", "upstream_id": "u"}"#)
            .await;
        etcd.delete("/weir/routes/a").await;
    });
    relay.restore();
    assert!(has_routes(&latest, &["b"]), "{:?}", routes(&latest));
    let _ = stop.send(true);
}

#[test]
fn user_and_password_authenticate_and_a_wrong_password_reads_nothing() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let etcd = Etcd::start();
    rt.block_on(async {
        etcd.put("/weir/upstreams/u", r#"{"nodes": {"127.0.0.1:1": 1}}"#)
            .await;
        etcd.put("/weir/routes/r", r#"{"uri": "/", "upstream_id": "u"}"#)
            .await;
        etcd.enable_auth("weir", "s3cret-pw").await;
    });
    let mut good = config(etcd.endpoint());
    good.user = Some("weir".into());
    good.password = Some(Secret::new("s3cret-pw"));
    let (_s, latest, stop) = run(&rt, good);
    assert!(has_routes(&latest, &["r"]));
    let _ = stop.send(true);

    let mut bad = config(etcd.endpoint());
    bad.user = Some("weir".into());
    bad.password = Some(Secret::new("wrong"));
    let (source, latest, stop) = run(&rt, bad);
    // It tries, fails, says why without the password, and applies nothing.
    let error = wait_for(PATIENCE, || source.last_error()).expect("a failed attempt");
    assert!(!error.contains("wrong"), "{error}");
    assert!(error.contains("authentication failed"), "{error}");
    assert!(!source.reachable());
    assert!(latest.lock().expect("lock").is_none());
    let _ = stop.send(true);
}

#[test]
fn a_write_validated_against_a_stale_view_is_refused() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let etcd = Etcd::start();
    rt.block_on(etcd.put("/weir/upstreams/u", r#"{"nodes": {"127.0.0.1:1": 1}}"#));
    let (source, _latest, stop) = run(&rt, config(etcd.endpoint()));
    assert!(
        wait_for(PATIENCE, || (source.revision() > 0 && source.reachable())
            .then_some(()))
        .is_some()
    );
    let put = |id: &str, upstream: &str| Change::Put {
        kind: Kind::Routes,
        id: id.into(),
        value: json!({"id": id, "uri": format!("/{id}"), "upstream_id": upstream}),
    };
    // A base read, then someone else writes under the prefix: the write built on the base
    // is refused, nothing is stored.
    let base = rt.block_on(source.base()).expect("base");
    rt.block_on(etcd.put("/weir/upstreams/v", r#"{"nodes": {"127.0.0.1:2": 1}}"#));
    let change = put("r1", "u");
    let result = rt.block_on(source.commit(&base, &change, &change.applied_to(&base.set)));
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    assert_eq!(rt.block_on(etcd.get("/weir/routes/r1")), None);
    // Someone deletes what the write references (a deletion leaves no revision on the key
    // range): refused too.
    assert!(wait_for(PATIENCE, || (source
        .current()
        .get(Kind::Upstreams, "v")
        .is_some())
    .then_some(()))
    .is_some());
    let base = rt.block_on(source.base()).expect("base");
    rt.block_on(etcd.delete("/weir/upstreams/u"));
    let change = put("r2", "u");
    let result = rt.block_on(source.commit(&base, &change, &change.applied_to(&base.set)));
    assert!(matches!(result, Err(StoreError::Conflict(_))), "{result:?}");
    // On a fresh base it goes through (and is live here when commit returns).
    assert!(wait_for(PATIENCE, || (source
        .current()
        .get(Kind::Upstreams, "u")
        .is_none())
    .then_some(()))
    .is_some());
    let base = rt.block_on(source.base()).expect("base");
    let change = put("r3", "v");
    rt.block_on(source.commit(&base, &change, &change.applied_to(&base.set)))
        .expect("written");
    assert!(source.current().get(Kind::Routes, "r3").is_some());
    let _ = stop.send(true);
}
