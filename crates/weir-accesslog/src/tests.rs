use crate::*;
use serde_json::{json, Value};
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use weir_config::access_log::Template;
use weir_config::{AccessLogConfig, LogFormat, LogTarget};

/// A request with every value set (`full`) or none (`bare`).
#[derive(Clone)]
struct Fake {
    remote: Option<IpAddr>,
    method: &'static str,
    request_uri: &'static str,
    uri: &'static str,
    version: &'static str,
    host: Option<&'static str>,
    headers: Vec<(&'static str, &'static [u8])>,
    upstream_headers: Vec<(&'static str, &'static [u8])>,
    status: Option<u16>,
    body: u64,
    time_taken: Duration,
    attempts: Vec<AttemptRecord>,
    scheme: Option<&'static str>,
    upstream_host: Option<&'static str>,
    upstream_uri: Option<&'static str>,
    route: Option<&'static str>,
    service: Option<&'static str>,
    consumer: Option<&'static str>,
    request_id: Option<&'static str>,
    at: SystemTime,
}

/// 2026-12-01T16:38:26Z
const AT: u64 = 1_796_143_106;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

impl Fake {
    fn full() -> Fake {
        Fake {
            remote: Some(IpAddr::from([192, 0, 2, 7])),
            method: "GET",
            request_uri: "/api/items?id=1",
            uri: "/api/items",
            version: "HTTP/1.1",
            host: Some("example.com"),
            headers: vec![
                ("host", b"example.com:9080"),
                ("referer", b"https://ref.example/"),
                ("user-agent", b"curl/8.0"),
                ("x-tenant", b"acme"),
            ],
            upstream_headers: vec![("x-cache", b"HIT")],
            status: Some(200),
            body: 1234,
            time_taken: Duration::from_micros(5_678),
            attempts: vec![AttemptRecord {
                addr: addr("10.0.0.1:8080"),
                status: Some(200),
                elapsed: Duration::from_millis(4),
            }],
            scheme: Some("http"),
            upstream_host: Some("example.com"),
            upstream_uri: Some("/items?id=1"),
            route: Some("r1"),
            service: Some("s1"),
            consumer: Some("jack"),
            request_id: Some("4f7d0c2e-1b0e-4a8e-9d1e-2f6b3c4d5e6f"),
            at: UNIX_EPOCH + Duration::from_secs(AT),
        }
    }

    fn bare() -> Fake {
        Fake {
            remote: None,
            method: "GET",
            request_uri: "/",
            uri: "/",
            version: "HTTP/1.1",
            host: None,
            headers: vec![],
            upstream_headers: vec![],
            status: None,
            body: 0,
            time_taken: Duration::ZERO,
            attempts: vec![],
            scheme: None,
            upstream_host: None,
            upstream_uri: None,
            route: None,
            service: None,
            consumer: None,
            request_id: None,
            at: UNIX_EPOCH + Duration::from_secs(AT),
        }
    }
}

fn find<'a>(h: &'a [(&'static str, &'static [u8])], name: &str) -> Option<&'a [u8]> {
    h.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

impl Entry for Fake {
    fn remote_addr(&self) -> Option<IpAddr> {
        self.remote
    }
    fn method(&self) -> &str {
        self.method
    }
    fn request_uri(&self) -> &str {
        self.request_uri
    }
    fn uri(&self) -> &str {
        self.uri
    }
    fn version(&self) -> &str {
        self.version
    }
    fn host(&self) -> Option<&str> {
        self.host
    }
    fn request_header(&self, name: &str) -> Option<&[u8]> {
        find(&self.headers, name)
    }
    fn upstream_header(&self, name: &str) -> Option<&[u8]> {
        find(&self.upstream_headers, name)
    }
    fn status(&self) -> Option<u16> {
        self.status
    }
    fn body_bytes_sent(&self) -> u64 {
        self.body
    }
    fn request_time(&self) -> Duration {
        self.time_taken
    }
    fn attempts(&self) -> &[AttemptRecord] {
        &self.attempts
    }
    fn upstream_scheme(&self) -> Option<&str> {
        self.scheme
    }
    fn upstream_host(&self) -> Option<&str> {
        self.upstream_host
    }
    fn upstream_uri(&self) -> Option<&str> {
        self.upstream_uri
    }
    fn route_id(&self) -> Option<&str> {
        self.route
    }
    fn service_id(&self) -> Option<&str> {
        self.service
    }
    fn consumer_name(&self) -> Option<&str> {
        self.consumer
    }
    fn request_id(&self) -> Option<&str> {
        self.request_id
    }
    fn time(&self) -> SystemTime {
        self.at
    }
}

