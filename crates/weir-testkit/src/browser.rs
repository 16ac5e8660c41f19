//! [`Browser`]: a real headless Chromium for tests of web pages (Weir's status page at `/ui/`
//! on the control listener): load a URL, let its scripts fetch and render, then read the
//! rendered DOM ([`Browser::dump_dom`]) or take a screenshot ([`Browser::screenshot`]).
//!
//! Every run starts a fresh Chromium with its own profile, home and temporary directory (all
//! in one scratch directory, removed afterwards), no first-run, sync, extension or background
//! network traffic, and a hard timeout after which the whole process group is killed. Time in
//! the page is virtual (`--virtual-time-budget`): timers fire as soon as the page is otherwise
//! idle, so a page polling every 2 s polls a few times within a real fraction of a second,
//! and the run ends once the budget is spent.
//!
//! Chromium is found through `WEIR_CHROMIUM` (a path or a command name), else `chromium`,
//! `chromium-browser`, `google-chrome` or `google-chrome-stable` on `PATH`. Tests call
//! [`Browser::for_tests`], which fails with installation advice when none is found, unless
//! `WEIR_SKIP_BROWSER=1` asks to skip them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The environment variable naming the Chromium binary to use (a path, or a name on `PATH`).
pub const CHROMIUM_ENV: &str = "WEIR_CHROMIUM";

/// The environment variable that, set to `1`, makes [`Browser::for_tests`] skip browser tests.
pub const SKIP_ENV: &str = "WEIR_SKIP_BROWSER";

/// Command names tried on `PATH`, in order, when `WEIR_CHROMIUM` is not set.
const NAMES: [&str; 4] = [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
];

/// The virtual time a page gets by default: enough for a page polling every 2 s to poll three
/// times (at 0, 2 and 4 s).
pub const DEFAULT_VIRTUAL_TIME: Duration = Duration::from_secs(5);

/// The real time a run may take before its processes are killed.
pub const HARD_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the output pipes may stay open after the browser process has exited (helper
/// processes still holding them) before the process group is killed.
const DRAIN: Duration = Duration::from_secs(10);

/// The window size of [`Browser::screenshot`].
pub const SCREENSHOT_SIZE: (u32, u32) = (1280, 900);

/// Flags of every run: headless, no sandbox (CI runs as root), and nothing that talks to the
/// network or shows first-run UI.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-component-extensions-with-background-pages",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,AutofillServerCommunication,CertificateTransparencyComponentUpdater",
    "--metrics-recording-only",
    "--no-pings",
    "--mute-audio",
    "--password-store=basic",
    "--hide-scrollbars",
    "--force-color-profile=srgb",
];

/// A Chromium (or Chrome) binary able to run headless.
#[derive(Debug, Clone)]
pub struct Browser {
    program: PathBuf,
}

impl Browser {
    /// Locate Chromium: `WEIR_CHROMIUM` when set (`None` if it names nothing executable),
    /// else the first of `chromium`, `chromium-browser`, `google-chrome`,
    /// `google-chrome-stable` on `PATH`.
    pub fn find() -> Option<Browser> {
        if let Some(v) = std::env::var_os(CHROMIUM_ENV).filter(|v| !v.is_empty()) {
            return locate(Path::new(&v)).map(|program| Browser { program });
        }
        NAMES
            .iter()
            .find_map(|n| locate(Path::new(n)))
            .map(|program| Browser { program })
    }

    /// The browser for a test: `None` (the test returns early, having said so on stderr)
    /// when `WEIR_SKIP_BROWSER=1`; otherwise [`find`](Self::find)'s, and a panic with
    /// installation advice when there is none, so a machine without Chromium never passes
    /// browser tests silently.
    pub fn for_tests() -> Option<Browser> {
        if skip_requested() {
            eprintln!("{SKIP_ENV}=1: skipping a browser test");
            return None;
        }
        match Browser::find() {
            Some(b) => Some(b),
            None => panic!("{}", missing_message()),
        }
    }

    /// The binary this browser runs.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Load `url`, give the page [`DEFAULT_VIRTUAL_TIME`] to run its scripts (fetches
    /// included), and return the DOM as it is then, serialized as HTML.
    pub fn dump_dom(&self, url: &str) -> Result<String, String> {
        self.dump_dom_after(url, DEFAULT_VIRTUAL_TIME)
    }

