//! Property tests of the access log formatter: arbitrary templates over requests whose every
//! value is arbitrary bytes (what a client controls: the request line, headers; what a
//! backend controls: its headers). Each line is written without a panic, in bounded time, as
//! exactly one line (a value can never start a forged line), and a `json` line always parses
//! back to an object. `PROPTEST_CASES` sets the number of cases (256 by default).

use proptest::prelude::*;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weir_accesslog::{AttemptRecord, Entry, Formatter};
use weir_config::access_log::Template;
use weir_config::LogFormat;

#[derive(Debug, Clone)]
struct Req {
    remote: Option<IpAddr>,
    method: String,
    request_uri: String,
    uri: String,
    version: String,
    host: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    upstream_headers: Vec<(String, Vec<u8>)>,
    status: Option<u16>,
    body: u64,
    time_taken: Duration,
    attempts: Vec<AttemptRecord>,
    strings: [Option<String>; 7],
    at: SystemTime,
}

fn find<'a>(list: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    list.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

impl Entry for Req {
    fn remote_addr(&self) -> Option<IpAddr> {
        self.remote
    }
    fn method(&self) -> &str {
        &self.method
    }
    fn request_uri(&self) -> &str {
        &self.request_uri
    }
    fn uri(&self) -> &str {
        &self.uri
    }
    fn version(&self) -> &str {
        &self.version
    }
    fn host(&self) -> Option<&str> {
        self.host.as_deref()
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
        self.strings[0].as_deref()
    }
    fn upstream_host(&self) -> Option<&str> {
        self.strings[1].as_deref()
    }
    fn upstream_uri(&self) -> Option<&str> {
        self.strings[2].as_deref()
    }
    fn route_id(&self) -> Option<&str> {
        self.strings[3].as_deref()
    }
    fn service_id(&self) -> Option<&str> {
        self.strings[4].as_deref()
    }
    fn consumer_name(&self) -> Option<&str> {
        self.strings[5].as_deref()
    }
    fn request_id(&self) -> Option<&str> {
        self.strings[6].as_deref()
    }
    fn time(&self) -> SystemTime {
        self.at
    }
}

/// Text with the bytes that matter to a log line: quotes, backslashes, control bytes, line
/// ends, non-ASCII.
fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}",
        prop::collection::vec(
            prop::sample::select(
                &[
                    "\n",
                    "\r",
                    "\"",
                    "\\",
                    "\u{0}",
                    "\u{7f}",
                    "é",
                    "\u{1b}[31m",
                    " ",
                    "a",
                    "-",
                    "{",
                    "}",
                    ","
                ][..]
            ),
            0..24
        )
        .prop_map(|p| p.concat()),
    ]
}

fn header_names() -> impl Strategy<Value = String> {
    prop::sample::select(
        &[
            "user-agent",
            "referer",
            "x-tenant",
            "host",
            "x-cache",
            "x-forwarded-for",
        ][..],
    )
    .prop_map(str::to_owned)
}

fn req() -> impl Strategy<Value = Req> {
    let opt = || prop::option::of(hostile());
    (
        (
            prop::option::of(any::<[u8; 4]>().prop_map(IpAddr::from)),
            hostile(),
            hostile(),
            hostile(),
            hostile(),
            opt(),
            prop::collection::vec(
                (header_names(), prop::collection::vec(any::<u8>(), 0..32)),
                0..6,
            ),
            prop::collection::vec(
                (header_names(), prop::collection::vec(any::<u8>(), 0..32)),
                0..4,
            ),
        ),
        (
            prop::option::of(any::<u16>()),
            any::<u64>(),
            any::<u64>().prop_map(Duration::from_nanos),
            prop::collection::vec(
                (
                    any::<[u8; 4]>(),
                    any::<u16>(),
                    prop::option::of(any::<u16>()),
                    any::<u32>(),
                ),
                0..4,
            ),
            [opt(), opt(), opt(), opt(), opt(), opt(), opt()],
            // Any time from the epoch to year ~2500, and far beyond.
            prop_oneof![0u64..16_725_225_600, any::<u64>()],
        ),
    )
        .prop_map(|(a, b)| Req {
            remote: a.0,
            method: a.1,
            request_uri: a.2,
            uri: a.3,
            version: a.4,
            host: a.5,
            headers: a.6,
            upstream_headers: a.7,
            status: b.0,
            body: b.1,
            time_taken: b.2,
            attempts: b
                .3
                .into_iter()
                .map(|(ip, port, status, ms)| AttemptRecord {
                    addr: SocketAddr::from((ip, port)),
                    status,
                    elapsed: Duration::from_millis(u64::from(ms)),
                })
                .collect(),
            strings: b.4,
            at: UNIX_EPOCH
                .checked_add(Duration::from_secs(b.5))
                .unwrap_or(UNIX_EPOCH),
        })
}

