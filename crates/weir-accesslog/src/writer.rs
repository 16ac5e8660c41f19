//! [`AccessLog`]: a bounded buffer filled by requests and emptied by one writer thread.
//!
//! Design: requests format their line into a per-thread buffer, then copy it into one shared
//! batch buffer of at most `buffer_bytes` under a mutex held only for that copy. The writer
//! thread swaps the batch with its own (empty, reused) buffer under the same mutex and writes
//! it with one `write_all` outside the lock. So a line costs one `memcpy` and no allocation,
//! memory is bounded by two buffers, and a slow or stuck disk only stalls the writer thread:
//! once the batch is full, further lines are dropped and counted ([`AccessLog::dropped`]),
//! never waited for. A batch whose write fails is dropped and counted whole. After a small
//! batch the writer lets lines gather for 5 ms before its next write, so a busy proxy makes
//! one `write` per few milliseconds rather than one per request (a line reaches the file at
//! most that much later).

use crate::entry::Entry;
use crate::format::Formatter;
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use weir_config::{AccessLogConfig, LogFormat, LogTarget};

/// The default size of the batch buffer: lines beyond it, while the writer is busy, are
/// dropped (about 4000 lines of the default format).
pub const DEFAULT_BUFFER_BYTES: usize = 1 << 20;

/// How long the writer lets lines gather after a small batch (see `writer`).
const LINGER: Duration = Duration::from_millis(5);

/// How long dropping an [`AccessLog`] waits for the writer to write what is queued.
const DRAIN_ON_DROP: Duration = Duration::from_secs(2);

/// The least time between two warnings of the writer.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How soon the writer tries again after a failed reopen.
const REOPEN_RETRY: Duration = Duration::from_secs(1);

/// Per-thread line buffers larger than this after a line are not kept.
const KEEP_LINE_BYTES: usize = 64 * 1024;

/// The access log of a running proxy: [`log`](AccessLog::log) from any thread, lines are
/// written in the background.
pub struct AccessLog {
    formatter: Formatter,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// The writer waits on it for lines, a reopen or shutdown.
    work: Condvar,
    /// Waiters of [`AccessLog::flush`] / [`AccessLog::wait_written`] wait on it.
    progress: Condvar,
    capacity: usize,
    written: AtomicU64,
    dropped_full: AtomicU64,
    dropped_failed: AtomicU64,
    reopen: AtomicBool,
}