    /// As [`dump_dom`](Self::dump_dom), with `virtual_time` of page time.
    pub fn dump_dom_after(&self, url: &str, virtual_time: Duration) -> Result<String, String> {
        let out = self.run(&[
            budget(virtual_time),
            "--dump-dom".to_owned(),
            url.to_owned(),
        ])?;
        let dom = String::from_utf8(out.stdout)
            .map_err(|e| format!("the DOM of {url} is not UTF-8: {e}"))?;
        if dom.trim().is_empty() {
            return Err(format!(
                "{} printed no DOM for {url}; its stderr ends with:\n{}",
                self.program.display(),
                out.stderr_tail
            ));
        }
        Ok(dom)
    }

    /// Load `url` in a [`SCREENSHOT_SIZE`] window, give it [`DEFAULT_VIRTUAL_TIME`], and
    /// write a PNG of the window to `path`.
    pub fn screenshot(&self, url: &str, path: &Path) -> Result<(), String> {
        self.screenshot_with(url, path, SCREENSHOT_SIZE, DEFAULT_VIRTUAL_TIME)
    }

    /// As [`screenshot`](Self::screenshot), with a window of `size` (width, height) and
    /// `virtual_time` of page time.
    pub fn screenshot_with(
        &self,
        url: &str,
        path: &Path,
        size: (u32, u32),
        virtual_time: Duration,
    ) -> Result<(), String> {
        let path = std::path::absolute(path)
            .map_err(|e| format!("cannot make {} absolute: {e}", path.display()))?;
        // A file left from an earlier run would pass for this run's screenshot.
        if path.exists() {
            std::fs::remove_file(&path)
                .map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
        }
        let out = self.run(&[
            budget(virtual_time),
            format!("--window-size={},{}", size.0, size.1),
            format!("--screenshot={}", path.display()),
            url.to_owned(),
        ])?;
        match std::fs::metadata(&path) {
            Ok(m) if m.len() > 0 => Ok(()),
            _ => Err(format!(
                "{} wrote no screenshot of {url} to {}; its stderr ends with:\n{}",
                self.program.display(),
                path.display(),
                out.stderr_tail
            )),
        }
    }

    /// Run the browser with [`FLAGS`] and `args` in a fresh scratch directory, within
    /// [`HARD_TIMEOUT`].
    fn run(&self, args: &[String]) -> Result<Output, String> {
        let scratch = Scratch::new()?;
        let dir = scratch.path.clone();
        let mut cmd = Command::new(&self.program);
        cmd.args(FLAGS)
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .args(args)
            // Nothing of the run outlives the scratch directory: the profile, what Chromium
            // writes under $HOME (~/.pki) and the XDG directories, its temporary files.
            .env("HOME", &dir)
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .env("TMPDIR", dir.join("tmp"))
            .env("DBUS_SESSION_BUS_ADDRESS", "disabled:")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its own process group: a timeout kills the browser and every helper it started.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.program.display()))?;
        let group = child.id();
        let stdout = Pipe::read(child.stdout.take());
        let stderr = Pipe::read(child.stderr.take());

        let status = wait_until(&mut child, Instant::now() + HARD_TIMEOUT);
        let status = match status {
            Ok(Some(s)) => s,
            Ok(None) => {
                kill_group(group);
                let _ = child.kill();
                let _ = child.wait();
                stdout.wait(Duration::from_secs(5));
                stderr.wait(Duration::from_secs(5));
                return Err(format!(
                    "{} {} did not finish within {HARD_TIMEOUT:?} and was killed; its stderr ends with:\n{}",
                    self.program.display(),
                    args.join(" "),
                    tail(&stderr.take())
                ));
            }
            Err(e) => {
                kill_group(group);
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("cannot wait for {}: {e}", self.program.display()));
            }
        };
        // The browser has exited; its pipes close when the last helper holding them has too.
        // Helpers still holding them are members of the group, so the group still exists.
        if !(stdout.wait(DRAIN) && stderr.wait(DRAIN)) {
            kill_group(group);
            stdout.wait(Duration::from_secs(5));
            stderr.wait(Duration::from_secs(5));
        }
        let out = Output {
            stdout: stdout.take(),
            stderr_tail: tail(&stderr.take()),
        };
        if !status.success() {
            return Err(format!(
                "{} {} failed ({status}); its stderr ends with:\n{}",
                self.program.display(),
                args.join(" "),
                out.stderr_tail
            ));
        }
        Ok(out)
    }
}

