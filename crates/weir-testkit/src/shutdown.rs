//! Stopping an in-process Pingora server on demand (the [`TestProxy`](crate::TestProxy)).

use async_trait::async_trait;
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};
use std::sync::Arc;

/// A shutdown trigger for running a Pingora server in-process: hand
/// [`run_args`](Self::run_args) to `Server::run`, then [`fire`](Self::fire) to stop it.
#[derive(Clone, Default)]
pub struct ShutdownTrigger(Arc<tokio::sync::Notify>);

impl ShutdownTrigger {
    /// Ask the server to stop at once. A trigger fired before the server waits on it is kept:
    /// the server stops as soon as it starts waiting.
    pub fn fire(&self) {
        self.0.notify_one();
    }

    /// Run arguments whose shutdown signal is this trigger.
    pub fn run_args(&self) -> RunArgs {
        RunArgs {
            shutdown_signal: Box::new(self.clone()),
        }
    }
}

#[async_trait]
impl ShutdownSignalWatch for ShutdownTrigger {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::FastShutdown
    }
}
