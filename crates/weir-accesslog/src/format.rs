//! Rendering one [`Entry`] into one line: the text formats (`default` and templates, one code
//! path) and `json`.

use crate::entry::{AttemptRecord, Entry};
use chrono::{DateTime, FixedOffset, Local, Utc};
use std::cell::RefCell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weir_config::access_log::{Segment, Template, Var};
use weir_config::LogFormat;

/// The keys of a `json` line, in the order they are written: the variables of the `default`
/// format, then the request's method, path and host and Weir's own identifiers. Each key is
/// the variable's name without `$`. This list is stable: keys may be added at the end, never
/// renamed or removed.
pub const JSON_KEYS: [&str; 23] = [
    "remote_addr",
    "remote_user",
    "time_local",
    "http_host",
    "request",
    "status",
    "body_bytes_sent",
    "request_time",
    "http_referer",
    "http_user_agent",
    "upstream_addr",
    "upstream_status",
    "upstream_response_time",
    "upstream_scheme",
    "upstream_host",
    "upstream_uri",
    "request_method",
    "uri",
    "host",
    "route_id",
    "service_id",
    "consumer_name",
    "request_id",
];

/// A compiled `format`: renders entries into lines.
#[derive(Debug, Clone)]
pub struct Formatter {
    kind: Kind,
    zone: Zone,
}

#[derive(Debug, Clone)]
enum Kind {
    Text(Vec<Segment>),
    /// The variables of [`JSON_KEYS`], in order; each key is its variable's name.
    Json(Vec<(String, Var)>),
}

/// The time zone of `$time_local` and `$time_iso8601`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zone {
    Local,
    Fixed(FixedOffset),
}

impl Formatter {
    /// The formatter of `format`, writing times in the local time zone (as nginx does).
    pub fn new(format: &LogFormat) -> Formatter {
        let kind = match format.template() {
            Some(t) => Kind::Text(t.segments().to_vec()),
            None => Kind::Json(
                JSON_KEYS
                    .iter()
                    .filter_map(|k| Var::parse(k).map(|v| ((*k).to_owned(), v)))
                    .collect(),
            ),
        };
        Formatter {
            kind,
            zone: Zone::Local,
        }
    }

    /// The formatter of a template.
    pub fn template(t: &Template) -> Formatter {
        Formatter::new(&LogFormat::Template(t.clone()))
    }

    /// This formatter writing times at a fixed offset east of UTC (`0`: UTC) instead of the
    /// local time zone. Offsets beyond ±24 h are taken as UTC.
    pub fn with_utc_offset(mut self, east_seconds: i32) -> Formatter {
        let utc = FixedOffset::east_opt(0).map_or(Zone::Local, Zone::Fixed);
        self.zone = FixedOffset::east_opt(east_seconds).map_or(utc, Zone::Fixed);
        self
    }

    /// Append the line of `entry`, with its trailing `\n`, to `out`.
    pub fn format(&self, entry: &dyn Entry, out: &mut Vec<u8>) {
        match &self.kind {
            Kind::Text(segments) => {
                for s in segments {
                    match s {
                        Segment::Literal(l) => out.extend_from_slice(l.as_bytes()),
                        Segment::Var(v) => self.text(v, entry, out),
                    }
                }
            }
            Kind::Json(fields) => {
                out.push(b'{');
                for (i, (key, var)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    json_str(key, out);
                    out.push(b':');
                    self.json(var, entry, out);
                }
                out.push(b'}');
            }
        }
        out.push(b'\n');
    }