struct State {
    /// The batch being filled.
    buf: Vec<u8>,
    /// Lines in `buf`.
    lines: u64,
    /// Lines ever put in `buf`.
    accepted: u64,
    /// Lines the writer is done with (written or failed).
    completed: u64,
    shutdown: bool,
    /// The writer has exited.
    finished: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the state is still sound.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

thread_local! {
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

impl AccessLog {
    /// Start the access log of `config`: `None` when it is off. Opens the file (append mode,
    /// created if missing) so that a path that cannot be written fails here, then starts the
    /// writer thread.
    pub fn start(config: &AccessLogConfig) -> io::Result<Option<Arc<AccessLog>>> {
        Self::start_with_buffer(config, DEFAULT_BUFFER_BYTES)
    }

    /// [`start`](AccessLog::start) with a batch buffer of `buffer_bytes` (at least 4 KiB are
    /// used).
    pub fn start_with_buffer(
        config: &AccessLogConfig,
        buffer_bytes: usize,
    ) -> io::Result<Option<Arc<AccessLog>>> {
        let sink = match &config.target {
            LogTarget::Off => return Ok(None),
            LogTarget::Stderr => Sink::Stderr,
            LogTarget::File(path) => Sink::File {
                file: open(path)?,
                path: path.clone(),
                retry_at: None,
            },
        };
        let formatter = Formatter::new(&config.format);
        Self::spawn(formatter, sink, buffer_bytes.max(4096)).map(|l| Some(Arc::new(l)))
    }

    /// An access log writing to `writer` (tests, embedders with their own sink). `reopen`
    /// does nothing for it. `buffer_bytes` is used as given.
    pub fn with_writer(
        format: &LogFormat,
        writer: Box<dyn Write + Send>,
        buffer_bytes: usize,
    ) -> io::Result<Arc<AccessLog>> {
        Self::spawn(Formatter::new(format), Sink::Writer(writer), buffer_bytes).map(Arc::new)
    }

    /// [`with_writer`](AccessLog::with_writer) with a formatter of your own (a fixed time
    /// zone).
    pub fn with_formatter(
        formatter: Formatter,
        writer: Box<dyn Write + Send>,
        buffer_bytes: usize,
    ) -> io::Result<Arc<AccessLog>> {
        Self::spawn(formatter, Sink::Writer(writer), buffer_bytes).map(Arc::new)
    }

    fn spawn(formatter: Formatter, sink: Sink, capacity: usize) -> io::Result<AccessLog> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: Vec::with_capacity(capacity),
                lines: 0,
                accepted: 0,
                completed: 0,
                shutdown: false,
                finished: false,
            }),
            work: Condvar::new(),
            progress: Condvar::new(),
            capacity,
            written: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            dropped_failed: AtomicU64::new(0),
            reopen: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("weir-access-log".into())
            .spawn(move || writer(&s, sink))?;
        Ok(AccessLog {
            formatter,
            shared,
            thread: Some(thread),
        })
    }

    /// The formatter lines are rendered with.
    pub fn formatter(&self) -> &Formatter {
        &self.formatter
    }

    /// Format `entry` and queue its line. Never blocks on I/O: when the buffer is full the
    /// line is dropped and counted.
    pub fn log(&self, entry: &dyn Entry) {
        let done = LINE.try_with(|cell| {
            let Ok(mut line) = cell.try_borrow_mut() else {
                return false;
            };
            line.clear();
            self.formatter.format(entry, &mut line);
            self.enqueue(&line);
            if line.capacity() > KEEP_LINE_BYTES {
                *line = Vec::with_capacity(512);
            }
            true
        });
        if done != Ok(true) {
            let mut line = Vec::new();
            self.formatter.format(entry, &mut line);
            self.enqueue(&line);
        }
    }

    /// Queue one rendered line (with its `\n`) as it is.
    pub fn log_line(&self, line: &[u8]) {
        self.enqueue(line);
    }

    fn enqueue(&self, line: &[u8]) {
        let sh = &self.shared;
        let mut st = sh.lock();
        if st.shutdown || st.buf.len() + line.len() > sh.capacity {
            drop(st);
            sh.dropped_full.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let was_empty = st.buf.is_empty();
        st.buf.extend_from_slice(line);
        st.lines += 1;
        st.accepted += 1;
        drop(st);
        if was_empty {
            sh.work.notify_one();
        }
    }

    /// Ask the writer to reopen the file before its next write (after logrotate moved it
    /// away: SIGUSR1). Nothing for stderr or a writer of one's own. If the reopen fails the
    /// old file stays in use and the writer tries again.
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::SeqCst);
        // Through the lock: the writer checks the flag under it before it waits.
        let _st = self.shared.lock();
        self.shared.work.notify_one();
    }

    /// Lines written to the target so far.
    pub fn written(&self) -> u64 {
        self.shared.written.load(Ordering::Relaxed)
    }

    /// Lines dropped so far: the buffer was full, or their write failed
    /// (`weir_access_log_dropped_total`).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped_full.load(Ordering::Relaxed)
            + self.shared.dropped_failed.load(Ordering::Relaxed)
    }

    /// Wait until at least `n` lines have been written in all, at most `timeout`; whether
    /// they were.
    pub fn wait_written(&self, n: u64, timeout: Duration) -> bool {
        self.wait(timeout, |sh, st| {
            st.finished || sh.written.load(Ordering::Relaxed) >= n
        });
        self.written() >= n
    }

    /// Wait until every line queued before this call has been written (or has failed), at
    /// most `timeout`; whether it was.
    pub fn flush(&self, timeout: Duration) -> bool {
        let target = self.shared.lock().accepted;
        self.wait(timeout, |_, st| st.finished || st.completed >= target);
        self.shared.lock().completed >= target
    }

    fn wait(&self, timeout: Duration, done: impl Fn(&Shared, &State) -> bool) {
        let sh = &self.shared;
        let deadline = Instant::now() + timeout;
        let mut st = sh.lock();
        while !done(sh, &st) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            st = match sh.progress.wait_timeout(st, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }
}

impl Drop for AccessLog {
    /// The writer writes what is queued and exits; this waits for it up to 2 seconds (a
    /// stuck disk does not hold up the process's exit longer).
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_one();
        self.wait(DRAIN_ON_DROP, |_, st| st.finished);
        let finished = self.shared.lock().finished;
        if let (true, Some(t)) = (finished, self.thread.take()) {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .finish()
    }
}