/// Whether `WEIR_SKIP_BROWSER` asks to skip browser tests.
pub fn skip_requested() -> bool {
    std::env::var(SKIP_ENV).is_ok_and(|v| v == "1")
}

/// Why there is no browser, and what to do about it.
fn missing_message() -> String {
    let named = match std::env::var_os(CHROMIUM_ENV).filter(|v| !v.is_empty()) {
        Some(v) => format!(
            "{CHROMIUM_ENV}={} names no executable file",
            Path::new(&v).display()
        ),
        None => format!("none of {} is on PATH", NAMES.join(", ")),
    };
    format!(
        "this test needs a headless Chromium and {named}. Install Debian's `chromium` \
         package (`apt-get install chromium`; CI's .ci/run installs it), or point \
         {CHROMIUM_ENV} at a Chromium or Chrome binary, or set {SKIP_ENV}=1 to skip the \
         browser tests"
    )
}

/// `--virtual-time-budget=<ms>`.
fn budget(virtual_time: Duration) -> String {
    format!("--virtual-time-budget={}", virtual_time.as_millis())
}

/// An executable file: `name` itself when it has a directory part, else the first match on
/// `PATH`.
fn locate(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 || name.is_absolute() {
        return is_executable(name).then(|| name.to_owned());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The child's exit status, or `None` at `deadline`.
fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL every process of the group `group` (the browser's; see [`Browser::run`]).
fn kill_group(group: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The last 4000 bytes of `bytes`, as text.
fn tail(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(4000);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

struct Output {
    stdout: Vec<u8>,
    stderr_tail: String,
}

/// A pipe read to its end by a thread, into a buffer readable at any time (a pipe some
/// stray process keeps open never blocks the caller).
struct Pipe {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

impl Pipe {
    fn read(source: Option<impl Read + Send + 'static>) -> Pipe {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let thread = source.map(|mut source| {
            let buf = Arc::clone(&buf);
            std::thread::spawn(move || {
                let mut chunk = [0u8; 16384];
                loop {
                    match source.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend_from_slice(&chunk[..n]),
                    }
                }
            })
        });
        Pipe { buf, thread }
    }

    /// Whether the pipe reached its end within `within`.
    fn wait(&self, within: Duration) -> bool {
        let Some(t) = &self.thread else { return true };
        crate::wait_for(within, || t.is_finished().then_some(())).is_some()
    }

    /// What was read so far.
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// A fresh directory under the system temporary directory, removed on drop.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new() -> Result<Scratch, String> {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "weir-browser-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let scratch = Scratch { path };
        for sub in ["profile", "config", "cache", "tmp"] {
            let p = scratch.path.join(sub);
            std::fs::create_dir(&p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
        }
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_is_looked_up_on_path_and_a_path_is_taken_as_it_is() {
        // `sh` is on every PATH this crate builds on.
        let sh = locate(Path::new("sh")).expect("sh on PATH");
        assert!(sh.is_absolute(), "{}", sh.display());
        assert_eq!(locate(&sh), Some(sh.clone()));
        assert_eq!(locate(Path::new("/nonexistent/chromium")), None);
        assert_eq!(locate(Path::new("weir-no-such-browser")), None);
    }

    #[test]
    fn the_missing_browser_message_says_how_to_install_or_skip() {
        let m = missing_message();
        assert!(m.contains("apt-get install chromium"), "{m}");
        assert!(m.contains("WEIR_SKIP_BROWSER=1"), "{m}");
        assert!(m.contains("WEIR_CHROMIUM"), "{m}");
    }

    #[test]
    fn the_scratch_directory_is_removed_on_drop() {
        let s = Scratch::new().expect("scratch");
        let p = s.path.clone();
        assert!(p.join("tmp").is_dir());
        drop(s);
        assert!(!p.exists());
    }

    /// A real Chromium renders a page that changes the DOM from a timer (a `data:` URL: no
    /// server needed). Skipped only with `WEIR_SKIP_BROWSER=1`.
    #[test]
    fn chromium_runs_a_page_s_timers_before_dumping_its_dom() {
        let Some(b) = Browser::for_tests() else {
            return;
        };
        let page = "data:text/html,<p id=x>before</p><script>setTimeout(function(){document.getElementById('x').textContent='after 3 s'},3000)</script>";
        let dom = b.dump_dom(page).expect("dump the DOM");
        assert!(dom.contains("after 3 s"), "{dom}");
    }
}