    /// One variable in a text format: escaped as nginx does, `-` when missing.
    fn text(&self, var: &Var, e: &dyn Entry, out: &mut Vec<u8>) {
        match var {
            Var::RemoteAddr => match e.remote_addr() {
                Some(ip) => put(out, ip),
                None => out.push(b'-'),
            },
            Var::RemoteUser => out.push(b'-'),
            Var::TimeLocal | Var::TimeIso8601 => {
                if !self.time(e.time(), *var == Var::TimeIso8601, out) {
                    out.push(b'-');
                }
            }
            Var::Request => {
                escape(e.method().as_bytes(), out);
                out.push(b' ');
                escape(e.request_uri().as_bytes(), out);
                out.push(b' ');
                escape(e.version().as_bytes(), out);
            }
            Var::RequestMethod => escape(e.method().as_bytes(), out),
            Var::Uri => escape(e.uri().as_bytes(), out),
            Var::RequestUri => escape(e.request_uri().as_bytes(), out),
            Var::Host => text_opt(e.host().map(str::as_bytes), out),
            Var::Status => match e.status() {
                Some(s) => put(out, s),
                None => out.push(b'-'),
            },
            Var::BodyBytesSent => put(out, e.body_bytes_sent()),
            Var::RequestTime => seconds(e.request_time(), out),
            Var::UpstreamAddr => text_list(e.attempts(), out, |a, out| put(out, a.addr)),
            Var::UpstreamStatus => text_list(e.attempts(), out, |a, out| match a.status {
                Some(s) => put(out, s),
                None => out.push(b'-'),
            }),
            Var::UpstreamResponseTime => {
                text_list(e.attempts(), out, |a, out| seconds(a.elapsed, out))
            }
            Var::UpstreamScheme => text_opt(e.upstream_scheme().map(str::as_bytes), out),
            Var::UpstreamHost => text_opt(e.upstream_host().map(str::as_bytes), out),
            Var::UpstreamUri => text_opt(e.upstream_uri().map(str::as_bytes), out),
            Var::RouteId => text_opt(e.route_id().map(str::as_bytes), out),
            Var::ServiceId => text_opt(e.service_id().map(str::as_bytes), out),
            Var::ConsumerName => text_opt(e.consumer_name().map(str::as_bytes), out),
            Var::RequestId => text_opt(e.request_id().map(str::as_bytes), out),
            Var::Http(h) => text_opt(e.request_header(h), out),
            Var::UpstreamHttp(h) => text_opt(e.upstream_header(h), out),
        }
    }

    /// One variable as a JSON value: numbers as numbers, tries as arrays, `null` when
    /// missing.
    fn json(&self, var: &Var, e: &dyn Entry, out: &mut Vec<u8>) {
        match var {
            Var::RemoteAddr => match e.remote_addr() {
                Some(ip) => {
                    out.push(b'"');
                    put(out, ip);
                    out.push(b'"');
                }
                None => null(out),
            },
            Var::RemoteUser => null(out),
            Var::TimeLocal | Var::TimeIso8601 => {
                out.push(b'"');
                if self.time(e.time(), *var == Var::TimeIso8601, out) {
                    out.push(b'"');
                } else {
                    out.pop();
                    null(out);
                }
            }
            Var::Request => {
                out.push(b'"');
                json_inner(e.method(), out);
                out.push(b' ');
                json_inner(e.request_uri(), out);
                out.push(b' ');
                json_inner(e.version(), out);
                out.push(b'"');
            }
            Var::RequestMethod => json_str(e.method(), out),
            Var::Uri => json_str(e.uri(), out),
            Var::RequestUri => json_str(e.request_uri(), out),
            Var::Host => json_opt(e.host(), out),
            Var::Status => match e.status() {
                Some(s) => put(out, s),
                None => null(out),
            },
            Var::BodyBytesSent => put(out, e.body_bytes_sent()),
            Var::RequestTime => seconds(e.request_time(), out),
            Var::UpstreamAddr => json_list(e.attempts(), out, |a, out| {
                out.push(b'"');
                put(out, a.addr);
                out.push(b'"');
            }),
            Var::UpstreamStatus => json_list(e.attempts(), out, |a, out| match a.status {
                Some(s) => put(out, s),
                None => null(out),
            }),
            Var::UpstreamResponseTime => {
                json_list(e.attempts(), out, |a, out| seconds(a.elapsed, out))
            }
            Var::UpstreamScheme => json_opt(e.upstream_scheme(), out),
            Var::UpstreamHost => json_opt(e.upstream_host(), out),
            Var::UpstreamUri => json_opt(e.upstream_uri(), out),
            Var::RouteId => json_opt(e.route_id(), out),
            Var::ServiceId => json_opt(e.service_id(), out),
            Var::ConsumerName => json_opt(e.consumer_name(), out),
            Var::RequestId => json_opt(e.request_id(), out),
            Var::Http(h) => json_bytes(e.request_header(h), out),
            Var::UpstreamHttp(h) => json_bytes(e.upstream_header(h), out),
        }
    }

