//! `server.access_log`: where the access log goes and what one line of it looks like
//! (docs/observability.md#access-log).
//!
//! ```yaml
//! server:
//!   access_log:
//!     path: /var/log/weir/access.log   # a file, "stderr" or "off"
//!     format: default                  # "default", "json" or a template
//! ```
//!
//! Without the block there is no access log. With it, `path` defaults to `stderr` and
//! `format` to `default`, APISIX's default format ([`DEFAULT_FORMAT`]). Any other `format`
//! is a template of nginx-style variables (`$status`, `${request_time}`, `$http_user_agent`),
//! parsed here into a [`Template`] so that an unknown variable is a validation error with its
//! path and the renderer never meets a name it does not know.

use crate::path::Path;
use crate::reader::{self, Cx, Obj};
use serde::{Serialize, Serializer};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;

/// APISIX's default access log format (nginx's `combined` plus the upstream fields).
pub const DEFAULT_FORMAT: &str = "$remote_addr - $remote_user [$time_local] $http_host \"$request\" $status $body_bytes_sent $request_time \"$http_referer\" \"$http_user_agent\" $upstream_addr $upstream_status $upstream_response_time \"$upstream_scheme://$upstream_host$upstream_uri\"";

/// `server.access_log`. The default (no block in the file) is no access log.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AccessLogConfig {
    /// `path`: where lines go.
    #[serde(rename = "path")]
    pub target: LogTarget,
    /// `format`: what one line looks like.
    pub format: LogFormat,
}

impl AccessLogConfig {
    /// Whether lines are written at all.
    pub fn is_on(&self) -> bool {
        self.target != LogTarget::Off
    }
}

/// Where access log lines go: `path`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LogTarget {
    /// `off`: no access log.
    #[default]
    Off,
    /// `stderr`: the process's standard error, shared with the error log.
    Stderr,
    /// A file, opened in append mode and created when missing. Stored absolute: a relative
    /// `path` is resolved against the working directory when the configuration is loaded.
    File(PathBuf),
}

impl Serialize for LogTarget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LogTarget::Off => s.serialize_str("off"),
            LogTarget::Stderr => s.serialize_str("stderr"),
            LogTarget::File(p) => s.serialize_str(&p.to_string_lossy()),
        }
    }
}

/// What one access log line looks like: `format`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// `default`: [`DEFAULT_FORMAT`].
    #[default]
    Default,
    /// `json`: one JSON object per line (its keys are listed in docs/observability.md).
    Json,
    /// Any other string: a template of literal text and variables.
    Template(Template),
}

impl LogFormat {
    /// The template a text format renders: [`default_template`] for `default`, the
    /// configured one for a template, `None` for `json`.
    pub fn template(&self) -> Option<&Template> {
        match self {
            LogFormat::Default => Some(default_template()),
            LogFormat::Json => None,
            LogFormat::Template(t) => Some(t),
        }
    }
}

impl Serialize for LogFormat {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            LogFormat::Default => s.serialize_str("default"),
            LogFormat::Json => s.serialize_str("json"),
            LogFormat::Template(t) => s.serialize_str(t.source()),
        }
    }
}

/// [`DEFAULT_FORMAT`], parsed once: `default` goes through the same renderer as any
/// template.
pub fn default_template() -> &'static Template {
    static DEFAULT: OnceLock<Template> = OnceLock::new();
    // The constant parses (a unit test says so); the fallback only keeps this panic-free.
    DEFAULT.get_or_init(|| Template::parse(DEFAULT_FORMAT).unwrap_or_default())
}

