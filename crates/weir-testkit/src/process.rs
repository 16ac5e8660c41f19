//! [`WeirProcess`]: the real `weir` binary as a child process, with its log, for tests of what
//! only a process shows (signals, files, several instances on one etcd).

use crate::{wait_for, Client};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a process may take to open its listener.
const START: Duration = Duration::from_secs(20);

/// A running `weir -c <conf>`; killed on drop.
pub struct WeirProcess {
    pub child: Child,
    /// The proxy's port.
    pub port: u16,
    log: PathBuf,
}

impl WeirProcess {
    /// Start `bin` (the test's `env!("CARGO_BIN_EXE_weir")`) on `conf` and wait until it
    /// listens on `port`. Its stderr goes to `<conf>.log` (or `log` when given).
    pub fn start(bin: &str, conf: &Path, port: u16) -> WeirProcess {
        Self::start_logging(bin, conf, port, &conf.with_extension("log"))
    }

    /// As [`start`](Self::start), logging to `log`.
    pub fn start_logging(bin: &str, conf: &Path, port: u16, log: &Path) -> WeirProcess {
        let child = Command::new(bin)
            .arg("-c")
            .arg(conf)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("log file"))
            .spawn()
            .expect("spawn weir");
        let mut w = WeirProcess {
            child,
            port,
            log: log.to_owned(),
        };
        let up = wait_for(START, || {
            if let Ok(Some(status)) = w.child.try_wait() {
                panic!("weir exited with {status}:\n{}", w.log());
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "weir did not listen on {port}:\n{}", w.log());
        w.port = port;
        w
    }

    /// `GET path` on the proxy, on a new connection: (status, body).
    pub fn get_path(&self, path: &str) -> (u16, String) {
        let r = Client::new(([127, 0, 0, 1], self.port).into())
            .get(path)
            .expect("request");
        (r.status, r.body)
    }

    /// `GET /` on the proxy.
    pub fn get(&self) -> (u16, String) {
        self.get_path("/")
    }

    /// Everything the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Send `sig` (`-HUP`, `-TERM`) to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok);
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
