//! Metric primitives for Weir's data path.
//!
//! Everything a request counts is an atomic reached through handles resolved when a
//! configuration compiles: no label is formatted, hashed or looked up per request and no lock
//! is taken. The dimensions only a request knows (the status code, the consumer) are small
//! integers found in an [`AtomicMap`], an insert-only lock-free table. Exposition happens at
//! scrape time: [`Families`] turns the values into Prometheus `MetricFamily` values, which
//! the `prometheus` crate encodes in the text format.

mod expose;
mod histogram;
mod map;

pub use expose::{encode_text, Families, Labels};
pub use histogram::{Histogram, HistogramSnapshot, LATENCY_BUCKETS_MS};
pub use map::AtomicMap;
pub use prometheus;
