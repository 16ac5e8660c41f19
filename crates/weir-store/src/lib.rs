//! Weir's configuration sources and its Admin API.
//!
//! A source holds the resources (routes, services, upstreams, consumers, certificates, CA
//! certificates) and hands every valid set it arrives at to a [`Sink`], the one seam to the
//! proxy: this crate knows neither Pingora's `ProxyHttp` nor the proxy's snapshots, and the
//! proxy knows neither files nor etcd.
//!
//! - [`file::FileSource`]: resources in the YAML configuration file, reloaded when it changes
//!   and on SIGHUP; Admin API writes rewrite its resource sections atomically.
//! - [`etcd::EtcdSource`]: resources under `<prefix>/<kind>/<id>` in etcd, read in pages,
//!   watched, and written by the Admin API of every instance.
//! - [`memory::MemorySource`]: resources given as YAML text, kept in memory (Admin API writes
//!   apply at once and are not persisted).
//! - [`admin::AdminApi`]: the APISIX-compatible Admin API over either source ([`Backend`]).
//!
//! Validation is always of the whole set ([`Validator`]), so a write is checked against every
//! reference and uniqueness rule before it is stored.

pub mod admin;
pub mod etcd;
pub mod file;
pub mod memory;
mod set;
mod source;
mod validate;

pub use set::{value_id, Kind, ResourceSet};
pub use source::{Backend, Base, Change, Origin, Sink, StoreError};
pub use validate::{located, Outcome, Rejection, Settled, Validator};
