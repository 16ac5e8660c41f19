//! Smooth weighted round robin and priority levels through the real proxy.

use std::collections::HashMap;
use weir_testkit::{Backend, TestProxy};

fn count(p: &TestProxy, path: &str, n: usize) -> HashMap<String, usize> {
    let mut c = p.client();
    let mut m = HashMap::new();
    for _ in 0..n {
        let r = c.get(path).expect("request");
        assert_eq!(r.status, 200, "{r:?}");
        *m.entry(r.body).or_insert(0) += 1;
    }
    m
}

#[test]
fn round_robin_1_to_2_over_300_requests_is_exact() {
    let a = Backend::start("a");
    let b = Backend::start("b");
    let p = TestProxy::start(&format!(
        "routes: [{{id: r, uri: /*, upstream: {{nodes: {{\"{}\": 1, \"{}\": 2}}}}}}]\n",
        a.addr, b.addr
    ));
    let m = count(&p, "/x", 300);
    assert_eq!(m.get("a"), Some(&100));
    assert_eq!(m.get("b"), Some(&200));
}
