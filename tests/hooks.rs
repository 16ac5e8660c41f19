//! User hooks: a plugin enabled by name in `plugins:` (with its configuration), and a global
//! hook that sees every routed request.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::Session;
use std::sync::Arc;
use weir_proxy::{Hook, RequestCtx, WeirProxy};
use weir_testkit::{Backend, TestProxy};

/// Plugin `add-header`: `{name, value}` added to the upstream request.
struct AddHeader;

#[async_trait]
impl Hook for AddHeader {
    fn name(&self) -> &str {
        "add-header"
    }

    async fn upstream_request_filter(
        &self,
        _s: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let conf = ctx
            .route
            .as_ref()
            .and_then(|r| r.plugins.other.get("add-header"));
        let name = conf.and_then(|c| c.get("name")).and_then(|v| v.as_str());
        let value = conf.and_then(|c| c.get("value")).and_then(|v| v.as_str());
        if let (Some(n), Some(v)) = (name, value) {
            req.insert_header(n.to_owned(), v.to_owned())?;
        }
        Ok(())
    }
}

/// A global hook: stamps every routed response.
struct Stamp;

#[async_trait]
impl Hook for Stamp {
    fn name(&self) -> &str {
        "stamp"
    }

    async fn response_filter(
        &self,
        _s: &mut Session,
        resp: &mut ResponseHeader,
        _ctx: &mut RequestCtx,
    ) -> Result<()> {
        resp.insert_header("X-Stamp", "1")
    }
}

#[test]
fn plugins_run_where_enabled_and_global_hooks_everywhere() {
    let b = Backend::start("b");
    let p = TestProxy::start_with(
        &format!(
            "routes:
  - {{id: on, uri: /on, service_id: s}}
  - {{id: off, uri: /off, upstream_id: u}}
services:
  - {{id: s, upstream_id: u, plugins: {{add-header: {{name: X-Tenant, value: blue}}}}}}
upstreams:
  - {{id: u, nodes: {{\"{}\": 1}}}}
",
            b.addr
        ),
        &["add-header"],
        |h| {
            WeirProxy::new(h)
                .with_plugin("add-header", Arc::new(AddHeader))
                .with_hook(Arc::new(Stamp))
        },
    );
    let mut c = p.client();
    let on = c.get("/on").expect("on");
    let off = c.get("/off").expect("off");
    assert_eq!(
        (on.header("x-stamp"), off.header("x-stamp")),
        (Some("1"), Some("1"))
    );
    let seen = b.seen();
    assert_eq!(
        seen[0].headers.get("x-tenant").map(String::as_str),
        Some("blue")
    );
    assert_eq!(seen[1].headers.get("x-tenant"), None);
    // A 404 has no route: hooks do not run.
    assert_eq!(c.get("/nowhere").expect("404").header("x-stamp"), None);
}

#[test]
fn unregistered_plugin_names_are_rejected() {
    let yaml = "routes: [{id: r, uri: /, plugins: {add-header: {}}}]\n";
    let e = weir_config::parse_yaml(yaml).expect_err("unknown plugin");
    assert!(
        e.to_string().contains("unknown plugin \"add-header\""),
        "{e}"
    );
    assert!(weir_config::parse_yaml_with_plugins(yaml, &["add-header"]).is_ok());
}
