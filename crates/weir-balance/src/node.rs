//! Per-node state shared by every thread and route using an upstream, and the guard that
//! counts an attempt in flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// State of one node of one upstream. It lives as long as a configuration snapshot (or an
/// in-flight request) references it, so it survives reloads that keep the node.
#[derive(Debug, Default)]
pub struct NodeState {
    in_flight: AtomicU64,
}

impl NodeState {
    /// Attempts dispatched to this node and not yet finished.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Count one attempt in flight until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

/// One attempt in flight on a node; dropping it releases the count. Holding the counter itself
/// (not an index) keeps counts right across reloads.
#[derive(Debug)]
pub struct InFlight(Arc<NodeState>);

impl InFlight {
    pub fn node(&self) -> &Arc<NodeState> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_counts() {
        let n = Arc::new(NodeState::default());
        let a = n.begin();
        let b = n.begin();
        assert_eq!(n.in_flight(), 2);
        drop(a);
        assert_eq!(n.in_flight(), 1);
        drop(b);
        assert_eq!(n.in_flight(), 0);
    }
}