fn open(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o644);
    o.open(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot open access log {}: {e}", path.display()),
        )
    })
}

/// Where the writer writes.
enum Sink {
    Stderr,
    File {
        path: PathBuf,
        file: File,
        /// A reopen failed: try again at this time.
        retry_at: Option<Instant>,
    },
    Writer(Box<dyn Write + Send>),
}

impl Sink {
    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            // Locked: no other line of this process lands inside a batch.
            Sink::Stderr => io::stderr().lock().write_all(b),
            Sink::File { file, .. } => file.write_all(b),
            Sink::Writer(w) => w.write_all(b).and_then(|()| w.flush()),
        }
    }

    /// Reopen the file (a new one at the same path after a rename); on failure the old one
    /// stays in use.
    fn reopen(&mut self) -> io::Result<()> {
        if let Sink::File {
            path,
            file,
            retry_at,
        } = self
        {
            match open(path) {
                Ok(f) => {
                    *file = f;
                    *retry_at = None;
                }
                Err(e) => {
                    *retry_at = Some(Instant::now() + REOPEN_RETRY);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn retry_due(&self) -> bool {
        matches!(self, Sink::File { retry_at: Some(t), .. } if Instant::now() >= *t)
    }

    fn name(&self) -> String {
        match self {
            Sink::Stderr => "stderr".into(),
            Sink::File { path, .. } => path.display().to_string(),
            Sink::Writer(_) => "its writer".into(),
        }
    }
}

/// Warnings of the writer, at most one per [`WARN_EVERY`] per kind.
#[derive(Default)]
struct Warnings {
    last_failure: Option<Instant>,
    failed_since: u64,
    last_full: Option<Instant>,
    full_seen: u64,
}

fn due(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    if last.is_some_and(|t| now.duration_since(t) < WARN_EVERY) {
        return false;
    }
    *last = Some(now);
    true
}

/// The writer thread: takes the batch, writes it, until shutdown with nothing left.
fn writer(sh: &Shared, mut sink: Sink) {
    let mut batch: Vec<u8> = Vec::with_capacity(sh.capacity);
    let mut warn = Warnings::default();
    loop {
        let (lines, last) = {
            let mut st = sh.lock();
            while st.buf.is_empty() && !st.shutdown && !sh.reopen.load(Ordering::SeqCst) {
                st = match sh.work.wait(st) {
                    Ok(g) => g,
                    Err(e) => e.into_inner(),
                };
            }
            std::mem::swap(&mut st.buf, &mut batch);
            let lines = std::mem::take(&mut st.lines);
            // After shutdown no line is accepted: this batch is the last.
            (lines, st.shutdown)
        };
        if sh.reopen.swap(false, Ordering::SeqCst) || sink.retry_due() {
            if let Err(e) = sink.reopen() {
                log::warn!("access log: {e}; writing on to the file that was open");
            }
        }
        let written_bytes = batch.len();
        if !batch.is_empty() {
            match sink.write_all(&batch) {
                Ok(()) => {
                    sh.written.fetch_add(lines, Ordering::Relaxed);
                }
                Err(e) => {
                    sh.dropped_failed.fetch_add(lines, Ordering::Relaxed);
                    warn.failed_since += lines;
                    if due(&mut warn.last_failure) {
                        log::warn!(
                            "access log: cannot write to {}: {e}; {} lines dropped",
                            sink.name(),
                            warn.failed_since
                        );
                        warn.failed_since = 0;
                    }
                }
            }
            batch.clear();
            if batch.capacity() > sh.capacity {
                batch.shrink_to(sh.capacity);
            }
        }
        let full = sh.dropped_full.load(Ordering::Relaxed);
        if full > warn.full_seen && due(&mut warn.last_full) {
            log::warn!(
                "access log: {} lines dropped because the buffer was full ({} is slower than the traffic)",
                full - warn.full_seen,
                sink.name()
            );
            warn.full_seen = full;
        }
        let mut st = sh.lock();
        st.completed += lines;
        if last {
            st.finished = true;
        }
        drop(st);
        sh.progress.notify_all();
        if last {
            return;
        }
        // Let lines gather before the next write: one write (and one wake-up of this thread)
        // per few milliseconds of traffic, not one per request. A reopen or a shutdown cuts
        // the wait short only by being seen after it; lines wait at most LINGER.
        if written_bytes < sh.capacity / 4 {
            std::thread::sleep(LINGER);
        }
    }
}
