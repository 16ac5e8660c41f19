//! Service discovery for Weir: registries that find an upstream's nodes by service name.
//!
//! A [`Registry`] runs in the background and publishes, through its [`Feed`], an immutable
//! [`Catalog`]: service → ordered [`Node`]s `{host, port, weight, priority, metadata}`. The
//! proxy reads catalogs only when it compiles a configuration snapshot, so requests never do
//! discovery I/O, take a lock or allocate for it. A [`DiscoveryRegistry`] maps
//! `discovery_type` names to registries; the built-ins ([`consul`], [`nacos`],
//! [`kubernetes`], [`dns`]) are registered through it exactly as an embedder's own are, and
//! [`DiscoveryService`] runs every registry as a task of one Pingora background service.
//!
//! Every registry keeps the rules that make discovery safe to depend on:
//!
//! - **Last good wins.** A failed answer (connection error, non-2xx status, malformed body,
//!   timeout) never changes the catalog; [`Feed::failed`] records the error and the registry
//!   retries with backoff. Only a successful answer can remove or empty a service.
//! - **Per-instance validation.** An instance with an invalid host, port or weight is skipped
//!   with a warning; the others are used ([`Node::check`]).
//! - **Changes by value.** [`Feed::publish`] compares the new catalog with the current one
//!   (each service's nodes sorted by host, port, weight) and notifies the proxy only when
//!   something changed.
//!
//! This crate knows nothing of Weir's configuration model or proxy: the proxy converts its
//! configuration into the registries' own config types.

mod backoff;
pub mod consul;
pub mod dns;
mod feed;
#[cfg(test)]
mod fuzz;
pub mod kubernetes;
pub mod nacos;
mod node;
mod registry;
mod service;

pub use backoff::Backoff;
pub use feed::{Catalog, Feed, Status};
pub use node::{Node, ServiceRef};
pub use registry::{DiscoveryRegistry, Registry};
pub use service::DiscoveryService;

/// The text that replaces a secret in [`Registry::config_dump`].
pub const MASK: &str = "******";