/// A variable of the access log. Names are nginx's (and APISIX's), written `$name` or
/// `${name}` in a template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Var {
    /// `$remote_addr`: the client's IP address.
    RemoteAddr,
    /// `$remote_user`: the basic-auth user; Weir has none, so always missing (`-`).
    RemoteUser,
    /// `$time_local`: `01/Dec/2026:16:38:26 +0000`, local time zone.
    TimeLocal,
    /// `$time_iso8601`: `2026-12-01T16:38:26+00:00`, local time zone.
    TimeIso8601,
    /// `$request`: the request line, `GET /path?q HTTP/1.1`.
    Request,
    /// `$request_method`.
    RequestMethod,
    /// `$uri`: the path, without the query.
    Uri,
    /// `$request_uri`: path and query as the client sent them.
    RequestUri,
    /// `$host`: the host the request is for, without a port.
    Host,
    /// `$status`: the status sent to the client.
    Status,
    /// `$body_bytes_sent`: response body bytes sent to the client.
    BodyBytesSent,
    /// `$request_time`: seconds from the first byte read from the client to the log write,
    /// millisecond resolution (`0.005`).
    RequestTime,
    /// `$upstream_addr`: every attempt's `ip:port`, joined by `", "`.
    UpstreamAddr,
    /// `$upstream_status`: every attempt's status, joined by `", "`.
    UpstreamStatus,
    /// `$upstream_response_time`: every attempt's duration in seconds, joined by `", "`.
    UpstreamResponseTime,
    /// `$upstream_scheme`: `http`, `https`, `grpc` or `grpcs`.
    UpstreamScheme,
    /// `$upstream_host`: the Host sent upstream.
    UpstreamHost,
    /// `$upstream_uri`: the path and query sent upstream.
    UpstreamUri,
    /// `$route_id`.
    RouteId,
    /// `$service_id`.
    ServiceId,
    /// `$consumer_name`: the authenticated consumer's `username`.
    ConsumerName,
    /// `$request_id`: the id of the `request-id` plugin.
    RequestId,
    /// `$http_<name>`: a request header. Holds the header name in lowercase with `-`
    /// (`$http_user_agent` → `user-agent`).
    Http(String),
    /// `$upstream_http_<name>`: a header of the upstream's response, named as for
    /// [`Var::Http`].
    UpstreamHttp(String),
}

/// The fixed variables and their names, in the order the docs list them.
const NAMED: &[(&str, Var)] = &[
    ("remote_addr", Var::RemoteAddr),
    ("remote_user", Var::RemoteUser),
    ("time_local", Var::TimeLocal),
    ("time_iso8601", Var::TimeIso8601),
    ("request", Var::Request),
    ("request_method", Var::RequestMethod),
    ("uri", Var::Uri),
    ("request_uri", Var::RequestUri),
    ("host", Var::Host),
    ("status", Var::Status),
    ("body_bytes_sent", Var::BodyBytesSent),
    ("request_time", Var::RequestTime),
    ("upstream_addr", Var::UpstreamAddr),
    ("upstream_status", Var::UpstreamStatus),
    ("upstream_response_time", Var::UpstreamResponseTime),
    ("upstream_scheme", Var::UpstreamScheme),
    ("upstream_host", Var::UpstreamHost),
    ("upstream_uri", Var::UpstreamUri),
    ("route_id", Var::RouteId),
    ("service_id", Var::ServiceId),
    ("consumer_name", Var::ConsumerName),
    ("request_id", Var::RequestId),
];

/// Characters of a variable name (nginx's).
fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// `user_Agent` → `user-agent`: the header a `$http_` suffix names.
fn header_name(suffix: &str) -> String {
    suffix
        .bytes()
        .map(|b| match b {
            b'_' => '-',
            b => char::from(b.to_ascii_lowercase()),
        })
        .collect()
}

impl Var {
    /// The variable called `name` (without `$`), or `None` if there is none. Header
    /// variables need a non-empty name after `http_` / `upstream_http_`.
    pub fn parse(name: &str) -> Option<Var> {
        if let Some((_, v)) = NAMED.iter().find(|(n, _)| *n == name) {
            return Some(v.clone());
        }
        if !name.bytes().all(is_name_byte) {
            return None;
        }
        if let Some(h) = name.strip_prefix("upstream_http_") {
            return (!h.is_empty()).then(|| Var::UpstreamHttp(header_name(h)));
        }
        if let Some(h) = name.strip_prefix("http_") {
            return (!h.is_empty()).then(|| Var::Http(header_name(h)));
        }
        None
    }

