//! Weir's proxy running in-process on an ephemeral port, with its snapshot handle exposed so
//! tests can swap configurations.

use crate::config::Document;
use crate::ShutdownTrigger;
use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::Session;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use weir_proxy::server::build_server_with;
use weir_proxy::{Hook, HookCtx, SnapshotHandle, WeirProxy};

/// Counts routed requests whose handling has ended: Pingora runs `logging` after it has
/// returned the upstream connection to its pool, so a test that waits for this count before
/// its next request never races the pool (the client sees the response before the proxy has
/// released the connection).
struct Finished(Arc<AtomicU64>);

#[async_trait]
impl Hook for Finished {
    fn name(&self) -> &str {
        "testkit-finished"
    }

    async fn logging(&self, _session: &mut Session, _error: Option<&Error>, _ctx: &mut HookCtx) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

pub struct TestProxy {
    pub addr: SocketAddr,
    /// The control API's address, when the configuration has `control`.
    pub control: Option<SocketAddr>,
    /// The `server.tls_listen` addresses (ephemeral ports), in order.
    pub tls: Vec<SocketAddr>,
    pub handle: Arc<SnapshotHandle>,
    finished: Arc<AtomicU64>,
    trigger: ShutdownTrigger,
    thread: Option<JoinHandle<()>>,
    /// The proxy's pid file and upgrade socket directory.
    dir: std::path::PathBuf,
    /// Declared last: released only after the server thread has stopped.
    _ports: Vec<crate::PortReservation>,
}

impl TestProxy {
    /// Validate `conf` (a [`Conf`](crate::config::Conf) or YAML text) and serve it. Every
    /// listener gets an ephemeral port instead of its configured one: `server.listen` (at
    /// [`addr`](Self::addr)), `server.tls_listen` ([`tls`](Self::tls)), `control.listen`
    /// ([`control`](Self::control)).
    pub fn start(conf: impl Into<Document>) -> TestProxy {
        Self::start_with(conf, &[], WeirProxy::new)
    }

    /// As [`start`](Self::start), accepting the extra `plugins` names in the configuration
    /// and serving it with the proxy `make` builds (hooks, plugins).
    pub fn start_with(
        conf: impl Into<Document>,
        plugins: &[&str],
        make: impl FnOnce(Arc<SnapshotHandle>) -> WeirProxy,
    ) -> TestProxy {
        Self::start_full(conf.into(), plugins, Vec::new(), make)
    }

    /// As [`start`](Self::start), with discovery registries of the test's own registered by
    /// name next to the built-ins (`discovery_type: <name>` is then valid).
    pub fn start_with_registries(
        conf: impl Into<Document>,
        registries: Vec<(&str, Arc<dyn weir_discovery::Registry>)>,
    ) -> TestProxy {
        Self::start_full(conf.into(), &[], registries, WeirProxy::new)
    }

    fn start_full(
        conf: Document,
        plugins: &[&str],
        extra: Vec<(&str, Arc<dyn weir_discovery::Registry>)>,
        make: impl FnOnce(Arc<SnapshotHandle>) -> WeirProxy,
    ) -> TestProxy {
        // Proxy logs go to the test's captured output (shown for failing tests); `RUST_LOG`
        // sets the level, errors only by default.
        let _ = env_logger::builder().is_test(true).try_init();
        let ext = extra
            .iter()
            .fold(weir_config::Extensions::new(), |e, (n, _)| e.discovery(n));
        let ext = plugins.iter().fold(ext, |e, n| e.plugin(n));
        let mut cfg = conf.load(&ext).config;
        // Every port the proxy binds is reserved until it has stopped (see `PortReservation`).
        let mut reserved = Vec::new();
        let mut reserve = || {
            let r = crate::reserve_port();
            let port = r.port;
            reserved.push(r);
            port
        };
        let port = reserve();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        cfg.server.listen = vec![addr];
        cfg.server.threads = 2;
        let tls: Vec<SocketAddr> = cfg
            .server
            .tls_listen
            .iter_mut()
            .map(|l| {
                l.addr = ([127, 0, 0, 1], reserve()).into();
                l.addr
            })
            .collect();
        let control = cfg.control.as_mut().map(|c| {
            c.listen = ([127, 0, 0, 1], reserve()).into();
            c.listen
        });
        // Pid file and upgrade socket; removed when the proxy is dropped.
        let dir = std::env::temp_dir().join(format!("weir-test-{}-{port}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        cfg.server.pid_file = dir.join("weir.pid").display().to_string();
        cfg.server.upgrade_sock = dir.join("upgrade.sock").display().to_string();
        let mut registries = weir_proxy::discovery::registries(&cfg.discovery);
        for (name, r) in extra {
            registries.register(name, r);
        }
        let registries = Arc::new(registries);
        let handle = SnapshotHandle::with_discovery(&cfg.resources, registries);
        let finished = Arc::new(AtomicU64::new(0));
        let weir = make(Arc::clone(&handle)).with_hook(Arc::new(Finished(Arc::clone(&finished))));
        let server = match build_server_with(&cfg, None, weir) {
            Ok(s) => s,
            Err(e) => panic!("cannot build the proxy: {e}"),
        };
        let trigger = ShutdownTrigger::default();
        let t = trigger.clone();
        let thread = std::thread::spawn(move || server.run(t.run_args()));
        let up = crate::wait_for(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()
        });
        assert!(up.is_some(), "proxy did not start listening on {addr}");
        if let Some(c) = control {
            let up = crate::wait_for(Duration::from_secs(10), || {
                TcpStream::connect_timeout(&c, Duration::from_millis(100)).ok()
            });
            assert!(up.is_some(), "control API did not start listening on {c}");
        }
        for t in &tls {
            let up = crate::wait_for(Duration::from_secs(10), || {
                TcpStream::connect_timeout(t, Duration::from_millis(100)).ok()
            });
            assert!(up.is_some(), "TLS listener did not start on {t}");
        }
        TestProxy {
            dir,
            addr,
            control,
            tls,
            handle,
            finished,
            trigger,
            thread: Some(thread),
            _ports: reserved,
        }
    }

    /// Routed requests the proxy has finished with (response sent, upstream connection back in
    /// its pool or closed, in-flight counts released).
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::SeqCst)
    }

