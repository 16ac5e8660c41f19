//! A selection algorithm of your own, registered by name next to the built-ins: active-standby
//! failover. Upstreams use it with `type: primary-standby` and its parameters beside it:
//!
//! ```yaml
//! upstreams:
//!   - id: web
//!     type: primary-standby
//!     primary-standby: {primaries: 2}
//!     nodes: {"10.0.0.1:80": 1, "10.0.0.2:80": 1, "10.0.0.3:80": 1}
//! ```
//!
//! Requests take turns over the first `primaries` nodes (in configured order); the others are
//! standbys, used in order only when every primary is down or already tried by the request.
//! The block is deserialised into [`PrimaryStandbyParams`] when the configuration loads: a
//! bad value is a validation error with its path.
//!
//! `cargo run -p weir --example custom_algorithm -- conf/weir.yaml`

use serde::Deserialize;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use weir::prelude::*;

/// `primary-standby` of an upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrimaryStandbyParams {
    /// How many of the level's first nodes take traffic while one of them is eligible.
    pub primaries: NonZeroUsize,
}

/// The factory: one [`Selector`] per priority level.
pub struct PrimaryStandby;

impl Algorithm for PrimaryStandby {
    type Params = PrimaryStandbyParams;

    fn build(&self, nodes: &[LevelNode<'_>], params: &Self::Params) -> Box<dyn LevelSelector> {
        Box::new(Selector {
            nodes: nodes.len(),
            primaries: params.primaries.get().min(nodes.len()),
            turn: AtomicUsize::new(0),
        })
    }
}

/// One level's selector. A pick is a counter increment and a scan: no allocation, no lock.
pub struct Selector {
    nodes: usize,
    primaries: usize,
    turn: AtomicUsize,
}

impl LevelSelector for Selector {
    fn select(&self, _key: &[u8], eligible: Eligible<'_>) -> Option<usize> {
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        (0..self.primaries)
            .map(|k| (start + k) % self.primaries)
            .chain(self.primaries..self.nodes)
            .find(|&i| eligible.test(i))
    }
}

/// `builder` with `primary-standby` registered.
pub fn with_algorithm(builder: WeirBuilder) -> WeirBuilder {
    builder.algorithm("primary-standby", PrimaryStandby)
}

fn main() {
    env_logger::init();
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "conf/weir.yaml".into());
    match with_algorithm(Weir::builder().config_file(&path)).build() {
        Ok(w) => {
            if let Err(e) = w.run(Opt::default()) {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    }
}
