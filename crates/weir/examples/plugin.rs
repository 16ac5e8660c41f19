//! A plugin of your own: a hook registered under a name, enabled per route or service with
//! `plugins: {add-header: {name: X-Team, value: payments}}`, reading its configuration from
//! the route.
//!
//! `cargo run -p weir --example plugin -- conf/weir.yaml`

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::Session;
use weir::prelude::*;
use weir::proxy::HookCtx;

/// Adds the configured header to every response of the routes that enable it.
pub struct AddHeader;

#[async_trait]
impl Hook for AddHeader {
    fn name(&self) -> &str {
        "add-header"
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut HookCtx,
    ) -> Result<()> {
        let Some(conf) = ctx.plugin_config("add-header") else {
            return Ok(());
        };
        let (Some(name), Some(value)) = (
            conf.get("name").and_then(|v| v.as_str()),
            conf.get("value").and_then(|v| v.as_str()),
        ) else {
            return Ok(());
        };
        resp.insert_header(name.to_owned(), value.to_owned())
    }
}

/// `builder` with the `add-header` plugin registered.
pub fn with_plugin(builder: WeirBuilder) -> WeirBuilder {
    builder.plugin("add-header", AddHeader)
}

fn main() {
    env_logger::init();
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "conf/weir.yaml".into());
    match with_plugin(Weir::builder().config_file(&path)).build() {
        Ok(w) => {
            if let Err(e) = w.run(Opt::default()) {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    }
}
