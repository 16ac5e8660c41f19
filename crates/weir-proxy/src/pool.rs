//! Keepalive pool accounting for `keepalive_pool.size` and `keepalive_pool.requests`.
//!
//! Pingora keeps one process-wide LRU of idle upstream connections (sized by
//! `server.upstream_keepalive_pool_size`) and has no per-upstream bound and no per-connection
//! request limit. Weir adds both on top, per upstream key:
//!
//! - **`size`**: Pingora decides whether to pool a connection from the peer fixed when the
//!   attempt started, so the bound is applied at dispatch: each upstream counts its busy
//!   attempts, and an attempt that starts while `size` others are busy is sent with
//!   `Connection: close`. After any burst at most about `size` connections go back to the pool;
//!   busy connections are not limited;
//! - **`requests`**: requests are counted per connection, keyed by `(fd, established time)` as
//!   seen in `connected_to_upstream`; the last allowed request is sent with
//!   `Connection: close`, so Pingora closes the connection after it. On HTTP/2 (grpc, grpcs)
//!   streams are counted the same way, and the node's connection generation moves on instead
//!   (see `NodeRuntime::h2_epoch`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

thread_local! {
    /// This thread's pool salt, given on first use (0: not given yet).
    static SALT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A salt unique to the calling thread, for per-worker pools (`server.work_stealing: false`,
/// where each Pingora worker runs its own runtime and a connection registered with one
/// runtime cannot be used from another): mixed into every peer's pool group key, so a
/// connection is only offered again to the worker that made it. Limits still count per
/// upstream across workers: `keepalive_pool.size` bounds the upstream's busy attempts
/// wherever they run, so at most about `size` connections of an upstream go back to the
/// pools in total.
#[inline]
pub(crate) fn worker_salt() -> u64 {
    SALT.with(|s| {
        let v = s.get();
        if v != 0 {
            return v;
        }
        static NEXT: AtomicU64 = AtomicU64::new(1);
        // A golden-ratio step keeps salts far apart in the key space.
        let v = NEXT
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            | 1;
        s.set(v);
        v
    })
}

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
    busy: AtomicU64,
    shards: [Mutex<HashMap<(i32, SystemTime), ConnUse>>; SHARDS],
}

/// One busy attempt on an upstream; dropping it releases the count.
#[derive(Debug)]
pub struct Busy(Arc<PoolState>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PoolState {
    /// Count an attempt as busy; returns the guard and how many attempts are busy now,
    /// this one included.
    pub fn begin(self: &Arc<Self>) -> (Busy, u64) {
        let n = self.busy.fetch_add(1, Ordering::Relaxed) + 1;
        (Busy(Arc::clone(self)), n)
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
    }

    #[test]
    fn counts_busy_attempts() {
        let p = Arc::new(PoolState::default());
        let (a, n1) = p.begin();
        let (_b, n2) = p.begin();
        assert_eq!((n1, n2), (1, 2));
        drop(a);
        assert_eq!(p.begin().1, 2);
    }
}
