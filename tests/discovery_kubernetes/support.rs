//! Helpers of the Kubernetes end-to-end tests: token files, configurations, request loops.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use weir_testkit::config::{Conf, Route, Upstream};
use weir_testkit::fake_kubernetes::{subset, FakeKubernetes};
use weir_testkit::{wait_for, Backend, RequestStream, TestProxy};

pub(crate) const LOCAL: &str = "127.0.0.1";
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// A token file of its own, removed at drop.
pub(crate) struct TokenFile(PathBuf);

impl TokenFile {
    pub(crate) fn new(token: &str) -> TokenFile {
        static N: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "weir-k8s-token-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let f = TokenFile(path);
        f.write(token);
        f
    }

    /// Replace the token as the kubelet does: a new file renamed over the old one.
    pub(crate) fn write(&self, token: &str) {
        let tmp = self.0.with_extension("new");
        std::fs::write(&tmp, format!("{token}\n")).expect("write token");
        std::fs::rename(&tmp, &self.0).expect("rename token");
    }

    pub(crate) fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// One cluster's `discovery.kubernetes` entry, with the keys of `extra` (an object).
pub(crate) fn cluster(k: &FakeKubernetes, token: &TokenFile, extra: Value) -> Value {
    let mut c = json!({
        "service": {"schema": "http", "host": k.host(), "port": k.port().to_string()},
        "client": {"token_file": token.path()},
    });
    if let (Some(c), Value::Object(extra)) = (c.as_object_mut(), extra) {
        c.extend(extra);
    }
    c
}

/// No extra keys.
pub(crate) fn none() -> Value {
    json!({})
}

/// A configuration with the control API, `discovery.kubernetes` (one cluster, or a list), and
/// one route per `(path, service_name)`.
pub(crate) fn config(discovery: Value, routes: &[(&str, &str)]) -> Conf {
    let mut c = Conf::new().control().discovery("kubernetes", discovery);
    for (i, (path, service)) in routes.iter().enumerate() {
        c = c.route(
            Route::new(&format!("r{i}"), path)
                .upstream(Upstream::discovered("kubernetes", service)),
        );
    }
    c
}

/// The bodies of `n` requests to `path`, or `None` if one was not a 200.
pub(crate) fn bodies(p: &TestProxy, path: &str, n: usize) -> Option<Vec<String>> {
    let mut c = p.client();
    (0..n)
        .map(|_| c.get(path).ok().filter(|r| r.status == 200).map(|r| r.body))
        .collect()
}

/// Whether `path` is served by exactly the backends `want` (round robin over equal weights
/// reaches each of them in `want.len()` requests); an empty `want` means 503.
pub(crate) fn serves(p: &TestProxy, path: &str, want: &[&str]) -> bool {
    if want.is_empty() {
        let mut c = p.client();
        return c.get(path).map(|r| r.status == 503).unwrap_or(false);
    }
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    bodies(p, path, want.len() * 2)
        .map(|b| b.into_iter().collect::<BTreeSet<_>>() == want)
        .unwrap_or(false)
}

pub(crate) fn wait_serves(p: &TestProxy, path: &str, want: &[&str]) {
    let ok = wait_for(WAIT, || serves(p, path, want).then_some(()));
    assert!(
        ok.is_some(),
        "{path} is not served by {want:?} within {WAIT:?}"
    );
}

/// The registry's control API dump.
pub(crate) fn dump(p: &TestProxy) -> Value {
    let (status, body) = p.control_get("/v1/discovery/kubernetes/dump");
    assert_eq!(status, 200, "{body}");
    body
}

pub(crate) fn wait_error(p: &TestProxy, contains: &str) -> String {
    let e = wait_for(WAIT, || {
        dump(p)["last_error"]
            .as_str()
            .filter(|e| e.contains(contains))
            .map(str::to_owned)
    });
    e.unwrap_or_else(|| {
        panic!(
            "no last_error with {contains:?} within {WAIT:?}: {}",
            dump(p)
        )
    })
}

/// A steady request stream through `p` (the testkit's), which [`finish`] checks.
pub(crate) fn steady(p: &TestProxy, path: &str) -> RequestStream {
    RequestStream::start(p.addr, path, None)
}

/// Stop `s` after it sent at least 10 more requests; assert that none failed.
pub(crate) fn finish(s: RequestStream) -> u64 {
    s.more(10);
    s.finish_clean()
}

pub(crate) fn one_port(name: Option<&str>, port: u16) -> Value {
    json!([subset(&[LOCAL], &[], &[(name, port)])])
}

/// Subsets that put each backend under port name `name`.
pub(crate) fn named(name: &str, backends: &[&Backend]) -> Value {
    Value::Array(
        backends
            .iter()
            .map(|b| subset(&[LOCAL], &[], &[(Some(name), b.port())]))
            .collect(),
    )
}