/// The line of `e` in `format`, times in UTC.
fn line(format: &LogFormat, e: &Fake) -> String {
    let mut out = Vec::new();
    Formatter::new(format)
        .with_utc_offset(0)
        .format(e, &mut out);
    String::from_utf8(out).expect("utf-8")
}

fn tpl(s: &str) -> LogFormat {
    LogFormat::Template(Template::parse(s).expect("template"))
}

fn json_line(e: &Fake) -> Value {
    let l = line(&LogFormat::Json, e);
    assert!(
        l.ends_with('\n') && !l[..l.len() - 1].contains('\n'),
        "{l:?}"
    );
    serde_json::from_str(&l).expect("valid JSON")
}

#[test]
fn default_format_full_and_bare() {
    assert_eq!(
        line(&LogFormat::Default, &Fake::full()),
        "192.0.2.7 - - [01/Dec/2026:16:38:26 +0000] example.com:9080 \"GET /api/items?id=1 HTTP/1.1\" 200 1234 0.005 \"https://ref.example/\" \"curl/8.0\" 10.0.0.1:8080 200 0.004 \"http://example.com/items?id=1\"\n"
    );
    assert_eq!(
        line(&LogFormat::Default, &Fake::bare()),
        "- - - [01/Dec/2026:16:38:26 +0000] - \"GET / HTTP/1.1\" - 0 0.000 \"-\" \"-\" - - - \"-://--\"\n"
    );
}

#[test]
fn every_template_variable() {
    let f = tpl(
        "$time_iso8601|$request_method|$uri|$request_uri|$host|$route_id|$service_id|$consumer_name|$request_id|$http_x_tenant|$http_X_Tenant|$upstream_http_x_cache|$upstream_scheme|$remote_user",
    );
    assert_eq!(
        line(&f, &Fake::full()),
        "2026-12-01T16:38:26+00:00|GET|/api/items|/api/items?id=1|example.com|r1|s1|jack|4f7d0c2e-1b0e-4a8e-9d1e-2f6b3c4d5e6f|acme|acme|HIT|http|-\n"
    );
    assert_eq!(
        line(&f, &Fake::bare()),
        "2026-12-01T16:38:26+00:00|GET|/|/|-|-|-|-|-|-|-|-|-|-\n"
    );
}

#[test]
fn braces_let_a_variable_be_followed_by_letters() {
    let f = tpl("${status}ok ${request_time}s $$${body_bytes_sent}");
    assert_eq!(line(&f, &Fake::full()), "200ok 0.005s $1234\n");
}

#[test]
fn every_try_is_listed() {
    let mut e = Fake::full();
    e.attempts = vec![
        AttemptRecord {
            addr: addr("10.0.0.1:8080"),
            status: None,
            elapsed: Duration::from_millis(1_002),
        },
        AttemptRecord {
            addr: addr("[2001:db8::1]:80"),
            status: Some(502),
            elapsed: Duration::from_micros(30_999),
        },
        AttemptRecord {
            addr: addr("10.0.0.3:8080"),
            status: Some(200),
            elapsed: Duration::from_millis(7),
        },
    ];
    let f = tpl("$upstream_addr|$upstream_status|$upstream_response_time");
    assert_eq!(
        line(&f, &e),
        "10.0.0.1:8080, [2001:db8::1]:80, 10.0.0.3:8080|-, 502, 200|1.002, 0.030, 0.007\n"
    );
    let j = json_line(&e);
    assert_eq!(
        j["upstream_addr"],
        json!(["10.0.0.1:8080", "[2001:db8::1]:80", "10.0.0.3:8080"])
    );
    assert_eq!(j["upstream_status"], json!([null, 502, 200]));
    assert_eq!(j["upstream_response_time"], json!([1.002, 0.03, 0.007]));
}

