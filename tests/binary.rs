//! The real `weir` binary: serving, reloading on file change and SIGHUP, rejecting an invalid
//! file while serving on, and exiting on SIGTERM as soon as nothing is in flight.

use std::path::{Path, PathBuf};
use std::time::Duration;
use weir_testkit::{reserve_port, wait_for, Backend, Client, Mode, WeirProcess};

type Weir = WeirProcess;

fn start(conf: &Path, port: u16) -> Weir {
    WeirProcess::start(env!("CARGO_BIN_EXE_weir"), conf, port)
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("weir-bin-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}

fn config(dir: &Path, port: u16, backend: &Backend, watch: bool) -> String {
    config_with_grace(dir, port, backend, watch, 0)
}

fn config_with_grace(dir: &Path, port: u16, backend: &Backend, watch: bool, grace: u64) -> String {
    format!(
        "server:\n  listen: [\"127.0.0.1:{port}\"]\n  threads: 1\n  pid_file: {d}/weir.pid\n  upgrade_sock: {d}/weir.sock\n  grace_period_seconds: {grace}\n  graceful_shutdown_timeout_seconds: 1\nconfig_source: {{file: {{watch: {watch}}}}}\nroutes: [{{id: r, uri: /*, upstream: {{nodes: {{\"{}\": 1}}}}}}]\n",
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
    let reserved = reserve_port();
    let port = reserved.port;
    write(&conf, &config(&d, port, &a, true));
    let w = start(&conf, port);
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
        w.log().contains("reload rejected (1 error)").then_some(())
    });
    assert!(rejected.is_some(), "{}", w.log());
    assert!(
        w.log()
            .contains("upstreams[0] (id \"u\").retires (line 10, column 32): unknown field"),
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
    let reserved = reserve_port();
    let port = reserved.port;
    write(&conf, &config(&d, port, &a, false));
    let mut w = start(&conf, port);
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

/// How long the shutdown tests wait for the process to exit: far less than their 60 s grace
/// period, so an exit within it shows the process did not wait the grace period out.
const EXIT_DEADLINE: Duration = Duration::from_secs(20);

fn wait_exit(w: &mut Weir) -> Option<std::process::ExitStatus> {
    wait_for(EXIT_DEADLINE, || w.child.try_wait().ok().flatten())
}

#[test]
fn sigterm_with_nothing_in_flight_exits_without_waiting_the_grace_period() {
    let a = Backend::start("a");
    let d = dir("term-idle");
    let conf = d.join("weir.yaml");
    let reserved = reserve_port();
    let port = reserved.port;
    write(&conf, &config_with_grace(&d, port, &a, false, 60));
    let mut w = start(&conf, port);
    // An idle keepalive client connection does not hold the shutdown up.
    let mut idle = Client::new(([127, 0, 0, 1], port).into());
    let r = idle.get("/").expect("request");
    // The status line carries the standard reason phrase, as the backend wrote it.
    assert_eq!((r.status, r.reason.as_str()), (200, "OK"));
    w.signal("-TERM");
    let status = wait_exit(&mut w);
    assert!(
        status.is_some_and(|s| s.success()),
        "weir did not exit on SIGTERM with nothing in flight: {status:?}\n{}",
        w.log()
    );
    assert!(
        w.log().contains("graceful shutdown complete"),
        "{}",
        w.log()
    );
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_exits() {
    let a = Backend::start("a");
    a.set_mode(Mode::Hold);
    let d = dir("term-busy");
    let conf = d.join("weir.yaml");
    let reserved = reserve_port();
    let port = reserved.port;
    write(&conf, &config_with_grace(&d, port, &a, false, 60));
    let mut w = start(&conf, port);
    let client = std::thread::spawn(move || {
        Client::new(([127, 0, 0, 1], port).into())
            .get("/slow")
            .map(|r| (r.status, r.body))
    });
    let held = wait_for(Duration::from_secs(10), || (a.holding() == 1).then_some(()));
    assert!(held.is_some(), "the request never reached the backend");
    w.signal("-TERM");
    let draining = wait_for(Duration::from_secs(10), || {
        w.log()
            .contains("graceful shutdown: waiting for")
            .then_some(())
    });
    assert!(
        draining.is_some(),
        "no graceful shutdown began:\n{}",
        w.log()
    );
    assert!(
        w.child.try_wait().ok().flatten().is_none(),
        "weir exited with a request in flight:\n{}",
        w.log()
    );
    // New connections are refused once the shutdown began.
    let refused = wait_for(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .is_err()
            .then_some(())
    });
    assert!(refused.is_some(), "the listener still accepts");
    a.release();
    let answer = client.join().expect("client thread");
    assert_eq!(
        answer.expect("the request in flight is answered"),
        (200, "a".to_owned())
    );
    let status = wait_exit(&mut w);
    assert!(
        status.is_some_and(|s| s.success()),
        "weir did not exit once the request was done: {status:?}\n{}",
        w.log()
    );
}

#[test]
fn sigterm_stops_at_the_end_of_the_grace_period_when_a_request_outlives_it() {
    let a = Backend::start("a");
    a.set_mode(Mode::Hold);
    let d = dir("term-grace");
    let conf = d.join("weir.yaml");
    let reserved = reserve_port();
    let port = reserved.port;
    write(&conf, &config_with_grace(&d, port, &a, false, 1));
    let mut w = start(&conf, port);
    let client = std::thread::spawn(move || {
        Client::new(([127, 0, 0, 1], port).into())
            .get("/forever")
            .map(|r| r.status)
    });
    let held = wait_for(Duration::from_secs(10), || (a.holding() == 1).then_some(()));
    assert!(held.is_some(), "the request never reached the backend");
    w.signal("-TERM");
    let status = wait_exit(&mut w);
    assert!(
        status.is_some_and(|s| s.success()),
        "weir did not stop at the end of its grace period: {status:?}\n{}",
        w.log()
    );
    // The request that outlived the grace period was cut, not answered.
    assert!(client.join().expect("client thread").is_err());
    a.release();
}
