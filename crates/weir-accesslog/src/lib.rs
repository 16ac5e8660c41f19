//! Weir's access log (`server.access_log`, docs/observability.md#access-log).
//!
//! - [`Entry`]: what the proxy supplies for one finished request, as borrowed data.
//! - [`Formatter`]: renders an entry into one line of the configured format: `default`
//!   (APISIX's) and templates share one text renderer with nginx's escaping; `json` writes
//!   one object per line with the keys of [`JSON_KEYS`].
//! - [`AccessLog`]: queues lines into a bounded buffer and writes them from one background
//!   OS thread (file I/O never runs on the proxy's async threads). A slow or full disk never
//!   blocks a request: lines that do not fit, or whose write fails, are dropped and counted
//!   ([`AccessLog::dropped`]). [`AccessLog::reopen`] makes the writer reopen the file, for
//!   logrotate.
//!
//! The crate depends on the configuration model only; nothing here knows Pingora.
//!
//! ```
//! use weir_config::access_log::Template;
//! use weir_accesslog::Formatter;
//! # use weir_accesslog::{AttemptRecord, Entry};
//! # use std::net::IpAddr;
//! # use std::time::{Duration, SystemTime};
//! # struct Req;
//! # impl Entry for Req {
//! #     fn remote_addr(&self) -> Option<IpAddr> { None }
//! #     fn method(&self) -> &str { "GET" }
//! #     fn request_uri(&self) -> &str { "/a?b" }
//! #     fn uri(&self) -> &str { "/a" }
//! #     fn version(&self) -> &str { "HTTP/1.1" }
//! #     fn host(&self) -> Option<&str> { None }
//! #     fn request_header(&self, _: &str) -> Option<&[u8]> { None }
//! #     fn upstream_header(&self, _: &str) -> Option<&[u8]> { None }
//! #     fn status(&self) -> Option<u16> { Some(200) }
//! #     fn body_bytes_sent(&self) -> u64 { 5 }
//! #     fn request_time(&self) -> Duration { Duration::from_millis(5) }
//! #     fn attempts(&self) -> &[AttemptRecord] { &[] }
//! #     fn upstream_scheme(&self) -> Option<&str> { None }
//! #     fn upstream_host(&self) -> Option<&str> { None }
//! #     fn upstream_uri(&self) -> Option<&str> { None }
//! #     fn route_id(&self) -> Option<&str> { None }
//! #     fn service_id(&self) -> Option<&str> { None }
//! #     fn consumer_name(&self) -> Option<&str> { None }
//! #     fn request_id(&self) -> Option<&str> { None }
//! #     fn time(&self) -> SystemTime { SystemTime::UNIX_EPOCH }
//! # }
//! let f = Formatter::template(&Template::parse("$status ${request_time}s $uri").unwrap());
//! let mut line = Vec::new();
//! f.format(&Req, &mut line);
//! assert_eq!(line, b"200 0.005s /a\n");
//! ```

mod entry;
mod format;
mod writer;

pub use entry::{AttemptRecord, Entry};
pub use format::{escape, Formatter, JSON_KEYS};
pub use writer::{AccessLog, DEFAULT_BUFFER_BYTES};

#[cfg(test)]
mod tests;