    /// Write `$time_local` (or `$time_iso8601` with `iso`); false (nothing written) for a
    /// time that cannot be shown.
    fn time(&self, t: SystemTime, iso: bool, out: &mut Vec<u8>) -> bool {
        let secs = match t.duration_since(UNIX_EPOCH) {
            Ok(d) if d.as_secs() <= MAX_SECS => d.as_secs() as i64,
            _ => return false,
        };
        let key = (secs, self.zone);
        let cached = TIMES.try_with(|cell| {
            let mut c = cell.try_borrow_mut().ok()?;
            if c.key != Some(key) {
                let TimeCache {
                    local, iso: iso_s, ..
                } = &mut *c;
                let ok = render(secs, self.zone, local, iso_s);
                c.key = ok.then_some(key);
            }
            c.key?;
            out.extend_from_slice(if iso { &c.iso } else { &c.local }.as_bytes());
            Some(())
        });
        match cached {
            Ok(r) => r.is_some(),
            // Only while the thread is being torn down.
            Err(_) => {
                let (mut local, mut iso_s) = (String::new(), String::new());
                let ok = render(secs, self.zone, &mut local, &mut iso_s);
                if ok {
                    out.extend_from_slice(if iso { &iso_s } else { &local }.as_bytes());
                }
                ok
            }
        }
    }
}

/// 9999-12-31T23:59:59Z: later times are not written.
const MAX_SECS: u64 = 253_402_300_799;

/// The last second each thread formatted: a request formats no date unless the second (or
/// the zone) changed.
struct TimeCache {
    key: Option<(i64, Zone)>,
    local: String,
    iso: String,
}

thread_local! {
    static TIMES: RefCell<TimeCache> = const {
        RefCell::new(TimeCache { key: None, local: String::new(), iso: String::new() })
    };
}

/// Format second `secs` in `zone` both ways; false if it cannot be.
fn render(secs: i64, zone: Zone, local: &mut String, iso: &mut String) -> bool {
    let Some(utc) = DateTime::<Utc>::from_timestamp(secs, 0) else {
        return false;
    };
    let at: DateTime<FixedOffset> = match zone {
        Zone::Local => utc.with_timezone(&Local).fixed_offset(),
        Zone::Fixed(off) => utc.with_timezone(&off),
    };
    local.clear();
    iso.clear();
    write!(local, "{}", at.format("%d/%b/%Y:%H:%M:%S %z")).is_ok()
        && write!(iso, "{}", at.format("%Y-%m-%dT%H:%M:%S%:z")).is_ok()
}

/// Write a `Display` value (numbers, addresses: never need escaping).
fn put(out: &mut Vec<u8>, v: impl std::fmt::Display) {
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{v}");
}

fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"null");
}

/// Seconds with millisecond resolution, as nginx writes times: `0.005`, `12.340`.
fn seconds(d: Duration, out: &mut Vec<u8>) {
    let ms = d.as_millis();
    let _ = write!(out, "{}.{:03}", ms / 1000, ms % 1000);
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// nginx's escaping of variable values: `"`, `\` and bytes below 0x20 or from 0x7f on as
/// `\xHH`.
pub fn escape(s: &[u8], out: &mut Vec<u8>) {
    let needs = |b: u8| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b);
    if !s.iter().any(|b| needs(*b)) {
        out.extend_from_slice(s);
        return;
    }
    for &b in s {
        if needs(b) {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        } else {
            out.push(b);
        }
    }
}

fn text_opt(v: Option<&[u8]>, out: &mut Vec<u8>) {
    match v {
        Some(v) => escape(v, out),
        None => out.push(b'-'),
    }
}

/// The tries joined by `", "`, `-` when there were none.
fn text_list(
    attempts: &[AttemptRecord],
    out: &mut Vec<u8>,
    one: impl Fn(&AttemptRecord, &mut Vec<u8>),
) {
    if attempts.is_empty() {
        out.push(b'-');
    }
    for (i, a) in attempts.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        one(a, out);
    }
}

/// The tries as a JSON array, `null` when there were none.
fn json_list(
    attempts: &[AttemptRecord],
    out: &mut Vec<u8>,
    one: impl Fn(&AttemptRecord, &mut Vec<u8>),
) {
    if attempts.is_empty() {
        return null(out);
    }
    out.push(b'[');
    for (i, a) in attempts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        one(a, out);
    }
    out.push(b']');
}

/// A JSON string.
fn json_str(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    json_inner(s, out);
    out.push(b'"');
}

fn json_opt(s: Option<&str>, out: &mut Vec<u8>) {
    match s {
        Some(s) => json_str(s, out),
        None => null(out),
    }
}

/// Header bytes as a JSON string: bytes that are not UTF-8 become U+FFFD.
fn json_bytes(b: Option<&[u8]>, out: &mut Vec<u8>) {
    match b {
        Some(b) => json_str(&String::from_utf8_lossy(b), out),
        None => null(out),
    }
}

/// The inside of a JSON string: `"`, `\` and control characters escaped, the rest as it is
/// (UTF-8).
fn json_inner(s: &str, out: &mut Vec<u8>) {
    let mut start = 0;
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&b[start..i]);
        if esc.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 15)],
            ]);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&b[start..]);
}