#[test]
fn text_values_are_escaped_as_nginx_does() {
    let mut e = Fake::full();
    e.request_uri = "/a\"b\\c\u{1}";
    e.headers = vec![("user-agent", b"x\"y\n\x7f\xff\xc3\xa9 ok")];
    let f = tpl("\"$request\" \"$http_user_agent\"");
    assert_eq!(
        line(&f, &e),
        "\"GET /a\\x22b\\x5Cc\\x01 HTTP/1.1\" \"x\\x22y\\x0A\\x7F\\xFF\\xC3\\xA9 ok\"\n"
    );
    // Literal text is written as it is.
    assert_eq!(line(&tpl("é \" $status"), &e), "é \" 200\n");
}

#[test]
fn json_full() {
    let j = json_line(&Fake::full());
    let keys: Vec<&str> = j
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, JSON_KEYS);
    assert_eq!(
        j,
        json!({
            "remote_addr": "192.0.2.7",
            "remote_user": null,
            "time_local": "01/Dec/2026:16:38:26 +0000",
            "http_host": "example.com:9080",
            "request": "GET /api/items?id=1 HTTP/1.1",
            "status": 200,
            "body_bytes_sent": 1234,
            "request_time": 0.005,
            "http_referer": "https://ref.example/",
            "http_user_agent": "curl/8.0",
            "upstream_addr": ["10.0.0.1:8080"],
            "upstream_status": [200],
            "upstream_response_time": [0.004],
            "upstream_scheme": "http",
            "upstream_host": "example.com",
            "upstream_uri": "/items?id=1",
            "request_method": "GET",
            "uri": "/api/items",
            "host": "example.com",
            "route_id": "r1",
            "service_id": "s1",
            "consumer_name": "jack",
            "request_id": "4f7d0c2e-1b0e-4a8e-9d1e-2f6b3c4d5e6f",
        })
    );
    // Numbers are written as nginx writes them.
    let raw = line(&LogFormat::Json, &Fake::full());
    assert!(
        raw.contains("\"status\":200,\"body_bytes_sent\":1234,\"request_time\":0.005,"),
        "{raw}"
    );
}

#[test]
fn json_missing_values_are_null() {
    let j = json_line(&Fake::bare());
    for k in JSON_KEYS {
        let want = match k {
            "time_local" => json!("01/Dec/2026:16:38:26 +0000"),
            "request" => json!("GET / HTTP/1.1"),
            "request_method" => json!("GET"),
            "uri" => json!("/"),
            "body_bytes_sent" => json!(0),
            "request_time" => json!(0.0),
            _ => Value::Null,
        };
        assert_eq!(j[k], want, "{k}");
    }
}

