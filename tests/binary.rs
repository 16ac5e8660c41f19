//! The real `weir` binary: serving, reloading on file change and SIGHUP, rejecting an invalid
//! file while serving on, and exiting on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use weir_testkit::{free_port, wait_for, Backend, Client};

struct Weir {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Weir {
    fn start(conf: &Path, port: u16) -> Weir {
        let log = conf.with_extension("log");
        let child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("-c")
            .arg(conf)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn weir");
        let up = wait_for(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(up.is_some(), "weir did not listen on {port}");
        Weir { child, port, log }
    }

    fn get(&self) -> (u16, String) {
        let r = Client::new(([127, 0, 0, 1], self.port).into())
            .get("/")
            .expect("request");
        (r.status, r.body)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok);
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-bin-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn config(dir: &Path, port: u16, backend: &Backend, watch: bool) -> String {
    format!(
        "server:\n  listen: [\"127.0.0.1:{port}\"]\n  threads: 1\n  pid_file: {d}/weir.pid\n  upgrade_sock: {d}/weir.sock\n  grace_period_seconds: 0\n  graceful_shutdown_timeout_seconds: 1\nconfig_source: {{file: {{watch: {watch}}}}}\nroutes: [{{id: r, uri: /*, upstream: {{nodes: {{\"{}\": 1}}}}}}]\n",
        backend.addr,
        d = dir.display()
    )
}

/// Replace the file atomically, as writers should.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

#[test]
fn serves_and_reloads_when_the_file_changes() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let d = dir("watch");
    let conf = d.join("weir.yaml");
    let port = free_port();
    write(&conf, &config(&d, port, &a, true));
    let w = Weir::start(&conf, port);
    assert_eq!(w.get(), (200, "a".into()));

    write(&conf, &config(&d, port, &b, true));
    let switched = wait_for(Duration::from_secs(10), || (w.get().1 == "b").then_some(()));
    assert!(switched.is_some(), "reload not applied:\n{}", w.log());

    // An invalid file is rejected with its errors; the running configuration stays.
    write(
        &conf,
        &format!(
            "{}upstreams: [{{id: u, nodes: {{}}, retires: 1}}]\n",
            config(&d, port, &b, true)
        ),
    );
    let rejected = wait_for(Duration::from_secs(10), || {
        w.log().contains("reload rejected").then_some(())
    });
    assert!(rejected.is_some(), "{}", w.log());
    assert!(
        w.log()
            .contains("upstreams[0] (id \"u\").retires: unknown field"),
        "{}",
        w.log()
    );
    assert_eq!(w.get(), (200, "b".into()));
}

#[test]
fn sighup_reloads_and_sigterm_exits() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let d = dir("hup");
    let conf = d.join("weir.yaml");
    let port = free_port();
    write(&conf, &config(&d, port, &a, false));
    let mut w = Weir::start(&conf, port);
    assert_eq!(w.get(), (200, "a".into()));
    write(&conf, &config(&d, port, &b, false));
    w.signal("-HUP");
    let switched = wait_for(Duration::from_secs(10), || (w.get().1 == "b").then_some(()));
    assert!(switched.is_some(), "SIGHUP did not reload:\n{}", w.log());

    w.signal("-TERM");
    let status = wait_for(Duration::from_secs(15), || {
        w.child.try_wait().ok().flatten()
    });
    assert!(
        status.is_some_and(|s| s.success()),
        "weir did not exit on SIGTERM: {status:?}"
    );
}
