//! User hooks: a plugin enabled by name in `plugins:` (with its configuration), and a global
//! hook that sees every routed request.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::Session;
use std::sync::Arc;
use weir_proxy::{Hook, HookCtx, WeirProxy};
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
        ctx: &mut HookCtx,
    ) -> Result<()> {
        let conf = ctx.plugin_config("add-header");
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
        _ctx: &mut HookCtx,
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

/// A global hook that reads what the view offers: route, service, upstream key, consumer (set
/// by key-auth, which runs first), and its own state kept in the extensions from one phase to
/// the next.
struct Echo;

/// Echo's per-request state.
#[derive(Clone)]
struct Started(&'static str);

#[async_trait]
impl Hook for Echo {
    fn name(&self) -> &str {
        "echo"
    }

    async fn request_filter(&self, _s: &mut Session, ctx: &mut HookCtx) -> Result<bool> {
        ctx.extensions_mut().insert(Started("yes"));
        Ok(false)
    }

    async fn response_filter(
        &self,
        _s: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut HookCtx,
    ) -> Result<()> {
        let seen = [
            ("X-Route", ctx.route_id()),
            ("X-Service", ctx.service_id()),
            ("X-Upstream", ctx.upstream_key()),
            ("X-Consumer", ctx.consumer()),
            ("X-Started", ctx.extensions().get::<Started>().map(|s| s.0)),
        ];
        for (name, value) in seen {
            resp.insert_header(name, value.unwrap_or("-").to_owned())?;
        }
        Ok(())
    }
}

#[test]
fn hooks_see_route_service_upstream_consumer_and_their_own_state() {
    let b = Backend::start("b");
    let p = TestProxy::start_with(
        &format!(
            "routes:
  - {{id: auth, uri: /auth, service_id: s}}
  - {{id: open, uri: /open, upstream: {{nodes: {{\"{addr}\": 1}}}}}}
services:
  - {{id: s, upstream_id: u, plugins: {{key-auth: {{}}}}}}
upstreams:
  - {{id: u, nodes: {{\"{addr}\": 1}}}}
consumers:
  - {{username: alice, plugins: {{key-auth: {{key: alice-key}}}}}}
",
            addr = b.addr
        ),
        &[],
        |h| WeirProxy::new(h).with_hook(Arc::new(Echo)),
    );
    let mut c = p.client();
    let r = c
        .request("GET", "/auth", &[("apikey", "alice-key")], b"")
        .expect("auth");
    let seen = |r: &weir_testkit::Response| {
        [
            "x-route",
            "x-service",
            "x-upstream",
            "x-consumer",
            "x-started",
        ]
        .map(|h| r.header(h).unwrap_or("missing").to_owned())
    };
    assert_eq!(r.status, 200);
    assert_eq!(seen(&r), ["auth", "s", "upstreams/u", "alice", "yes"]);
    let r = c.get("/open").expect("open");
    assert_eq!(seen(&r), ["open", "-", "routes/open", "-", "yes"]);
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