    /// The variable's name without `$` (`status`, `http_user_agent`): how templates write
    /// it, and its key in the `json` format.
    pub fn name(&self) -> String {
        match self {
            Var::Http(h) => format!("http_{}", h.replace('-', "_")),
            Var::UpstreamHttp(h) => format!("upstream_http_{}", h.replace('-', "_")),
            fixed => NAMED
                .iter()
                .find(|(_, v)| v == fixed)
                .map(|(n, _)| (*n).to_owned())
                .unwrap_or_default(),
        }
    }
}

/// One piece of a [`Template`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Text written as it is.
    Literal(String),
    /// A variable's value, escaped.
    Var(Var),
}

/// A parsed text format: literal text and variables, in order.
///
/// Syntax (nginx's): `$name` takes the longest run of `[A-Za-z0-9_]` after the `$`;
/// `${name}` delimits the name, so a variable can be followed by letters (`${status}ok`).
/// `$$` writes one `$`. A `$` followed by anything else, an unclosed `${`, and an unknown
/// name are errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
    source: String,
}

impl Template {
    /// Parse a template. The error names the offending variable or position, e.g.
    /// `unknown variable $foo`.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut segments = Vec::new();
        let mut lit = String::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] != b'$' {
                // Copy up to the next `$` (a char boundary: `$` is ASCII).
                let end = s[i..].find('$').map_or(s.len(), |n| i + n);
                lit.push_str(&s[i..end]);
                i = end;
                continue;
            }
            match b.get(i + 1) {
                Some(b'$') => {
                    lit.push('$');
                    i += 2;
                }
                Some(b'{') => {
                    let rest = &s[i + 2..];
                    let end = rest
                        .find('}')
                        .ok_or_else(|| format!("unclosed \"${{\" at byte {i}"))?;
                    let name = &rest[..end];
                    if name.is_empty() || !name.bytes().all(is_name_byte) {
                        return Err(format!("invalid variable name \"${{{name}}}\""));
                    }
                    let var =
                        Var::parse(name).ok_or_else(|| format!("unknown variable ${{{name}}}"))?;
                    flush(&mut segments, &mut lit);
                    segments.push(Segment::Var(var));
                    i += 2 + end + 1;
                }
                _ => {
                    let n = b[i + 1..].iter().take_while(|c| is_name_byte(**c)).count();
                    if n == 0 {
                        return Err(format!(
                            "\"$\" at byte {i} must start a variable name (write \"$$\" for a literal \"$\")"
                        ));
                    }
                    let name = &s[i + 1..i + 1 + n];
                    let var =
                        Var::parse(name).ok_or_else(|| format!("unknown variable ${name}"))?;
                    flush(&mut segments, &mut lit);
                    segments.push(Segment::Var(var));
                    i += 1 + n;
                }
            }
        }
        flush(&mut segments, &mut lit);
        Ok(Template {
            segments,
            source: s.to_owned(),
        })
    }

    /// The pieces, in order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The text the template was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether any piece is a variable.
    pub fn has_vars(&self) -> bool {
        self.segments.iter().any(|s| matches!(s, Segment::Var(_)))
    }
}

fn flush(segments: &mut Vec<Segment>, lit: &mut String) {
    if !lit.is_empty() {
        segments.push(Segment::Literal(std::mem::take(lit)));
    }
}

/// Read `server.access_log`. Errors are recorded in `cx`; what could not be read keeps its
/// default.
pub fn parse_access_log(v: &Value, p: &Path, cx: &mut Cx) -> AccessLogConfig {
    let Some(mut o) = Obj::of(v, p, cx) else {
        return AccessLogConfig::default();
    };
    let target = match o.take("path") {
        Some((v, pp)) => parse_target(v, &pp, cx).unwrap_or_default(),
        None => LogTarget::Stderr,
    };
    let format = match o.take("format") {
        Some((v, fp)) => parse_format(v, &fp, cx).unwrap_or_default(),
        None => LogFormat::Default,
    };
    o.finish(cx);
    AccessLogConfig { target, format }
}

