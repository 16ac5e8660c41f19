//! [`RequestStream`]: a steady stream of requests from a thread, for tests that show "zero
//! failed requests while something changes or fails".

use crate::Client;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long [`RequestStream::more`] waits for the stream to move on.
const STALL: Duration = Duration::from_secs(30);

/// A thread sending `GET path` in a loop on one keepalive connection until stopped (at most
/// 300 s, or 100 failures). Counts every request and keeps every failure: a status other than
/// 200, a transport error, or a body that must not be served (yet).
pub struct RequestStream {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    forbidden: Arc<Mutex<Option<String>>>,
    thread: Option<JoinHandle<Vec<String>>>,
}

impl RequestStream {
    /// Start a stream to `addr`. With `forbidden`, a 200 with that body is a failure until
    /// [`allow`](Self::allow) is called.
    pub fn start(addr: SocketAddr, path: &str, forbidden: Option<&str>) -> RequestStream {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let forbidden = Arc::new(Mutex::new(forbidden.map(str::to_owned)));
        let (st, se, fb, path) = (
            Arc::clone(&stop),
            Arc::clone(&sent),
            Arc::clone(&forbidden),
            path.to_owned(),
        );
        let thread = std::thread::spawn(move || {
            let mut c = Client::new(addr);
            c.timeout = Duration::from_secs(10);
            let mut bad = Vec::new();
            let end = Instant::now() + Duration::from_secs(300);
            while !st.load(Ordering::SeqCst) && Instant::now() < end && bad.len() < 100 {
                match c.get(&path) {
                    Ok(r) if r.status == 200 => {
                        let no = fb.lock().map(|f| f.clone()).unwrap_or_default();
                        if no.as_deref() == Some(r.body.as_str()) {
                            bad.push(format!("served {:?} too early", r.body));
                        }
                    }
                    Ok(r) => bad.push(format!("{} {}", r.status, r.body)),
                    Err(e) => bad.push(e.to_string()),
                }
                se.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
            bad
        });
        RequestStream {
            stop,
            sent,
            forbidden,
            thread: Some(thread),
        }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Wait until `n` more requests were sent (the stream really ran across what the test
    /// does meanwhile). Panics if the stream stalls for 30 s.
    pub fn more(&self, n: u64) {
        let target = self.sent() + n;
        let ok = crate::wait_for(STALL, || (self.sent() >= target).then_some(()));
        assert!(
            ok.is_some(),
            "the request stream stalled at {}",
            self.sent()
        );
    }

    /// From now on, the forbidden body is an ordinary answer.
    pub fn allow(&self) {
        if let Ok(mut f) = self.forbidden.lock() {
            *f = None;
        }
    }

    /// Stop: the number of requests sent and every failure.
    pub fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let bad = self
            .thread
            .take()
            .map(|t| t.join().expect("request stream thread"))
            .unwrap_or_default();
        (self.sent(), bad)
    }

    /// Stop, and assert that no request failed; returns how many were sent.
    pub fn finish_clean(self) -> u64 {
        let (sent, bad) = self.finish();
        assert!(
            bad.is_empty(),
            "{} of {sent} requests failed: {bad:?}",
            bad.len()
        );
        sent
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
