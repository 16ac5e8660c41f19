//! A plugin of your own with a typed configuration: enabled per route or service with
//! `plugins: {add-header: {name: X-Team, value: payments}}`. The block is deserialised into
//! [`AddHeaderConfig`] when the configuration loads (a typo is a validation error with its
//! path), and the hook gets the route's parsed configuration on every request.
//!
//! `cargo run -p weir --example plugin -- conf/weir.yaml`

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::Session;
use serde::Deserialize;
use weir::prelude::*;

/// `plugins.add-header` of a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddHeaderConfig {
    /// The response header to set.
    pub name: String,
    pub value: String,
}

/// Adds the configured header to every response of the routes that enable it.
pub struct AddHeader;

#[async_trait]
impl Plugin for AddHeader {
    type Config = AddHeaderConfig;

    fn name(&self) -> &str {
        "add-header"
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        config: &AddHeaderConfig,
        _ctx: &mut HookCtx,
    ) -> Result<()> {
        resp.insert_header(config.name.clone(), config.value.clone())
    }
}

/// `builder` with the `add-header` plugin registered.
pub fn with_plugin(builder: WeirBuilder) -> WeirBuilder {
    builder.plugin_typed(AddHeader)
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
