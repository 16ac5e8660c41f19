//! # Weir
//!
//! A programmable HTTP proxy on [Pingora](https://github.com/cloudflare/pingora) whose upstream
//! layer speaks Apache APISIX's configuration: routes, services, upstreams, consumers and
//! certificates in APISIX's shapes, the Admin API, the etcd source, and Weir's own resilience.
//!
//! This crate is what you depend on to embed or extend Weir:
//!
//! - run it as the `weir` binary does: [`Weir::builder`] → [`WeirBuilder::build`] →
//!   [`Weir::run`];
//! - add its services to your own Pingora `Server` beside your own: [`Weir::add_to`];
//! - extend it, every extension registered by name like the built-ins: plugins with a typed
//!   configuration ([`WeirBuilder::plugin_typed`]) or untyped ([`WeirBuilder::plugin`]),
//!   hooks ([`WeirBuilder::hook`]), selection algorithms ([`WeirBuilder::algorithm`]),
//!   discovery registries ([`WeirBuilder::discovery`]) and health checks
//!   ([`WeirBuilder::health_check`]). The `examples/` of this crate show each one.
//!
//! ```no_run
//! use weir::prelude::*;
//!
//! fn main() -> Result<(), weir::Error> {
//!     let weir = Weir::builder().config_file("conf/weir.yaml").build()?;
//!     let mut server = Server::new(None).expect("server");
//!     server.bootstrap();
//!     weir.add_to(&mut server)?;
//!     server.run_forever();
//! }
//! ```
//!
//! The crates it is made of are re-exported for what the facade does not cover:
//! [`config`] (the configuration model and its validation), [`proxy`] (the data path),
//! [`store`] (configuration sources and the Admin API), [`discovery`], [`balance`] (the
//! selection algorithms) and [`health`].
#![warn(missing_docs)]

mod builder;
mod error;
pub mod prelude;

pub use builder::{Weir, WeirBuilder};
pub use error::Error;

pub use pingora;
pub use weir_balance as balance;
pub use weir_config as config;
pub use weir_discovery as discovery;
pub use weir_health as health;
pub use weir_proxy as proxy;
pub use weir_store as store;
