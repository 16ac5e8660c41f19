//! Typed plugins: a [`Plugin`] has a name, a configuration type (deserialised and validated
//! once, when a configuration loads, never per request), and hooks in Pingora's phases that
//! receive that configuration.
//!
//! Register one with [`WeirProxy::with_typed_plugin`](crate::WeirProxy::with_typed_plugin)
//! (or the `weir` facade's builder) and validate configurations with the
//! [`extension`](Plugin::extension) it contributes, so a route's `plugins.<name>` block that
//! does not deserialize is a validation error with its path
//! (`routes[0] (id "r1").plugins.my-plugin.header: missing field`).
//!
//! Compiled snapshots keep each route's parsed configurations ([`PluginConfigs`]); a hook looks
//! its own up by name with a short linear scan and an `Arc` clone, without allocating.

use crate::ctx::HookCtx;
use crate::hook::Hook;
use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::Session;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::any::Any;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use weir_config::Plugins;

type Parsed = Arc<dyn Any + Send + Sync>;
type Parser = Arc<dyn Fn(&Value) -> Option<Parsed> + Send + Sync>;

/// A plugin with a typed configuration. Every method has a no-op default; the hooks run only
/// on routes (or services) whose `plugins:` enable the plugin, with that route's
/// configuration.
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// The configuration of one route's `plugins.<name>` block. Use
    /// `#[serde(deny_unknown_fields)]` so that a typo is an error.
    type Config: DeserializeOwned + Send + Sync + 'static;

    /// The name routes enable it by (`plugins: {<name>: {...}}`).
    fn name(&self) -> &str;

    /// After routing, before the upstream is contacted; `Ok(true)` when the plugin wrote the
    /// response itself.
    async fn request_filter(
        &self,
        _session: &mut Session,
        _config: &Self::Config,
        _ctx: &mut HookCtx,
    ) -> Result<bool> {
        Ok(false)
    }

    /// Change the request sent upstream (every attempt).
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        _upstream_request: &mut RequestHeader,
        _config: &Self::Config,
        _ctx: &mut HookCtx,
    ) -> Result<()> {
        Ok(())
    }

    /// Change the response header sent to the client.
    async fn response_filter(
        &self,
        _session: &mut Session,
        _response: &mut ResponseHeader,
        _config: &Self::Config,
        _ctx: &mut HookCtx,
    ) -> Result<()> {
        Ok(())
    }

    /// After the request ended.
    async fn logging(
        &self,
        _session: &mut Session,
        _error: Option<&Error>,
        _config: &Self::Config,
        _ctx: &mut HookCtx,
    ) {
    }

    /// What validation must accept for this plugin: its name, with its configuration type as
    /// the schema.
    fn extension(&self) -> weir_config::Extensions {
        weir_config::Extensions::new().plugin_with(
            self.name(),
            Arc::new(weir_config::Typed::<Self::Config>::new()),
        )
    }
}

/// The parsed configurations of one route's typed plugins.
#[derive(Default)]
pub struct PluginConfigs(Vec<(String, Parsed)>);

impl std::fmt::Debug for PluginConfigs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(n, _)| n))
            .finish()
    }
}

impl PluginConfigs {
    /// The configuration of plugin `name`, when the route enables it and it is of type `T`.
    pub fn get<T: Send + Sync + 'static>(&self, name: &str) -> Option<Arc<T>> {
        let (_, parsed) = self.0.iter().find(|(n, _)| n == name)?;
        Arc::clone(parsed).downcast::<T>().ok()
    }
}

/// How each typed plugin's configuration is parsed when a snapshot compiles; shared by every
/// snapshot of a handle. The built-in plugins (`key-auth`, `request-id`) are registered from
/// the start.
pub struct PluginParsers(RwLock<BTreeMap<String, Parser>>);

impl Default for PluginParsers {
    fn default() -> Self {
        let p = PluginParsers(RwLock::new(BTreeMap::new()));
        p.register::<weir_config::KeyAuth>("key-auth");
        p.register::<weir_config::RequestId>("request-id");
        p
    }
}

impl std::fmt::Debug for PluginParsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .0
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_tuple("PluginParsers").field(&names).finish()
    }
}

impl PluginParsers {
    /// Parse plugin `name`'s blocks as `T`.
    pub fn register<T: DeserializeOwned + Send + Sync + 'static>(&self, name: &str) {
        let parser: Parser = Arc::new(|v: &Value| {
            serde_json::from_value::<T>(v.clone())
                .ok()
                .map(|t| Arc::new(t) as Parsed)
        });
        if let Ok(mut m) = self.0.write() {
            m.insert(name.to_owned(), parser);
        }
    }

    /// The typed configurations of `plugins` (a route's, merged over its service's). A block
    /// that does not parse is left out (validation has already refused it).
    pub fn parse(&self, plugins: &Plugins) -> PluginConfigs {
        let Ok(m) = self.0.read() else {
            return PluginConfigs::default();
        };
        PluginConfigs(
            plugins
                .other
                .iter()
                .filter_map(|(name, v)| {
                    let parse = m.get(name)?;
                    match parse(v) {
                        Some(parsed) => Some((name.clone(), parsed)),
                        None => {
                            log::error!(
                                "plugin {name}: configuration does not parse; requests to its routes get 500"
                            );
                            None
                        }
                    }
                })
                .collect(),
        )
    }
}

/// A [`Plugin`] as a [`Hook`]: each phase finds the route's configuration and calls the
/// plugin with it.
pub(crate) struct PluginHook<P>(pub P);

#[async_trait]
impl<P: Plugin> Hook for PluginHook<P> {
    fn name(&self) -> &str {
        self.0.name()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut HookCtx) -> Result<bool> {
        let name = self.0.name();
        match ctx.plugin::<P::Config>(name) {
            Some(c) => self.0.request_filter(session, &c, ctx).await,
            // Enabled, but its configuration did not parse (resources applied without
            // validation): fail closed, never run the route without its plugin (key-auth).
            None if ctx.plugins().is_some_and(|p| p.enabled(name)) => Err(Error::explain(
                HTTPStatus(500),
                "a plugin enabled on the route has no valid configuration",
            )),
            None => Ok(false),
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut HookCtx,
    ) -> Result<()> {
        match ctx.plugin::<P::Config>(self.0.name()) {
            Some(c) => self.0.upstream_request_filter(session, req, &c, ctx).await,
            None => Ok(()),
        }
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut HookCtx,
    ) -> Result<()> {
        match ctx.plugin::<P::Config>(self.0.name()) {
            Some(c) => self.0.response_filter(session, resp, &c, ctx).await,
            None => Ok(()),
        }
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut HookCtx) {
        if let Some(c) = ctx.plugin::<P::Config>(self.0.name()) {
            self.0.logging(session, error, &c, ctx).await;
        }
    }
}