#[test]
fn json_strings_are_escaped_and_bad_utf8_is_replaced() {
    let mut e = Fake::full();
    e.request_uri = "/a\"b\\c\u{1}\t\u{7f}é";
    e.headers = vec![("user-agent", b"x\xffy\n"), ("referer", b"\"</script>")];
    let j = json_line(&e);
    assert_eq!(j["request"], json!("GET /a\"b\\c\u{1}\t\u{7f}é HTTP/1.1"));
    assert_eq!(j["http_user_agent"], json!("x\u{fffd}y\n"));
    assert_eq!(j["http_referer"], json!("\"</script>"));
    let raw = line(&LogFormat::Json, &e);
    assert!(
        raw.contains(r#""GET /a\"b\\c\u0001\t\u007Fé HTTP/1.1""#),
        "{raw}"
    );
}

#[test]
fn times_out_of_range_are_missing() {
    let mut e = Fake::full();
    e.at = UNIX_EPOCH - Duration::from_secs(1);
    assert_eq!(line(&tpl("[$time_local] $time_iso8601"), &e), "[-] -\n");
    assert_eq!(json_line(&e)["time_local"], Value::Null);
}

#[test]
fn time_zones_and_the_per_thread_cache() {
    let e = Fake::full();
    let f = tpl("$time_local $time_iso8601");
    let mut out = Vec::new();
    let east = Formatter::new(&f).with_utc_offset(5 * 3600 + 1800);
    east.format(&e, &mut out);
    // The same second in another zone is not served from the cache of the first.
    Formatter::new(&f).with_utc_offset(0).format(&e, &mut out);
    let mut later = e.clone();
    later.at += Duration::from_secs(61);
    Formatter::new(&f)
        .with_utc_offset(-8 * 3600)
        .format(&later, &mut out);
    assert_eq!(
        String::from_utf8(out).expect("utf-8"),
        "01/Dec/2026:22:08:26 +0530 2026-12-01T22:08:26+05:30\n\
         01/Dec/2026:16:38:26 +0000 2026-12-01T16:38:26+00:00\n\
         01/Dec/2026:08:39:27 -0800 2026-12-01T08:39:27-08:00\n"
    );
    // The local zone gives a well-formed time as well.
    let local = line_local(&f, &e);
    assert_eq!(
        local.len(),
        "01/Dec/2026:16:38:26 +0000 2026-12-01T16:38:26+00:00\n".len(),
        "{local}"
    );
}

fn line_local(format: &LogFormat, e: &Fake) -> String {
    let mut out = Vec::new();
    Formatter::new(format).format(e, &mut out);
    String::from_utf8(out).expect("utf-8")
}

/// A writer that shares what it got, and can be held up.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("lock").clone()).expect("utf-8")
    }
}

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn lines_reach_the_writer_and_drop_drains() {
    let cap = Capture::default();
    let log = AccessLog::with_formatter(
        Formatter::new(&tpl("$status $uri")).with_utc_offset(0),
        Box::new(cap.clone()),
        DEFAULT_BUFFER_BYTES,
    )
    .expect("start");
    let mut e = Fake::full();
    for i in 0..100u16 {
        e.status = Some(200 + i);
        log.log(&e);
    }
    assert!(log.flush(WAIT));
    assert_eq!(log.written(), 100);
    assert_eq!(log.dropped(), 0);
    let text = cap.text();
    assert_eq!(text.lines().count(), 100);
    assert!(
        text.starts_with("200 /api/items\n201 /api/items\n"),
        "{text}"
    );
    // Lines queued just before the last handle goes are written all the same.
    for _ in 0..50 {
        log.log(&e);
    }
    drop(log);
    assert_eq!(cap.text().lines().count(), 150);
}

/// A writer stuck until released, like a file on a dead disk.
struct Stalled {
    entered: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
    inner: Capture,
}