    /// Wait until the proxy has finished `n` routed requests: after this, the connection pool
    /// and per-node counters reflect them. Panics after 10 s.
    pub fn wait_finished(&self, n: u64) {
        let done = crate::wait_for(Duration::from_secs(10), || {
            (self.finished() >= n).then_some(())
        });
        assert!(
            done.is_some(),
            "the proxy finished {} of {n} requests within 10 s",
            self.finished()
        );
    }

    /// The bodies of `n` requests to `path` on one connection, counted (a non-200 counts as
    /// `"<status>"`, a transport error as `"error ..."`).
    pub fn count_bodies(&self, path: &str, n: usize) -> std::collections::HashMap<String, usize> {
        let mut c = self.client();
        let mut m = std::collections::HashMap::new();
        for _ in 0..n {
            let key = match c.get(path) {
                Ok(r) if r.status == 200 => r.body,
                Ok(r) => r.status.to_string(),
                Err(e) => format!("error {e}"),
            };
            *m.entry(key).or_insert(0) += 1;
        }
        m
    }

    /// Poll until requests to `path` reach exactly the backends (bodies) or statuses in
    /// `want`; panics after `deadline`.
    pub fn wait_served(&self, path: &str, want: &[&str], deadline: Duration) {
        let want: std::collections::BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        let mut last = std::collections::HashMap::new();
        let ok = crate::wait_for(deadline, || {
            last = self.count_bodies(path, 4 * want.len());
            (last
                .keys()
                .cloned()
                .collect::<std::collections::BTreeSet<_>>()
                == want)
                .then_some(())
        });
        assert!(ok.is_some(), "{path}: wanted {want:?}, last saw {last:?}");
    }

    pub fn client(&self) -> crate::Client {
        crate::Client::new(self.addr)
    }

    /// The control API's address (the configuration must have a `control` block).
    pub fn control_addr(&self) -> SocketAddr {
        self.control
            .expect("the configuration has no `control` block")
    }

    /// `GET /metrics` on the control API, parsed.
    pub fn scrape(&self) -> crate::metrics::Scrape {
        crate::metrics::Scrape::get(self.control_addr())
    }

    /// `GET` a control API path: status and parsed JSON body.
    pub fn control_get(&self, path: &str) -> (u16, serde_json::Value) {
        let addr = self
            .control
            .expect("the configuration has no `control` block");
        let r = crate::Client::new(addr)
            .get(path)
            .expect("control API request");
        let body = serde_json::from_str(&r.body)
            .unwrap_or_else(|e| panic!("control API body is not JSON ({e}): {}", r.body));
        (r.status, body)
    }

    /// Validate `conf` (a [`Conf`](crate::config::Conf) or YAML text) and swap its resources
    /// in.
    pub fn apply(&self, conf: impl Into<Document>) {
        let ext = self
            .handle
            .registries()
            .names()
            .fold(weir_config::Extensions::new(), |e, n| e.discovery(n));
        self.handle.apply(&conf.into().load(&ext).config.resources);
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.trigger.fire();
        if let Some(t) = self.thread.take() {
            // Never let a stuck shutdown hang the test run: wait a bounded time, then detach.
            let done = crate::wait_for(Duration::from_secs(10), || t.is_finished().then_some(()));
            if done.is_some() {
                let _ = t.join();
            } else {
                eprintln!(
                    "proxy on {} did not shut down within 10 s; detached",
                    self.addr
                );
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
