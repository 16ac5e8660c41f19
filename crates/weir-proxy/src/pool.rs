//! Keepalive pool accounting for `keepalive_pool.size` and `keepalive_pool.requests`.
//!
//! Pingora keeps one process-wide LRU of idle upstream connections (sized by
//! `server.upstream_keepalive_pool_size`) and has no per-upstream bound and no per-connection
//! request limit. Weir adds both on top, per upstream key:
//!
//! - **open connections** are counted with a Pingora peer `Tracer` (called on connect and
//!   when the stream is dropped);
//! - **requests per connection** are counted per `(fd, established time)` of the connection,
//!   seen in `connected_to_upstream`;
//! - when this request is a connection's last allowed one, or when returning the connection
//!   would leave more than `size` idle connections (open − busy), the request is sent with
//!   `Connection: close`, so Pingora does not pool the connection.

use pingora::upstreams::peer::{Tracer, Tracing};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const SHARDS: usize = 16;
/// A shard is pruned of stale entries once it holds this many.
const PRUNE_AT: usize = 512;

#[derive(Debug, Clone, Copy)]
struct ConnUse {
    requests: u64,
    last: Instant,
}

/// Pool accounting of one upstream key; survives reloads like the pool itself.
#[derive(Debug, Default)]
pub struct PoolState {
    open: Arc<AtomicI64>,
    shards: [Mutex<HashMap<(i32, SystemTime), ConnUse>>; SHARDS],
}

#[derive(Debug, Clone)]
struct OpenConnections(Arc<AtomicI64>);

impl Tracing for OpenConnections {
    fn on_connected(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn on_disconnected(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    fn boxed_clone(&self) -> Box<dyn Tracing> {
        Box::new(self.clone())
    }
}

impl PoolState {
    /// The tracer to put on every peer of this upstream.
    pub fn tracer(&self) -> Tracer {
        Tracer(Box::new(OpenConnections(Arc::clone(&self.open))))
    }

    /// Connections to this upstream currently open (busy or idle).
    pub fn open(&self) -> i64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Count a request on connection `(fd, established)`; returns how many requests the
    /// connection has now carried, this one included. `max_idle` bounds how long an entry of a
    /// connection that vanished silently is kept.
    pub fn count_request(
        &self,
        fd: i32,
        established: SystemTime,
        reused: bool,
        max_idle: Duration,
    ) -> u64 {
        let shard = &self.shards[(fd as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if map.len() >= PRUNE_AT {
            let keep = max_idle + Duration::from_secs(1);
            map.retain(|_, u| now.duration_since(u.last) <= keep);
        }
        let e = map.entry((fd, established)).or_insert(ConnUse {
            requests: 0,
            last: now,
        });
        if !reused {
            e.requests = 0;
        }
        e.requests += 1;
        e.last = now;
        e.requests
    }

    /// Forget a connection that is about to be closed.
    pub fn forget(&self, fd: i32, established: SystemTime) {
        let shard = &self.shards[(fd as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&(fd, established));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_per_connection() {
        let p = PoolState::default();
        let t = SystemTime::now();
        let idle = Duration::from_secs(60);
        assert_eq!(p.count_request(7, t, false, idle), 1);
        assert_eq!(p.count_request(7, t, true, idle), 2);
        assert_eq!(p.count_request(8, t, false, idle), 1);
        // A new connection on a reused fd starts over.
        assert_eq!(p.count_request(7, t, false, idle), 1);
        p.forget(7, t);
        assert_eq!(p.count_request(7, t, true, idle), 1);
        let tr = p.tracer();
        tr.0.on_connected();
        assert_eq!(p.open(), 1);
        tr.0.on_disconnected();
        assert_eq!(p.open(), 0);
    }
}
