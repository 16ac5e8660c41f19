//! The Kubernetes registry (in progress).

/// `namespace_selector`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceSelector {
    Equal(String),
    NotEqual(String),
    /// Full-match regular expressions: a namespace matching any is kept.
    Match(Vec<String>),
    /// Full-match regular expressions: a namespace matching any is dropped.
    NotMatch(Vec<String>),
}

/// One cluster of `discovery.kubernetes` (an object, or each item of the array form).
#[derive(Debug, Clone)]
pub struct KubernetesCluster {
    /// `Some` in the multi-cluster (array) form: services are keyed `<id>/<ns>/<name>:<port>`.
    pub id: Option<String>,
    /// `http(s)://host:port` of the API server (environment variables already expanded).
    pub base_url: String,
    pub ssl_verify: bool,
    /// PEM file of the CA that signed the API server's certificate, for `ssl_verify`.
    pub ca_file: Option<String>,
    /// A literal token (a secret), else the token is read from `token_file` for every request.
    pub token: Option<String>,
    pub token_file: String,
    pub namespace_selector: Option<NamespaceSelector>,
    pub label_selector: Option<String>,
    pub default_weight: u32,
    pub watch_endpoint_slices: bool,
}

/// `discovery.kubernetes`: one or more clusters.
#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    pub clusters: Vec<KubernetesCluster>,
}
