//! The Kubernetes registry: finds a Service's ready addresses through the API server's
//! Endpoints (or, with `watch_endpoint_slices`, EndpointSlices) and keeps them current with a
//! watch.
//!
//! Per cluster: list every object in pages of 120 (`GET /api/v1/endpoints?limit=120…` or
//! `/apis/discovery.k8s.io/v1/endpointslices?…`), then watch from the list's resourceVersion
//! (newline-delimited JSON events over a chunked response, each moving the resourceVersion).
//! A watch that ends is started again from the last resourceVersion; after 8 watches in a row,
//! or when the server says the resourceVersion expired (410), the cluster lists again. A
//! complete list replaces everything the cluster had, so services absent from it are gone.
//! Requests carry `Authorization: Bearer <token>` (a literal `token`, else `token_file` read
//! again for every request, so a rotated service-account token is picked up) and
//! `Accept: application/json`. `namespace_selector` `equal`/`not_equal` become a
//! `fieldSelector`; `match`/`not_match` are full-match regular expressions applied here;
//! `label_selector` is sent as `labelSelector`.
//!
//! Mapping: the service key is `<namespace>/<name>:<port>`, or `<id>/<namespace>/<name>:<port>`
//! with several clusters (one task per cluster, each cluster's keys prefixed by its id), where
//! `<port>` is the port's name, or its number when it has none. Each port of an Endpoints subset
//! gets that subset's `addresses` (never `notReadyAddresses`); an EndpointSlice contributes the
//! addresses of its endpoints whose `conditions.ready` is true, and the slices of one Service
//! (same namespace and `kubernetes.io/service-name` label) are merged; a slice without the label
//! is ignored. Every node has `default_weight` and priority 0; nodes are sorted by host, then
//! port. A port whose addresses are all not ready is a known service without nodes; a deleted
//! object (or one with no subsets) removes its services: both answer 503.
//!
//! Invariants: a failed request (connection error, timeout, non-2xx, malformed JSON) never
//! changes what a cluster published; the loop backs off 1, 2, 4 … s up to 40 s and lists again.
//! Invalid addresses and ports are skipped with a warning. The token never appears in logs,
//! errors or [`Registry::config_dump`].
//!
//! Why not the `kube` crate: the list/watch contract above (page size, bookmarks, the
//! randomised `timeoutSeconds`, relisting after 8 watches or a 410) and reading the token file
//! for every request are the behaviour we promise, and are simpler to keep exact over plain
//! HTTP than through kube's own runtime; `k8s-openapi` would also add a large build for the two
//! object kinds read here.

mod mapping;
mod parse;
mod watch;

use crate::feed::Feed;
use crate::registry::Registry;
use async_trait::async_trait;
use mapping::{Mapper, NsFilter};
use parse::Kind;
use serde_json::{json, Value};
use std::sync::Arc;
use watch::{ClusterLoop, Sink};

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
#[derive(Clone)]
pub struct KubernetesCluster {
    /// `Some` in the multi-cluster (array) form: services are keyed `<id>/<ns>/<name>:<port>`.
    pub id: Option<String>,
    /// `http(s)://host:port` of the API server (environment variables already expanded).
    pub base_url: String,
    pub ssl_verify: bool,
    /// PEM file of the CA that signed the API server's certificate, for `ssl_verify`.
    pub ca_file: Option<String>,
    /// A literal token (a secret), else the token is read from `token_file` for every request.
    /// An empty token sends no `Authorization` header (e.g. through `kubectl proxy`).
    pub token: Option<String>,
    pub token_file: String,
    pub namespace_selector: Option<NamespaceSelector>,
    pub label_selector: Option<String>,
    pub default_weight: u32,
    pub watch_endpoint_slices: bool,
}

impl std::fmt::Debug for KubernetesCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesCluster")
            .field("id", &self.id)
            .field("base_url", &self.base_url)
            .field("ssl_verify", &self.ssl_verify)
            .field("ca_file", &self.ca_file)
            .field("token", &self.token.as_ref().map(|_| crate::MASK))
            .field("token_file", &self.token_file)
            .field("namespace_selector", &self.namespace_selector)
            .field("label_selector", &self.label_selector)
            .field("default_weight", &self.default_weight)
            .field("watch_endpoint_slices", &self.watch_endpoint_slices)
            .finish()
    }
}

/// `discovery.kubernetes`: one or more clusters.
#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    pub clusters: Vec<KubernetesCluster>,
}

/// The Kubernetes registry (see the module documentation).
#[derive(Debug)]
pub struct Kubernetes {
    config: KubernetesConfig,
}

impl Kubernetes {
    pub fn new(config: KubernetesConfig) -> Kubernetes {
        Kubernetes { config }
    }

    pub fn config(&self) -> &KubernetesConfig {
        &self.config
    }
}

/// The label of a cluster in errors and logs.
fn label(c: &KubernetesCluster) -> String {
    match &c.id {
        Some(id) => format!("kubernetes cluster {id}"),
        None => "kubernetes".to_owned(),
    }
}

/// The mapper of a cluster; an invalid `namespace_selector` pattern is an error.
fn mapper(c: &KubernetesCluster) -> Result<Mapper, String> {
    Ok(Mapper {
        kind: if c.watch_endpoint_slices {
            Kind::EndpointSlices
        } else {
            Kind::Endpoints
        },
        weight: c.default_weight,
        filter: NsFilter::new(c.namespace_selector.as_ref())?,
        label_selector: c.label_selector.clone(),
    })
}