fn parse_target(v: &Value, p: &Path, cx: &mut Cx) -> Option<LogTarget> {
    let s = reader::string(v, p, cx)?;
    match s {
        "off" => return Some(LogTarget::Off),
        "stderr" => return Some(LogTarget::Stderr),
        _ => {}
    }
    if s.is_empty() {
        cx.err(p, "must be a file path, \"stderr\" or \"off\", got \"\"");
        return None;
    }
    if s.contains('\0') {
        cx.err(p, "must not contain a NUL character");
        return None;
    }
    if s.ends_with('/') {
        cx.err(p, format!("must name a file, not a directory, got {s:?}"));
        return None;
    }
    let given = PathBuf::from(s);
    // Absolute: a daemon's working directory is `/`.
    let path = if given.is_absolute() {
        given
    } else {
        std::env::current_dir()
            .map(|d| d.join(&given))
            .unwrap_or(given)
    };
    if path.is_dir() {
        cx.err(p, format!("must name a file, {s:?} is a directory"));
        return None;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            cx.err(
                p,
                format!("directory {:?} does not exist", dir.to_string_lossy()),
            );
            return None;
        }
    }
    Some(LogTarget::File(path))
}

fn parse_format(v: &Value, p: &Path, cx: &mut Cx) -> Option<LogFormat> {
    let s = reader::string(v, p, cx)?;
    match s {
        "default" => return Some(LogFormat::Default),
        "json" => return Some(LogFormat::Json),
        _ => {}
    }
    match Template::parse(s) {
        // A string without a variable is almost always a misspelt `default` or `json`.
        Ok(t) if !t.has_vars() => {
            cx.err(
                p,
                format!(
                    "must be default, json or a template with at least one variable, got {s:?}"
                ),
            );
            None
        }
        Ok(t) => Some(LogFormat::Template(t)),
        Err(e) => {
            cx.err(p, e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> (AccessLogConfig, Vec<String>) {
        let mut cx = Cx::default();
        let c = parse_access_log(
            &v,
            &Path::root().field("server").field("access_log"),
            &mut cx,
        );
        (c, cx.errors.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn the_default_format_parses_into_its_variables() {
        let t = Template::parse(DEFAULT_FORMAT).expect("default parses");
        assert_eq!(default_template(), &t);
        let vars: Vec<String> = t
            .segments()
            .iter()
            .filter_map(|s| match s {
                Segment::Var(v) => Some(v.name()),
                Segment::Literal(_) => None,
            })
            .collect();
        assert_eq!(
            vars,
            [
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
            ]
        );
        assert_eq!(t.segments()[1], Segment::Literal(" - ".into()));
        assert_eq!(t.source(), DEFAULT_FORMAT);
    }

    #[test]
    fn variables_by_name() {
        assert_eq!(
            Var::parse("http_user_agent"),
            Some(Var::Http("user-agent".into()))
        );
        assert_eq!(
            Var::parse("http_X_Request_ID"),
            Some(Var::Http("x-request-id".into()))
        );
        assert_eq!(
            Var::parse("upstream_http_content_type"),
            Some(Var::UpstreamHttp("content-type".into()))
        );
        assert_eq!(Var::parse("http_"), None);
        assert_eq!(Var::parse("upstream_http_"), None);
        assert_eq!(Var::parse("foo"), None);
        assert_eq!(Var::parse("time_iso8601"), Some(Var::TimeIso8601));
        for (name, v) in NAMED {
            assert_eq!(Var::parse(name).as_ref(), Some(v));
            assert_eq!(&v.name(), name);
        }
        assert_eq!(Var::Http("user-agent".into()).name(), "http_user_agent");
        assert_eq!(
            Var::UpstreamHttp("x-cache".into()).name(),
            "upstream_http_x_cache"
        );
    }

    #[test]
    fn template_syntax() {
        let t = Template::parse("${status}ok $$ $uri-x é").expect("parses");
        assert_eq!(
            t.segments(),
            [
                Segment::Var(Var::Status),
                Segment::Literal("ok $ ".into()),
                Segment::Var(Var::Uri),
                Segment::Literal("-x é".into()),
            ]
        );
        assert_eq!(
            Template::parse("$remote_addr $foo").unwrap_err(),
            "unknown variable $foo"
        );
        assert_eq!(
            Template::parse("${statusok}").unwrap_err(),
            "unknown variable ${statusok}"
        );
        assert_eq!(
            Template::parse("$statusok").unwrap_err(),
            "unknown variable $statusok"
        );
        assert_eq!(
            Template::parse("a ${status").unwrap_err(),
            "unclosed \"${\" at byte 2"
        );
        assert_eq!(
            Template::parse("${}").unwrap_err(),
            "invalid variable name \"${}\""
        );
        assert_eq!(
            Template::parse("${http_x-y}").unwrap_err(),
            "invalid variable name \"${http_x-y}\""
        );
        assert_eq!(
            Template::parse("cost: 5$").unwrap_err(),
            "\"$\" at byte 7 must start a variable name (write \"$$\" for a literal \"$\")"
        );
        assert!(!Template::parse("plain").expect("parses").has_vars());
    }

    #[test]
    fn block_defaults() {
        assert_eq!(AccessLogConfig::default().target, LogTarget::Off);
        assert!(!AccessLogConfig::default().is_on());
        let (c, errs) = parse(json!({}));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(c.target, LogTarget::Stderr);
        assert_eq!(c.format, LogFormat::Default);
        let (c, errs) = parse(json!({"path": "off", "format": "json"}));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(c.target, LogTarget::Off);
        assert_eq!(c.format, LogFormat::Json);
        let (c, errs) = parse(json!({"path": null, "format": null}));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(c.target, LogTarget::Stderr);
    }

    #[test]
    fn files_and_templates() {
        let dir = std::env::temp_dir();
        let file = dir.join("weir-access-log-config-test.log");
        let (c, errs) = parse(json!({"path": file.to_str(), "format": "$status ${uri}"}));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(c.target, LogTarget::File(file));
        let Some(t) = c.format.template() else {
            panic!("a template")
        };
        assert_eq!(t.segments().len(), 3);
        assert_eq!(
            serde_json::to_value(&c).expect("json")["format"],
            json!("$status ${uri}")
        );
        // Relative paths are made absolute.
        let (c, errs) = parse(json!({"path": "weir-access.log"}));
        assert!(errs.is_empty(), "{errs:?}");
        let LogTarget::File(p) = c.target else {
            panic!("a file")
        };
        assert!(p.is_absolute(), "{p:?}");
        assert!(p.ends_with("weir-access.log"));
    }

    #[test]
    fn errors_name_the_path() {
        let dir = std::env::temp_dir();
        let (c, errs) = parse(json!({
            "path": "/nonexistent-weir-dir/access.log",
            "format": "$remote_addr $foo",
            "rotate": true,
        }));
        assert_eq!(c.target, LogTarget::Off);
        assert_eq!(
            errs,
            [
                "server.access_log.path: directory \"/nonexistent-weir-dir\" does not exist",
                "server.access_log.format: unknown variable $foo",
                "server.access_log.rotate: unknown field",
            ]
        );
        let (_, errs) = parse(json!({"path": dir.to_str(), "format": "jsno"}));
        assert_eq!(
            errs,
            [
                format!(
                    "server.access_log.path: must name a file, {:?} is a directory",
                    dir.to_string_lossy()
                ),
                "server.access_log.format: must be default, json or a template with at least one variable, got \"jsno\"".to_owned(),
            ]
        );
        let (_, errs) = parse(json!({"path": "", "format": 1}));
        assert_eq!(
            errs,
            [
                "server.access_log.path: must be a file path, \"stderr\" or \"off\", got \"\"",
                "server.access_log.format: must be a string, got 1",
            ]
        );
        let (_, errs) = parse(json!({"path": "logs/"}));
        assert_eq!(
            errs,
            ["server.access_log.path: must name a file, not a directory, got \"logs/\""]
        );
        let (_, errs) = parse(json!("stderr"));
        assert_eq!(
            errs,
            ["server.access_log: must be an object, got \"stderr\""]
        );
    }
}
