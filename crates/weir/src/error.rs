//! [`Error`]: why a [`Weir`](crate::Weir) could not be built or started.

use weir_config::ConfigErrors;

/// Why a [`Weir`](crate::Weir) could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No configuration was given to the builder.
    #[error("no configuration: call config_file, config_yaml or config on the builder")]
    NoConfig,
    /// The configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration is invalid: every error, each with its path (and line, for YAML).
    #[error("{}", .0.joined())]
    Config(ConfigErrors),
    /// A listener could not be set up (e.g. its certificate does not load).
    #[error("{0}")]
    Listener(String),
    /// A registration the builder could not take (e.g. an algorithm under a built-in's name).
    #[error("{0}")]
    Registration(String),
    /// The Admin API needs the configuration's resources as written (a file or YAML text).
    #[error(
        "the Admin API needs the configuration as a file or as YAML text, not as a Config value"
    )]
    AdminWithoutSource,
}
