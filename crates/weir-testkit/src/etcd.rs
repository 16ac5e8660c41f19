//! A real etcd server for a test: the `/usr/bin/etcd` binary (etcd 3.4 on the CI images) run
//! as a child process, one single-member cluster per [`Etcd`].
//!
//! - Ports: the client and peer ports are reserved with [`crate::reserve_port`] (bound with
//!   `SO_REUSEADDR`, never listening) and held for the [`Etcd`]'s lifetime, so a restart binds
//!   the same ports and nothing else on the machine takes them meanwhile. Go's listeners set
//!   `SO_REUSEADDR` too, which is what lets etcd bind a reserved port.
//! - Data: a throw-away directory under the system's temp dir (the etcd data dir and the
//!   server's log, `etcd.log`), removed on drop. [`Etcd::stop`] keeps it, so
//!   [`Etcd::restart`] brings back the same keys and revisions.
//! - Readiness: starting waits (polling, with a deadline) until `GET /health` answers
//!   `{"health":"true"}`, i.e. a leader is elected and a read went through raft. A start that
//!   fails panics with the tail of the server's log.
//! - TLS: [`Etcd::start_tls`] serves `https://` with a certificate for `127.0.0.1` and
//!   `localhost` signed by the test's CA, optionally requiring client certificates.
//!
//! The async helpers ([`Etcd::put`], [`Etcd::get`], [`Etcd::delete`], [`Etcd::compact`],
//! [`Etcd::enable_auth`]) talk to the server with the etcd-client crate directly (not with the
//! code under test); they panic on failure. They use the testkit's own client certificate on a
//! TLS server, and the `root` user once [`Etcd::enable_auth`] has run. Call them from a tokio
//! runtime.

