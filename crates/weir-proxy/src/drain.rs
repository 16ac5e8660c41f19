//! Graceful shutdown that ends as soon as the work is done.
//!
//! Pingora's graceful shutdown (SIGTERM, or SIGQUIT after handing the listeners to a new
//! process) stops accepting, closes idle keepalive connections and lets busy ones finish their
//! request, and then sleeps for the whole `grace_period_seconds` before it stops, however
//! little there was to finish. Weir counts what is still open — client connections, and
//! requests (an HTTP/2 connection may close before the tasks of its last streams end) — and a
//! [`Drain`] background service calls its `on_drained` action once both are zero after the
//! shutdown began. The `weir` binary exits there; the grace period stays the upper bound,
//! because Pingora ends the process when it runs out.

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Open client connections and requests in progress.
#[derive(Debug, Default)]
struct Counts {
    connections: AtomicUsize,
    requests: AtomicUsize,
}

/// Counts the proxy's open connections and requests; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Tracker(Arc<Counts>);

/// A request in progress; dropping it ends the request.
#[derive(Debug)]
pub struct LiveRequest(Arc<Counts>);

impl Drop for LiveRequest {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An open client connection; dropping it closes it in the count.
struct LiveConnection(Arc<Counts>);

impl Drop for LiveConnection {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Tracker {
    /// Count a request until the returned guard drops.
    pub fn request(&self) -> LiveRequest {
        self.0.requests.fetch_add(1, Ordering::Relaxed);
        LiveRequest(Arc::clone(&self.0))
    }

    fn connection(&self) -> LiveConnection {
        self.0.connections.fetch_add(1, Ordering::Relaxed);
        LiveConnection(Arc::clone(&self.0))
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.0.connections.load(Ordering::Relaxed)
    }

    /// Requests in progress.
    pub fn requests(&self) -> usize {
        self.0.requests.load(Ordering::Relaxed)
    }

    fn idle(&self) -> bool {
        self.connections() == 0 && self.requests() == 0
    }
}

/// A Pingora application whose connections are counted by a [`Tracker`].
pub struct Counted<A> {
    inner: Arc<A>,
    tracker: Tracker,
}

impl<A> Counted<A> {
    pub fn new(inner: A, tracker: Tracker) -> Self {
        Counted {
            inner: Arc::new(inner),
            tracker,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Counted<A> {
    async fn process_new(
        self: &Arc<Self>,
        session: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = self.tracker.connection();
        self.inner.process_new(session, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// What to do once a graceful shutdown has nothing left to finish.
pub type OnDrained = Box<dyn Fn() + Send + Sync>;

/// Background service: after a graceful shutdown began, waits until no connection and no
/// request is left, then runs its action once.
pub struct Drain {
    tracker: Tracker,
    on_drained: OnDrained,
}

impl Drain {
    pub fn new(tracker: Tracker, on_drained: OnDrained) -> Self {
        Drain {
            tracker,
            on_drained,
        }
    }
}

/// How often the counts are read during a shutdown.
const POLL: Duration = Duration::from_millis(10);

#[async_trait]
impl BackgroundService for Drain {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        log::info!(
            "graceful shutdown: waiting for {} connection(s) and {} request(s)",
            self.tracker.connections(),
            self.tracker.requests()
        );
        while !self.tracker.idle() {
            tokio::time::sleep(POLL).await;
        }
        log::info!("graceful shutdown: nothing left in flight");
        (self.on_drained)();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_and_release() {
        let t = Tracker::default();
        assert!(t.idle());
        let r = t.request();
        let c = t.connection();
        assert_eq!((t.connections(), t.requests()), (1, 1));
        drop(r);
        assert!(!t.idle());
        drop(c);
        assert!(t.idle());
    }

    #[tokio::test]
    async fn drain_acts_once_shutdown_began_and_work_is_done() {
        let t = Tracker::default();
        let fired = Arc::new(AtomicUsize::new(0));
        let f = Arc::clone(&fired);
        let drain = Arc::new(Drain::new(
            t.clone(),
            Box::new(move || {
                f.fetch_add(1, Ordering::SeqCst);
            }),
        ));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let busy = t.request();
        let d = Arc::clone(&drain);
        let task = tokio::spawn(async move { d.start(rx).await });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 0, "no shutdown yet");
        tx.send(true).expect("send");
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 0, "a request is in flight");
        drop(busy);
        task.await.expect("drain task");
        assert_eq!(fired.load(Ordering::SeqCst), 1);
    }
}
