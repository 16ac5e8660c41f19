//! Weir's data path.
//!
//! [`WeirProxy`] is a Pingora `ProxyHttp` serving an immutable, compiled [`Snapshot`] of the
//! configuration held in a [`SnapshotHandle`] (an `ArcSwap`): routing, node selection over
//! priority levels, retries with a tried set, timeouts, `pass_host`, keepalive pool limits and
//! `X-Weir-Upstream-Status`. [`server`] builds a Pingora `Server` from a `weir_config::Config`.

mod access_log;
mod attempt;
pub mod control;
mod ctx;
pub mod discovery;
pub mod downstream;
pub mod drain;
mod failure;
mod forwarded;
mod handle;
mod hash_key;
pub mod health;
pub mod hook;
pub mod key_auth;
pub mod metrics;
mod peer;
pub mod plugin;
mod pool;
mod proxy;
mod request_guard;
pub mod request_id;
pub mod resilience;
mod respond;
mod retry;
pub mod router;
pub mod server;
mod snapshot;
mod status;
pub mod tls;
pub mod upstream;

pub use ctx::{AttemptLog, HookCtx, RequestCtx};
pub use handle::SnapshotHandle;
pub use hook::Hook;
pub use plugin::{Plugin, PluginConfigs};
pub use proxy::WeirProxy;
pub use snapshot::{RouteRuntime, Snapshot, Tables};
