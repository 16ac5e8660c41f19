//! A route's metric cells, resolved when a snapshot compiles.

use super::{node_label, CellLabels, MetricsTables, RouteMetrics};
use crate::upstream::UpstreamRuntime;
use std::collections::HashMap;
use std::sync::Arc;
use weir_config::{HostPattern, Route, UriPattern};

/// `matched_uri`'s value: the pattern as written.
pub(crate) fn uri_label(u: &UriPattern) -> String {
    match u {
        UriPattern::Exact(p) => p.clone(),
        UriPattern::Prefix(p) => format!("{p}*"),
    }
}

/// `matched_host`'s value: the pattern as written (`""` for a route without hosts).
pub(crate) fn host_label(h: Option<&HostPattern>) -> String {
    match h {
        None => String::new(),
        Some(HostPattern::Exact(h)) => h.clone(),
        Some(HostPattern::Wildcard(s)) => format!("*{s}"),
    }
}

/// The cells of `route`, in the router's pair order (see
/// [`Router::find_pair`](crate::router::Router::find_pair)) by node of `upstream`, then "no
/// node".
pub(crate) fn route_metrics(
    m: &MetricsTables,
    route: &Route,
    upstream: Option<&UpstreamRuntime>,
    consumer_ids: &Arc<HashMap<Arc<str>, u32>>,
) -> RouteMetrics {
    let hosts: Vec<Option<&HostPattern>> = if route.hosts.is_empty() {
        vec![None]
    } else {
        route.hosts.iter().map(Some).collect()
    };
    let nodes: Vec<String> = upstream
        .map(|u| u.nodes.iter().map(|n| node_label(n.addr.ip())).collect())
        .unwrap_or_default();
    let slots = nodes.len() + 1;
    let service = route
        .service_id
        .as_ref()
        .map_or(String::new(), |s| s.as_str().to_owned());
    let mut cells = Vec::with_capacity(hosts.len() * route.uris.len() * slots);
    for h in &hosts {
        let matched_host = host_label(*h);
        for u in &route.uris {
            let matched_uri = uri_label(u);
            for node in nodes.iter().chain(std::iter::once(&String::new())) {
                cells.push(m.cell(CellLabels {
                    route: route.id.as_str().to_owned(),
                    matched_uri: matched_uri.clone(),
                    matched_host: matched_host.clone(),
                    service: service.clone(),
                    node: node.clone(),
                }));
            }
        }
    }
    RouteMetrics {
        cells: cells.into_boxed_slice(),
        slots,
        consumer_ids: Arc::clone(consumer_ids),
    }
}
