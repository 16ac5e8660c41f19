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
//!
//! [`Counted`] also keeps idle keep-alive connections open for [`IDLE_LINGER`] after the last
//! request in flight ended, instead of closing them the instant the shutdown begins, so that
//! a request a client sends meanwhile is answered (with `Connection: close`) rather than
//! reset unanswered.

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

    /// Called by Pingora once the listeners have stopped accepting in a graceful shutdown.
    /// The inner cleanup (Pingora's `http_cleanup`) closes every HTTP/1.1 connection waiting
    /// for its next request at once, without a word to the client: one that had just sent
    /// its next request (a keep-alive client sending back to back) gets a reset instead of an
    /// answer, and cannot know whether the request was processed. So the connections are left
    /// open a little longer: each next request that arrives is still answered, with
    /// `Connection: close` (Pingora drops keep-alive once the shutdown began), and the client
    /// then closes cleanly. Only the connections still idle [`IDLE_LINGER`] after the last
    /// request in flight ended are closed, as nginx and Pingora would have closed them at
    /// once; the grace period still bounds it all.
    async fn cleanup(&self) {
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            if self.tracker.connections() == 0 {
                break;
            }
            if self.tracker.requests() > 0 {
                quiet_since = tokio::time::Instant::now();
            } else if quiet_since.elapsed() >= IDLE_LINGER {
                log::info!(
                    "graceful shutdown: closing {} idle connection(s)",
                    self.tracker.connections()
                );
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        self.inner.cleanup().await;
    }
}

/// How long idle client connections stay open in a graceful shutdown once no request is in
/// flight: time for a client that just got a response to send its next request (answered
/// with `Connection: close`) instead of racing the close (see [`Counted`]'s `cleanup`).
pub const IDLE_LINGER: Duration = Duration::from_secs(1);

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

    /// An application that records when its cleanup ran.
    struct Recorder(Arc<AtomicUsize>);

    #[async_trait]
    impl ServerApp for Recorder {
        async fn process_new(
            self: &Arc<Self>,
            _session: Stream,
            _shutdown: &ShutdownWatch,
        ) -> Option<Stream> {
            None
        }

        async fn cleanup(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counted() -> (Arc<Counted<Recorder>>, Tracker, Arc<AtomicUsize>) {
        let t = Tracker::default();
        let cleaned = Arc::new(AtomicUsize::new(0));
        let app = Counted::new(Recorder(Arc::clone(&cleaned)), t.clone());
        (Arc::new(app), t, cleaned)
    }

    #[tokio::test]
    async fn cleanup_with_no_connection_left_is_immediate() {
        let (app, _t, cleaned) = counted();
        tokio::time::timeout(Duration::from_secs(5), app.cleanup())
            .await
            .expect("cleanup returns without waiting the linger");
        assert_eq!(cleaned.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn cleanup_leaves_idle_connections_open_for_the_linger() {
        let (app, t, cleaned) = counted();
        let _idle = t.connection();
        let busy = t.request();
        let a = Arc::clone(&app);
        let task = tokio::spawn(async move { a.cleanup().await });
        // A request in flight: the connections stay, however long it takes.
        tokio::time::sleep(IDLE_LINGER + Duration::from_millis(200)).await;
        assert_eq!(
            cleaned.load(Ordering::SeqCst),
            0,
            "closed with a request in flight"
        );
        // Once it ended, the idle connections get the linger, then are closed.
        drop(busy);
        let ended = tokio::time::Instant::now();
        task.await.expect("cleanup task");
        assert_eq!(cleaned.load(Ordering::SeqCst), 1);
        assert!(
            ended.elapsed() >= IDLE_LINGER - POLL,
            "{:?}",
            ended.elapsed()
        );
    }

    #[tokio::test]
    async fn cleanup_ends_when_the_last_connection_closes() {
        let (app, t, cleaned) = counted();
        let open = t.connection();
        // A request still counted (an HTTP/2 stream's task outliving its connection) would
        // hold the linger off for ever: only the closed connection can end the wait.
        let _busy = t.request();
        let a = Arc::clone(&app);
        let task = tokio::spawn(async move { a.cleanup().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(open);
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("cleanup returns once no connection is left")
            .expect("cleanup task");
        assert_eq!(cleaned.load(Ordering::SeqCst), 1);
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