impl Write for Stalled {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let _ = self.entered.send(());
        let _ = self.release.recv();
        self.inner.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_full_buffer_drops_and_counts_without_blocking() {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let cap = Capture::default();
    let writer = Stalled {
        entered: entered_tx,
        release: release_rx,
        inner: cap.clone(),
    };
    let format = tpl("$request_id $uri");
    let log = AccessLog::with_writer(&format, Box::new(writer), 1000).expect("start");
    let e = Fake::full();
    let one = line(&format, &e).len();
    log.log(&e);
    // The writer holds the first line and is stuck writing it.
    entered.recv_timeout(WAIT).expect("the writer writes");
    let started = Instant::now();
    for _ in 0..10_000 {
        log.log(&e);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "logging blocked for {took:?}"
    );
    let fit = (1000 / one) as u64;
    assert_eq!(log.dropped(), 10_000 - fit);
    assert_eq!(log.written(), 0);
    // Released, the writer writes what the buffer held and nothing more.
    for _ in 0..3 {
        let _ = release.send(());
    }
    assert!(log.flush(WAIT));
    assert_eq!(log.written(), 1 + fit);
    assert_eq!(cap.text().lines().count() as u64, 1 + fit);
    drop(release);
}

/// A writer whose every write fails, like a full disk.
struct Failing;

impl Write for Failing {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::other("No space left on device"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn failed_writes_count_their_lines_as_dropped() {
    let log = AccessLog::with_writer(&LogFormat::Json, Box::new(Failing), 1 << 16).expect("start");
    for _ in 0..20 {
        log.log(&Fake::full());
    }
    assert!(log.flush(WAIT));
    assert_eq!(log.written(), 0);
    assert_eq!(log.dropped(), 20);
    assert!(!log.wait_written(1, Duration::from_millis(50)));
}

#[test]
fn off_starts_nothing_and_stderr_starts() {
    assert!(AccessLog::start(&AccessLogConfig::default())
        .expect("off")
        .is_none());
    let cfg = AccessLogConfig {
        target: LogTarget::Stderr,
        format: LogFormat::Default,
    };
    let log = AccessLog::start(&cfg).expect("stderr").expect("on");
    log.reopen();
    log.log_line(b"weir-accesslog test line on stderr\n");
    assert!(log.wait_written(1, WAIT));
}

/// A fresh directory for one test, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("weir-accesslog-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_file_is_appended_to_and_reopened_after_a_rename() {
    let dir = TempDir::new("reopen");
    let path = dir.0.join("access.log");
    std::fs::write(&path, "old line\n").expect("write");
    let cfg = AccessLogConfig {
        target: LogTarget::File(path.clone()),
        format: tpl("$status"),
    };
    let log = AccessLog::start(&cfg).expect("open").expect("on");
    let mut e = Fake::full();
    log.log(&e);
    assert!(log.wait_written(1, WAIT));
    // logrotate: move the file away, then signal.
    let rotated = dir.0.join("access.log.1");
    std::fs::rename(&path, &rotated).expect("rename");
    e.status = Some(201);
    log.log(&e); // still to the open (renamed) file, or to the new one if the writer is late
    assert!(log.wait_written(2, WAIT));
    log.reopen();
    e.status = Some(202);
    log.log(&e);
    assert!(log.wait_written(3, WAIT));
    drop(log);
    assert_eq!(
        std::fs::read_to_string(&rotated).expect("rotated"),
        "old line\n200\n201\n"
    );
    assert_eq!(std::fs::read_to_string(&path).expect("new"), "202\n");
}

#[test]
fn a_reopen_without_traffic_creates_the_file_at_once() {
    let dir = TempDir::new("reopen-idle");
    let path = dir.0.join("access.log");
    let cfg = AccessLogConfig {
        target: LogTarget::File(path.clone()),
        format: LogFormat::Json,
    };
    let log = AccessLog::start(&cfg).expect("open").expect("on");
    std::fs::rename(&path, dir.0.join("access.log.1")).expect("rename");
    log.reopen();
    let deadline = Instant::now() + WAIT;
    while !path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(path.exists());
}

#[test]
fn a_file_that_cannot_be_opened_fails_at_start() {
    let cfg = AccessLogConfig {
        target: LogTarget::File("/nonexistent-weir-dir/access.log".into()),
        format: LogFormat::Default,
    };
    let err = AccessLog::start(&cfg).expect_err("no such directory");
    assert!(
        err.to_string()
            .starts_with("cannot open access log /nonexistent-weir-dir/access.log:"),
        "{err}"
    );
}

#[test]
fn many_threads_log_whole_lines() {
    let cap = Capture::default();
    let log =
        AccessLog::with_writer(&LogFormat::Json, Box::new(cap.clone()), 1 << 22).expect("start");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let log = log.clone();
            std::thread::spawn(move || {
                let e = Fake::full();
                for _ in 0..500 {
                    log.log(&e);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("join");
    }
    assert!(log.flush(WAIT));
    assert_eq!(log.written() + log.dropped(), 2000);
    let text = cap.text();
    assert_eq!(text.lines().count() as u64, log.written());
    for l in text.lines() {
        serde_json::from_str::<Value>(l).expect("each line is one JSON object");
    }
}
