//! A discovery registry of your own, registered under a `discovery_type` name.
//!
//! `cargo run -p weir --example custom_discovery -- conf/weir.yaml` runs Weir with a registry
//! named `static-env` next to the built-ins: an upstream with `discovery_type: static-env` and
//! `service_name: web` gets the nodes listed in the `WEB_NODES` environment variable
//! (`10.0.0.1:8080,10.0.0.2:8080`).

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use weir::prelude::*;

/// Services from a fixed list: `service name -> [addr]`. A real registry would watch its
/// source and publish every change (and call `feed.failed(..)` on errors, keeping the last
/// good nodes).
pub struct StaticRegistry {
    pub services: HashMap<String, Vec<std::net::SocketAddr>>,
}

#[async_trait]
impl Registry for StaticRegistry {
    async fn run(&self, feed: Arc<Feed>) {
        let catalog = self
            .services
            .iter()
            .map(|(name, addrs)| {
                let nodes = addrs
                    .iter()
                    .map(|a| DiscoveredNode {
                        host: a.ip().to_string(),
                        port: a.port(),
                        weight: 1,
                        priority: 0,
                        metadata: Default::default(),
                    })
                    .collect();
                (name.clone(), nodes)
            })
            .collect();
        feed.publish(catalog);
        // Nothing changes any more: wait until the service is stopped.
        std::future::pending::<()>().await;
    }
}

/// A Weir over `builder`'s configuration with [`StaticRegistry`] as `static-env`.
pub fn weir(
    builder: WeirBuilder,
    services: HashMap<String, Vec<std::net::SocketAddr>>,
) -> Result<Weir, weir::Error> {
    builder
        .discovery("static-env", StaticRegistry { services })
        .build()
}

fn main() {
    env_logger::init();
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "conf/weir.yaml".into());
    let nodes = std::env::var("WEB_NODES")
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let services = HashMap::from([("web".to_owned(), nodes)]);
    match weir(Weir::builder().config_file(&path), services) {
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