/// Templates: every variable, literal text without line ends, `$$`.
fn template() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        prop::sample::select(
            &[
                "${remote_addr}",
                "${remote_user}",
                "${time_local}",
                "${time_iso8601}",
                "${request}",
                "${request_method}",
                "${request_uri}",
                "${uri}",
                "${host}",
                "${status}",
                "${body_bytes_sent}",
                "${request_time}",
                "${http_referer}",
                "${http_user_agent}",
                "${http_x_tenant}",
                "${upstream_addr}",
                "${upstream_status}",
                "${upstream_response_time}",
                "${upstream_scheme}",
                "${upstream_host}",
                "${upstream_uri}",
                "${route_id}",
                "${service_id}",
                "${consumer_name}",
                "${request_id}",
                "${upstream_http_x_cache}",
                "$$",
                "\"",
                " ",
                "[",
                "]",
            ][..]
        )
        .prop_map(str::to_owned),
        "[^\n\r$]{0,8}",
    ];
    prop::collection::vec(piece, 0..20).prop_map(|p| p.concat())
}

const PER_INPUT: Duration = Duration::from_secs(2);

/// CPU time this thread has run so far (Linux: `/proc/thread-self/schedstat`, 0 elsewhere).
/// The per-input bound is on CPU time, not wall time: a thread waiting for a CPU on a loaded
/// machine does not count, so the bound catches loops and blow-ups without depending on load.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

fn line_of(f: &Formatter, r: &Req) -> Vec<u8> {
    let mut out = Vec::new();
    let t = thread_cpu();
    f.format(r, &mut out);
    let took = thread_cpu().saturating_sub(t);
    assert!(took < PER_INPUT, "format took {took:?} of CPU time");
    out
}

/// One line: ends with `\n`, and no value put another line end (or a carriage return) in it.
fn assert_one_line(line: &[u8]) {
    assert_eq!(
        line.last(),
        Some(&b'\n'),
        "{}",
        String::from_utf8_lossy(line)
    );
    let body = &line[..line.len() - 1];
    assert!(
        !body.iter().any(|b| *b == b'\n' || *b == b'\r'),
        "a value broke the line: {:?}",
        String::from_utf8_lossy(line)
    );
}

proptest! {
    #[test]
    fn templates_write_one_line(t in template(), r in req(), offset in any::<i32>()) {
        let tpl = Template::parse(&t).map_err(TestCaseError::fail)?;
        let line = line_of(&Formatter::template(&tpl).with_utc_offset(offset), &r);
        assert_one_line(&line);
    }

    #[test]
    fn default_and_json_formats(r in req()) {
        let line = line_of(&Formatter::new(&LogFormat::Default).with_utc_offset(0), &r);
        assert_one_line(&line);
        let line = line_of(&Formatter::new(&LogFormat::Json).with_utc_offset(0), &r);
        assert_one_line(&line);
        let v: serde_json::Value = serde_json::from_slice(&line)
            .map_err(|e| TestCaseError::fail(format!("{e}: {}", String::from_utf8_lossy(&line))))?;
        prop_assert!(v.is_object());
    }

    /// Templates a stranger could not write but an operator could mistype: any text parses
    /// or fails with a message, never a panic.
    #[test]
    fn any_template_text(t in "\\PC{0,48}", r in req()) {
        if let Ok(tpl) = Template::parse(&t) {
            let _ = line_of(&Formatter::template(&tpl), &r);
        }
    }
}
