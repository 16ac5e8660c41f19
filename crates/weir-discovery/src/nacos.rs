//! The Nacos registry (in progress).

use std::time::Duration;

/// One entry of `discovery.nacos.host`.
#[derive(Debug, Clone)]
pub struct NacosHost {
    /// `http(s)://host:port`, without credentials.
    pub base_url: String,
    /// `user:pass@` of the URL: enables login. The password is a secret.
    pub credentials: Option<(String, String)>,
}

/// `discovery.nacos`.
#[derive(Debug, Clone)]
pub struct NacosConfig {
    pub hosts: Vec<NacosHost>,
    /// Starts and ends with `/` (default `/nacos/v1/`).
    pub prefix: String,
    pub fetch_interval: Duration,
    /// For instances without a weight.
    pub weight: u32,
    pub connect_timeout: Duration,
    pub send_timeout: Duration,
    pub read_timeout: Duration,
    /// Both non-empty: requests are signed. `secret_key` is a secret.
    pub access_key: String,
    pub secret_key: String,
}
