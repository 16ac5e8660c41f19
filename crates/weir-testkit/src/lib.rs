//! Test support for Weir's end-to-end tests: real HTTP/1.1 backends on ephemeral ports
//! ([`Backend`]), a minimal keepalive client ([`Client`]), and the proxy running in-process
//! ([`TestProxy`]), and typed builders for its configurations ([`config`]). Everything binds
//! 127.0.0.1 only. Polling helpers take a deadline instead of sleeping a fixed time.

pub mod admin;
mod backend;
pub mod browser;
mod client;
pub mod config;
pub mod dns_server;
pub mod etcd;
pub mod fake_consul;
pub mod fake_kubernetes;
pub mod fake_nacos;
pub mod grpc;
#[cfg(test)]
mod layout;
pub mod metrics;
pub mod pki;
pub mod process;
mod proxy;
mod relay;
mod shutdown;
mod stream;

pub use admin::AdminClient;
pub use backend::{Backend, Mode, RefusedPort, Seen, TlsConfig};
pub use browser::Browser;
pub use client::{Client, Response};
pub use etcd::Etcd;
pub use process::WeirProcess;
pub use proxy::TestProxy;
pub use relay::TcpRelay;
pub use shutdown::ShutdownTrigger;
pub use stream::RequestStream;

use std::time::{Duration, Instant};

/// Raise this process's soft limit on open descriptors to at least `want` (capped by the
/// hard limit; children such as a [`WeirProcess`] inherit it). Returns the soft limit in force.
pub fn raise_fd_limit(want: u64) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft >= want {
        return soft;
    }
    let new = want.min(hard);
    match setrlimit(Resource::RLIMIT_NOFILE, new, hard) {
        Ok(()) => new,
        Err(_) => soft,
    }
}

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

/// A port on 127.0.0.1 held for a server that binds by address (Weir's listeners, the `weir`
/// binary): bound with `SO_REUSEADDR` and never listening, so nothing else on the machine —
/// another test suite's `bind(0)`, an outgoing connection's ephemeral port — can take it
/// while it is held, yet a listener that also sets `SO_REUSEADDR` (Pingora's do) can bind it.
/// Hold the reservation as long as the server runs.
#[derive(Debug)]
pub struct PortReservation {
    _socket: tokio::net::TcpSocket,
    pub port: u16,
}

/// Reserve a port (see [`PortReservation`]).
pub fn reserve_port() -> PortReservation {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind(([127, 0, 0, 1], 0).into())
        .expect("bind an ephemeral port");
    let port = socket.local_addr().expect("local addr").port();
    PortReservation {
        _socket: socket,
        port,
    }
}

/// A free port on 127.0.0.1, bound then released. Another socket may take it at any time:
/// for a server's port use [`reserve_port`], for a dead node `Backend::refused`.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}
