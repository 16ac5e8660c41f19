//! Weir's configuration model.
//!
//! The schema of `docs/configuration.md` (process settings, routes, services, upstreams, consumers,
//! certificates) with every default and validation rule documented in `docs/`, validated into a
//! typed model. Validation never stops at the first error: [`load_file`] and [`parse_yaml`]
//! return every error of a document at once, in document order, each naming its path:
//!
//! ```text
//! upstreams[1] (id "billing").keepalive_pool.size (line 12, column 7): must be >= 1, got 0
//! ```
//!
//! Documents read from YAML text place every error at the line and column of the offending
//! key or value ([`position`]); documents given as a value tree (Admin API bodies) name the
//! path only.
//!
//! This crate has no Pingora dependency, so company tooling can validate configurations
//! without building a proxy.
//!
//! ```
//! let yaml = r#"
//! upstreams:
//!   - id: u1
//!     nodes: {"127.0.0.1:8080": 1}
//! "#;
//! let loaded = weir_config::parse_yaml(yaml).unwrap();
//! let u = &loaded.config.resources.upstreams[0];
//! assert_eq!(u.lb, weir_config::LbType::RoundRobin);
//! assert_eq!(u.keepalive_pool.size, 320);
//! ```

pub mod access_log;
pub mod cert;
pub mod common;
pub mod discovery;
pub mod document;
pub mod error;
pub mod extensions;
pub mod path;
pub mod plugins;
pub mod position;
pub mod reader;
pub mod route;
pub mod server;
pub mod upstream;

pub use access_log::{AccessLogConfig, LogFormat, LogTarget};
pub use cert::{CaCertificate, Certificate, Secret};
pub use common::{Id, Meta, Method, Timeout};
pub use discovery::{DiscoveryConfig, DiscoveryType, DnsConfig, Env};
pub use document::{
    parse_document, parse_document_ext, parse_document_with, Config, Loaded, Resources,
    RESOURCE_KINDS,
};
pub use error::{ConfigError, ConfigErrors};
pub use extensions::{Extensions, Schema, Typed};
pub use path::Path;
pub use plugins::{Consumer, KeyAuth, Plugins, RequestId, RequestIdAlgorithm};
pub use route::{HostPattern, Route, Service, UriPattern};
pub use server::{
    AdminConfig, ConfigSource, ControlConfig, EtcdSource, EtcdTls, ServerConfig, TlsListen,
};
pub use upstream::{
    ActiveCheck, CheckType, Checks, ClientCert, FailurePercentage, HashOn, KeepalivePool, LbType,
    Limits, Node, OutlierDetection, PassHost, PassiveCheck, RetryBudget, Scheme, SlowStart,
    Targets, Upstream, UpstreamTls, Var,
};

use serde_json::Value;

/// Parse YAML text into a value tree. Syntax errors carry line and column.
pub fn yaml_to_value(text: &str) -> Result<Value, ConfigErrors> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_yaml_ng::from_str::<Value>(text).map_err(|e| {
        let msg = e.to_string();
        // serde_yaml appends its own " at line L column C"; say it once, our way.
        let msg = match msg.find(" at line ") {
            Some(i) => msg[..i].to_owned(),
            None => msg,
        };
        let reason = match e.location() {
            Some(l) => format!(
                "YAML syntax error at line {}, column {}: {msg}",
                l.line(),
                l.column()
            ),
            None => format!("YAML syntax error: {msg}"),
        };
        ConfigErrors::single(&Path::root(), reason)
    })
}

/// Validate a YAML document. Errors and warnings carry their line and column.
pub fn parse_yaml(text: &str) -> Result<Loaded, ConfigErrors> {
    parse_yaml_with_plugins(text, &[])
}

/// Validate a YAML document that may enable the embedder's own `plugins` by name.
pub fn parse_yaml_with_plugins(text: &str, plugins: &[&str]) -> Result<Loaded, ConfigErrors> {
    let ext = plugins
        .iter()
        .fold(Extensions::new(), |e, name| e.plugin(name));
    parse_yaml_ext(text, &ext)
}

/// Validate a YAML document that may use the embedder's registered names in `ext`.
pub fn parse_yaml_ext(text: &str, ext: &Extensions) -> Result<Loaded, ConfigErrors> {
    match parse_document_ext(&yaml_to_value(text)?, ext) {
        Ok(mut loaded) => {
            error::locate(&mut loaded.warnings, text);
            Ok(loaded)
        }
        Err(mut errors) => {
            errors.locate(text);
            Err(errors)
        }
    }
}

/// Read and validate a configuration file.
pub fn load_file(path: impl AsRef<std::path::Path>) -> Result<Loaded, ConfigErrors> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(
            &Path::root(),
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    parse_yaml(&text)
}
