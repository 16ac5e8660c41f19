//! What the proxy tells the access log about one finished request.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

/// One try of one upstream node: what `$upstream_addr`, `$upstream_status` and
/// `$upstream_response_time` list, in the order the tries were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptRecord {
    /// The node's address, as connected to.
    pub addr: SocketAddr,
    /// The status of the node's response; `None` when it sent none (connection refused,
    /// timed out, reset before the response header).
    pub status: Option<u16>,
    /// From the start of the try (before connecting) to the end of its response header, or
    /// to its failure.
    pub elapsed: Duration,
}

/// One finished request, as the access log reads it.
///
/// Every method returns borrowed data, so the proxy can implement it over its own request
/// state without allocating; the formatter copies what it needs into the line. `None`
/// means "not known" and is written `-` (text formats) or `null` (`json`).
pub trait Entry {
    /// `$remote_addr`: the client's IP address.
    fn remote_addr(&self) -> Option<IpAddr>;
    /// `$request_method`: `GET`, `POST`, ...
    fn method(&self) -> &str;
    /// `$request_uri`: path and query as the client sent them (`/a/b?q=1`).
    fn request_uri(&self) -> &str;
    /// `$uri`: the path, without the query (`/a/b`).
    fn uri(&self) -> &str;
    /// The protocol of the request line: `HTTP/1.0`, `HTTP/1.1`, `HTTP/2.0`.
    fn version(&self) -> &str;
    /// `$host`: the host the request is for, lowercase, without a port.
    fn host(&self) -> Option<&str>;
    /// `$http_<name>`: the first value of request header `name`, given lowercase with `-`
    /// (`user-agent`). For HTTP/2, `host` should answer the `:authority` when there is no
    /// Host header.
    fn request_header(&self, name: &str) -> Option<&[u8]>;
    /// `$upstream_http_<name>`: the first value of header `name` (lowercase with `-`) of
    /// the response of the last upstream try, as the upstream sent it.
    fn upstream_header(&self, name: &str) -> Option<&[u8]>;
    /// `$status`: the status sent to the client; `None` if no response header was sent.
    fn status(&self) -> Option<u16>;
    /// `$body_bytes_sent`: response body bytes sent to the client (headers excluded).
    fn body_bytes_sent(&self) -> u64;
    /// `$request_time`: from the first byte read from the client to the end of the
    /// response.
    fn request_time(&self) -> Duration;
    /// Every upstream try, in order; empty when no node was tried.
    fn attempts(&self) -> &[AttemptRecord];
    /// `$upstream_scheme`: `http`, `https`, `grpc` or `grpcs` of the upstream used.
    fn upstream_scheme(&self) -> Option<&str>;
    /// `$upstream_host`: the Host header sent upstream.
    fn upstream_host(&self) -> Option<&str>;
    /// `$upstream_uri`: the path and query sent upstream.
    fn upstream_uri(&self) -> Option<&str>;
    /// `$route_id`: the id of the matched route.
    fn route_id(&self) -> Option<&str>;
    /// `$service_id`: the id of the matched route's service.
    fn service_id(&self) -> Option<&str>;
    /// `$consumer_name`: the `username` of the consumer that authenticated.
    fn consumer_name(&self) -> Option<&str>;
    /// `$request_id`: the id the `request-id` plugin gave the request.
    fn request_id(&self) -> Option<&str>;
    /// `$time_local` / `$time_iso8601`: when the request ended (nginx logs the end time:
    /// the moment the line is written). Only whole seconds are written.
    fn time(&self) -> SystemTime;
}
