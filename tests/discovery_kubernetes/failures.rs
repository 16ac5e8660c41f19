//! The registry failing under steady traffic: 500, hangs, garbage, a broken watch stream, a
//! stopped server, a token the server no longer accepts. Zero failed requests throughout, and
//! the changes made meanwhile are applied once the registry answers again.

use super::support::*;
use serde_json::Value;
use weir_testkit::fake_kubernetes::{Failure, FakeKubernetes};
use weir_testkit::{wait_for, Backend, TestProxy};

#[test]
fn a_rotated_token_file_is_read_for_every_request() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let k = FakeKubernetes::start("one");
    let token = TokenFile::new("one");
    k.put_endpoints("shop", "cart", named("http", &[&a]));
    let p = TestProxy::start(config(
        cluster(&k, &token, none()),
        &[("/*", "shop/cart:http")],
    ));
    wait_serves(&p, "/", &["a"]);
    let auth = |r: &weir_testkit::fake_kubernetes::Request| r.headers.get("authorization").cloned();
    assert!(k
        .requests()
        .iter()
        .all(|r| auth(r).as_deref() == Some("Bearer one")));
    // Rotation: the server accepts only the new token, the file has it; the next request
    // (the watch after this one ends) uses it.
    assert!(wait_for(WAIT, || (k.open_watches() == 1).then_some(())).is_some());
    let before = k.requests().len();
    token.write("two");
    k.set_token("two");
    k.close_watches();
    k.put_endpoints("shop", "cart", named("http", &[&b]));
    wait_serves(&p, "/", &["b"]);
    let after = k.requests();
    assert!(after.len() > before);
    assert!(
        after[before..]
            .iter()
            .all(|r| auth(r).as_deref() == Some("Bearer two")),
        "{:?}",
        &after[before..]
    );
    assert_eq!(dump(&p)["last_error"], Value::Null);
    // The server moves to a token the file does not have yet: 401, the nodes stay.
    let steady = steady(&p, "/");
    k.set_token("three");
    k.close_watches();
    wait_error(&p, "HTTP 401");
    k.put_endpoints("shop", "cart", named("http", &[&c]));
    token.write("three");
    wait_serves(&p, "/", &["c"]);
    finish(steady);
    assert!(!dump(&p).to_string().contains("three"));
}

/// Steady traffic while the registry fails with `fail`, then recovery: a change made during
/// the failure is applied once the registry is back.
fn survives(
    fail: impl FnOnce(&FakeKubernetes),
    error: &str,
    restore: impl FnOnce(&FakeKubernetes),
) {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let k = FakeKubernetes::start("t");
    let token = TokenFile::new("t");
    k.put_endpoints("shop", "cart", named("http", &[&a]));
    let p = TestProxy::start(config(
        cluster(&k, &token, none()),
        &[("/*", "shop/cart:http")],
    ));
    wait_serves(&p, "/", &["a"]);
    let steady = steady(&p, "/");
    fail(&k);
    let e = wait_error(&p, error);
    assert!(!e.contains("Bearer"), "{e}");
    k.put_endpoints("shop", "cart", named("http", &[&a, &b]));
    assert!(bodies(&p, "/", 10).expect("200s").iter().all(|b| b == "a"));
    restore(&k);
    wait_serves(&p, "/", &["a", "b"]);
    let ok = finish(steady);
    assert!(ok > 10, "{ok} requests");
    let cleared = wait_for(WAIT, || dump(&p)["last_error"].is_null().then_some(()));
    assert!(
        cleared.is_some(),
        "last_error stays after recovery: {}",
        dump(&p)
    );
}

#[test]
fn registry_answering_500_keeps_the_last_nodes() {
    survives(
        |k| k.set_failure(Failure::Status(500)),
        "HTTP 500",
        |k| k.set_failure(Failure::None),
    );
}

#[test]
fn registry_that_hangs_keeps_the_last_nodes() {
    survives(
        |k| k.set_failure(Failure::Hang),
        "no answer within",
        |k| k.set_failure(Failure::None),
    );
}

#[test]
fn registry_answering_garbage_keeps_the_last_nodes() {
    survives(
        |k| k.set_failure(Failure::Garbage),
        "not JSON",
        |k| k.set_failure(Failure::None),
    );
}

#[test]
fn a_broken_watch_stream_relists_and_keeps_the_nodes() {
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
    let steady = steady(&p, "/");
    // A line that is not JSON inside a healthy stream: the registry lists again (after its
    // backoff delay) and goes on.
    k.garbage_in_watches();
    assert!(
        wait_for(WAIT, || (k.lists() == 2).then_some(())).is_some(),
        "no relist"
    );
    k.put_endpoints("shop", "cart", named("http", &[&a, &b]));
    wait_serves(&p, "/", &["a", "b"]);
    finish(steady);
}

#[test]
fn registry_stopped_and_restarted_keeps_the_last_nodes() {
    survives(|k| k.stop(), "kubernetes: ", |k| k.restart());
}
