//! Test support for Weir's end-to-end tests: real HTTP/1.1 backends on ephemeral ports
//! ([`Backend`]), a minimal keepalive client ([`Client`]), and the proxy running in-process
//! ([`TestProxy`]). Everything binds 127.0.0.1 only. Polling helpers take a deadline instead
//! of sleeping a fixed time.

mod backend;
mod client;
pub mod dns_server;
pub mod fake_consul;
pub mod fake_kubernetes;
pub mod fake_nacos;
pub mod grpc;
pub mod pki;
mod proxy;

pub use backend::{Backend, Mode, Seen, TlsConfig};
pub use client::{Client, Response};
pub use proxy::TestProxy;

use std::time::{Duration, Instant};

/// Poll `f` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A free port on 127.0.0.1 (bound then released; for servers that bind by address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}