use crate::pki::{Identity, TestCa};
use crate::{reserve_port, PortReservation};
use etcd_client::{Client, CompactionOptions, ConnectOptions, GetOptions, OpenSslClientConfig};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The etcd binary (Debian's `etcd-server` package).
pub const ETCD_BIN: &str = "/usr/bin/etcd";

/// How long a start may take before it is a failure (generous: other suites load the machine).
const START_DEADLINE: Duration = Duration::from_secs(30);

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The TLS material of a TLS server, in the data dir.
struct Tls {
    ca_pem: String,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    client_cert_auth: bool,
    /// The testkit's own client (health checks and helpers).
    client: Identity,
}

/// A running (or stopped) etcd server; see the module documentation.
pub struct Etcd {
    client_port: PortReservation,
    peer_port: PortReservation,
    dir: PathBuf,
    tls: Option<Tls>,
    child: Option<Child>,
    /// The `root` password once auth is enabled.
    root_password: Mutex<Option<String>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoint", &self.endpoint())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn unique_dir() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "weir-etcd-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

impl Etcd {
    /// Start a plain `http://` etcd and wait until it is ready.
    pub fn start() -> Etcd {
        Etcd::new(None)
    }

    /// Start an `https://` etcd with a server certificate for `127.0.0.1` / `localhost` issued
    /// by `ca`; `client_cert_auth` makes it require a client certificate signed by `ca`
    /// (`--client-cert-auth`). Waits until it is ready.
    pub fn start_tls(ca: &TestCa, client_cert_auth: bool) -> Etcd {
        let dir = unique_dir();
        std::fs::create_dir_all(&dir).expect("create the etcd dir");
        let server = ca.issue("etcd", &["localhost"], &[LOCALHOST], false);
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).expect("write a TLS file");
            path
        };
        let tls = Tls {
            ca_pem: ca.cert_pem(),
            ca_file: write("ca.pem", &ca.cert_pem()),
            cert_file: write("server.pem", &server.cert_pem()),
            key_file: write("server-key.pem", &server.key_pem()),
            client_cert_auth,
            client: ca.issue("weir-testkit", &[], &[], true),
        };
        Etcd::with_dir(dir, Some(tls))
    }

    fn new(tls: Option<Tls>) -> Etcd {
        let dir = unique_dir();
        std::fs::create_dir_all(&dir).expect("create the etcd dir");
        Etcd::with_dir(dir, tls)
    }

    fn with_dir(dir: PathBuf, tls: Option<Tls>) -> Etcd {
        let mut etcd = Etcd {
            client_port: reserve_port(),
            peer_port: reserve_port(),
            dir,
            tls,
            child: None,
            root_password: Mutex::new(None),
        };
        etcd.spawn();
        etcd
    }

    /// The client URL: `http://127.0.0.1:PORT` (`https://` for a TLS server).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.client_port.port
    }

    /// The CA that signed the server certificate (TLS servers).
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// The data directory (the etcd data in `data/`, the server's log in `etcd.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kill the server (SIGKILL) and wait for it to exit. The data is kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the server again (stopping it first if it runs) on the same ports and data, and
    /// wait until it is ready.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn spawn(&mut self) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{}", self.client_port.port);
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port.port);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the etcd log");
        let mut cmd = Command::new(ETCD_BIN);
        cmd.arg("--name")
            .arg("default")
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("default={peer_url}"))
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--logger")
            .arg("zap")
            .arg("--log-outputs")
            .arg("stderr");
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.cert_file)
                .arg("--key-file")
                .arg(&tls.key_file)
                .arg("--trusted-ca-file")
                .arg(&tls.ca_file);
            if tls.client_cert_auth {
                cmd.arg("--client-cert-auth");
            }
        }
        // The environment configures etcd too (ETCD_NAME, ...): keep the caller's out.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD_") {
                cmd.env_remove(k);
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {ETCD_BIN}: {e}"));
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let end = Instant::now() + START_DEADLINE;
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!(
                        "etcd exited during start-up ({status}); log tail:\n{}",
                        self.log_tail(40)
                    );
                }
            }
            let last = match self.health() {
                Ok(true) => return,
                Ok(false) => "health is not true".to_owned(),
                Err(e) => e,
            };
            if Instant::now() >= end {
                self.stop();
                panic!(
                    "etcd at {} not healthy within {START_DEADLINE:?} ({last}); log tail:\n{}",
                    self.endpoint(),
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// One `GET /health`: Ok(true) when etcd says `"health":"true"`.
    fn health(&self) -> Result<bool, String> {
        let addr = SocketAddr::from((LOCALHOST, self.client_port.port));
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .map_err(|e| format!("connect: {e}"))?;
        let timeout = Some(Duration::from_secs(5));
        tcp.set_read_timeout(timeout).map_err(|e| e.to_string())?;
        tcp.set_write_timeout(timeout).map_err(|e| e.to_string())?;
        let request = format!(
            "GET /health HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.client_port.port
        );
        let mut answer = Vec::new();
        match &self.tls {
            None => {
                let mut tcp = tcp;
                tcp.write_all(request.as_bytes())
                    .map_err(|e| format!("write: {e}"))?;
                tcp.read_to_end(&mut answer)
                    .map_err(|e| format!("read: {e}"))?;
            }
            Some(tls) => {
                let connector = tls_connector(tls).map_err(|e| format!("tls setup: {e}"))?;
                let mut s = connector
                    .connect("127.0.0.1", tcp)
                    .map_err(|e| format!("tls: {e}"))?;
                s.write_all(request.as_bytes())
                    .map_err(|e| format!("write: {e}"))?;
                // etcd may close without close_notify: keep what was read.
                let _ = s.read_to_end(&mut answer);
            }
        }
        let text = String::from_utf8_lossy(&answer);
        Ok(text.contains("\"health\":\"true\""))
    }

    /// An etcd-client connection for the helpers.
    async fn client(&self) -> Client {
        let mut options = ConnectOptions::new()
            .with_timeout(Duration::from_secs(10))
            .with_connect_timeout(Duration::from_secs(10));
        if let Some(password) = self.root_password.lock().expect("lock").clone() {
            options = options.with_user("root", password);
        }
        if let Some(tls) = &self.tls {
            let ca = tls.ca_pem.clone();
            let cert = tls.client.cert_pem();
            let key = tls.client.key_pem();
            options = options.with_openssl_tls(
                OpenSslClientConfig::default()
                    .ca_cert_pem(ca.as_bytes())
                    .client_cert_pem_and_key(cert.as_bytes(), key.as_bytes()),
            );
        }
        Client::connect([self.endpoint()], Some(options))
            .await
            .unwrap_or_else(|e| panic!("etcd-client connect to {}: {e}", self.endpoint()))
    }

    /// Put `key` = `value`; returns the revision of the write.
    pub async fn put(&self, key: &str, value: &str) -> i64 {
        let resp = self
            .client()
            .await
            .put(key, value, None)
            .await
            .unwrap_or_else(|e| panic!("etcd put {key}: {e}"));
        resp.header().map(|h| h.revision()).unwrap_or(0)
    }

    /// The value of `key` (as text), if it exists.
    pub async fn get(&self, key: &str) -> Option<String> {
        let resp = self
            .client()
            .await
            .get(key, None)
            .await
            .unwrap_or_else(|e| panic!("etcd get {key}: {e}"));
        resp.kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
    }

    /// Delete `key`; returns the revision after the write.
    pub async fn delete(&self, key: &str) -> i64 {
        let resp = self
            .client()
            .await
            .delete(key, None)
            .await
            .unwrap_or_else(|e| panic!("etcd delete {key}: {e}"));
        resp.header().map(|h| h.revision()).unwrap_or(0)
    }

    /// The current revision of the store.
    pub async fn revision(&self) -> i64 {
        let resp = self
            .client()
            .await
            .get(
                "\0",
                Some(GetOptions::new().with_all_keys().with_count_only()),
            )
            .await
            .unwrap_or_else(|e| panic!("etcd revision: {e}"));
        resp.header().map(|h| h.revision()).unwrap_or(0)
    }

    /// Compact the history up to the current revision (physically: done when this returns);
    /// returns that revision. A watch from an earlier revision then reports the compaction.
    pub async fn compact(&self) -> i64 {
        let revision = self.revision().await;
        self.client()
            .await
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
            .unwrap_or_else(|e| panic!("etcd compact {revision}: {e}"));
        revision
    }

    /// Enable authentication: creates the user `root` with `password` and the role `root`
    /// (etcd enables auth only with both), grants it, and enables auth. When `user` is not
    /// `root`, it is created too with the same `password` and the `root` role (all access).
    /// The helpers use `root` from then on.
    pub async fn enable_auth(&self, user: &str, password: &str) {
        let mut c = self.client().await;
        c.role_add("root")
            .await
            .unwrap_or_else(|e| panic!("etcd role add root: {e}"));
        c.user_add("root", password, None)
            .await
            .unwrap_or_else(|e| panic!("etcd user add root: {e}"));
        c.user_grant_role("root", "root")
            .await
            .unwrap_or_else(|e| panic!("etcd grant root: {e}"));
        if user != "root" {
            c.user_add(user, password, None)
                .await
                .unwrap_or_else(|e| panic!("etcd user add {user}: {e}"));
            c.user_grant_role(user, "root")
                .await
                .unwrap_or_else(|e| panic!("etcd grant {user}: {e}"));
        }
        c.auth_enable()
            .await
            .unwrap_or_else(|e| panic!("etcd auth enable: {e}"));
        *self.root_password.lock().expect("lock") = Some(password.to_owned());
    }
}

/// A blocking OpenSSL client for the health check: trusts the test CA, presents the testkit's
/// client certificate.
fn tls_connector(tls: &Tls) -> Result<openssl::ssl::SslConnector, openssl::error::ErrorStack> {
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())?;
    b.cert_store_mut()
        .add_cert(openssl::x509::X509::from_pem(tls.ca_pem.as_bytes())?)?;
    b.set_certificate(&tls.client.cert)?;
    b.set_private_key(&tls.client.key)?;
    Ok(b.build())
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