#[async_trait]
impl Registry for Kubernetes {
    async fn run(&self, feed: Arc<Feed>) {
        let sink = Arc::new(Sink::new(feed, self.config.clusters.len()));
        let mut tasks = tokio::task::JoinSet::new();
        for (slot, cfg) in self.config.clusters.iter().enumerate() {
            let label = label(cfg);
            match mapper(cfg) {
                Ok(mapper) => {
                    let l = ClusterLoop {
                        cfg: cfg.clone(),
                        mapper,
                        slot,
                        label,
                    };
                    tasks.spawn(l.run(Arc::clone(&sink)));
                }
                // A configuration this cluster can never work with: say so once, load nothing.
                Err(e) => sink.feed.failed(format!("{label}: {e}")),
            }
        }
        // The loops never end; dropping `tasks` (at shutdown) aborts them.
        while tasks.join_next().await.is_some() {}
        std::future::pending::<()>().await;
    }

    fn config_dump(&self) -> Value {
        let dumps: Vec<Value> = self.config.clusters.iter().map(dump_cluster).collect();
        match (dumps.len(), self.config.clusters.first()) {
            (1, Some(c)) if c.id.is_none() => dumps.into_iter().next().unwrap_or(Value::Null),
            _ => Value::Array(dumps),
        }
    }
}

/// One cluster as the control API shows it, the token masked.
fn dump_cluster(c: &KubernetesCluster) -> Value {
    let url = reqwest::Url::parse(&c.base_url).ok();
    let mut service = json!({
        "schema": url.as_ref().map(|u| u.scheme().to_owned()),
        "host": url.as_ref().and_then(|u| u.host_str().map(str::to_owned)),
        "port": url.as_ref().and_then(|u| u.port_or_known_default()).map(|p| p.to_string()),
        "ssl_verify": c.ssl_verify,
    });
    if let (Some(ca), Some(o)) = (&c.ca_file, service.as_object_mut()) {
        o.insert("ca_file".into(), json!(ca));
    }
    let mut client = json!({"token_file": c.token_file});
    if let (Some(_), Some(o)) = (&c.token, client.as_object_mut()) {
        o.insert("token".into(), json!(crate::MASK));
    }
    let ns = c.namespace_selector.as_ref().map(|s| match s {
        NamespaceSelector::Equal(n) => json!({"equal": n}),
        NamespaceSelector::NotEqual(n) => json!({"not_equal": n}),
        NamespaceSelector::Match(l) => json!({"match": l}),
        NamespaceSelector::NotMatch(l) => json!({"not_match": l}),
    });
    let mut out = json!({
        "service": service,
        "client": client,
        "default_weight": c.default_weight,
        "watch_endpoint_slices": c.watch_endpoint_slices,
    });
    if let Some(o) = out.as_object_mut() {
        if let Some(id) = &c.id {
            o.insert("id".into(), json!(id));
        }
        if let Some(ns) = ns {
            o.insert("namespace_selector".into(), ns);
        }
        if let Some(l) = &c.label_selector {
            o.insert("label_selector".into(), json!(l));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(id: Option<&str>) -> KubernetesCluster {
        KubernetesCluster {
            id: id.map(str::to_owned),
            base_url: "https://10.96.0.1:443".into(),
            ssl_verify: false,
            ca_file: None,
            token: Some("s3cr3t-token".into()),
            token_file: "/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
            namespace_selector: Some(NamespaceSelector::Match(vec!["shop".into()])),
            label_selector: Some("app=cart".into()),
            default_weight: 50,
            watch_endpoint_slices: false,
        }
    }

    #[test]
    fn config_dump_masks_the_token() {
        let k = Kubernetes::new(KubernetesConfig {
            clusters: vec![cluster(None)],
        });
        assert_eq!(
            k.config_dump(),
            json!({
                "service": {"schema": "https", "host": "10.96.0.1", "port": "443", "ssl_verify": false},
                "client": {"token": "******",
                           "token_file": "/var/run/secrets/kubernetes.io/serviceaccount/token"},
                "namespace_selector": {"match": ["shop"]},
                "label_selector": "app=cart",
                "default_weight": 50,
                "watch_endpoint_slices": false,
            })
        );
        let multi = Kubernetes::new(KubernetesConfig {
            clusters: vec![cluster(Some("east")), cluster(Some("west"))],
        });
        let d = multi.config_dump();
        assert_eq!(d[0]["id"], "east");
        assert_eq!(d[1]["id"], "west");
        assert!(!d.to_string().contains("s3cr3t"));
        assert!(!format!("{:?}", multi.config()).contains("s3cr3t"));
    }

    #[test]
    fn mappers_follow_the_config() {
        let mut c = cluster(None);
        let m = mapper(&c).unwrap();
        assert_eq!((m.kind, m.weight), (Kind::Endpoints, 50));
        c.watch_endpoint_slices = true;
        c.namespace_selector = Some(NamespaceSelector::NotMatch(vec!["[".into()]));
        assert!(mapper(&c).is_err());
        c.namespace_selector = None;
        assert_eq!(mapper(&c).unwrap().kind, Kind::EndpointSlices);
        assert_eq!(label(&cluster(Some("east"))), "kubernetes cluster east");
        assert_eq!(label(&cluster(None)), "kubernetes");
    }
}
