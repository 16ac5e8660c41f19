//! Health for the data path: a compiled upstream's checker and passive thresholds, built from
//! `checks` (docs/health-checks.md), and the passive reports of §5.5.

use pingora::prelude::Error;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use weir_config::{ActiveCheck, Node, PassHost, PassiveCheck, Upstream};
use weir_health::{
    transport_report, Checker, ProbeSpec, Source, StatusClasses, StatusSet, Target, TargetId,
    TargetSpec, Thresholds,
};

/// The health side of a compiled upstream with `checks`.
#[derive(Debug)]
pub struct UpstreamHealth {
    pub checker: Arc<Checker>,
    /// Thresholds of passive reports (the passive defaults when `passive` is absent).
    pub passive: Thresholds,
    pub passive_statuses: StatusClasses,
    /// `checks.passive` is configured: the final status of a request is reported too.
    pub final_report: bool,
}

impl UpstreamHealth {
    pub fn new(checker: Arc<Checker>, passive: Option<&PassiveCheck>) -> Self {
        let final_report = passive.is_some();
        let default = PassiveCheck::default();
        let p = passive.unwrap_or(&default);
        UpstreamHealth {
            checker,
            passive: Thresholds {
                successes: p.healthy.successes,
                http_failures: p.unhealthy.http_failures,
                tcp_failures: p.unhealthy.tcp_failures,
                timeouts: p.unhealthy.timeouts,
            },
            passive_statuses: StatusClasses {
                healthy: StatusSet::new(&p.healthy.http_statuses),
                unhealthy: StatusSet::new(&p.unhealthy.http_statuses),
            },
            final_report,
        }
    }

    /// Whether selection must skip down nodes: some target is down, but not all (fail open).
    #[inline]
    pub fn filtering(&self) -> bool {
        !self.checker.none_down() && !self.checker.all_down()
    }

    /// A failed attempt that is followed by a retry.
    pub fn report_transport(&self, target: &Target, e: &Error) {
        target.report(transport_report(e), &self.passive, Source::Passive);
    }

    /// An HTTP status: a `retry_on_status` response, or the final status of a request.
    #[inline]
    pub fn report_status(&self, target: &Target, status: u16) {
        // A success on a healthy target (the common case) is one atomic load.
        if let Some(r) = self.passive_statuses.classify(status) {
            target.report(r, &self.passive, Source::Passive);
        }
    }
}

/// Fingerprint of `checks.active`: a change restarts the checker; changes to any other field
/// of the upstream never do.
pub fn fingerprint(active: &ActiveCheck) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(active)
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

/// A checker's settings from `checks.active`. The type is a name the checker looks up in the
/// health table's checks (built in or registered); every option is passed on, whatever it is.
pub fn probe_spec(active: &ActiveCheck) -> ProbeSpec {
    ProbeSpec {
        kind: Arc::from(active.kind.as_str()),
        timeout: active.timeout,
        concurrency: active.concurrency as usize,
        method: http::Method::from_bytes(active.http_method.as_str().as_bytes())
            .unwrap_or(http::Method::GET),
        path: active.http_path.clone(),
        body: bytes::Bytes::from(active.http_req_body.clone()),
        headers: active.req_headers.clone(),
        verify_certificate: active.https_verify_certificate,
        ca: None,
        client_cert_key: None,
        healthy_interval: active.healthy.interval,
        unhealthy_interval: active.unhealthy.interval,
        statuses: StatusClasses {
            healthy: StatusSet::new(&active.healthy.http_statuses),
            unhealthy: StatusSet::new(&active.unhealthy.http_statuses),
        },
        thresholds: Thresholds {
            successes: active.healthy.successes,
            http_failures: active.unhealthy.http_failures,
            tcp_failures: active.unhealthy.tcp_failures,
            timeouts: active.unhealthy.timeouts,
        },
    }
}

/// A node's target: identity `(ip, checks.active.port or node port, checks.active.host or
/// ip)`, and the probe `Host` (docs/health-checks.md): `upstream_host` under `pass_host:
/// rewrite`, the node's name if it has one, `checks.active.host`, the ip.
pub fn target_spec(
    conf: &Upstream,
    active: &ActiveCheck,
    node: &Node,
    addr: SocketAddr,
) -> TargetSpec {
    let ip = addr.ip();
    let ip_text = ip.to_string();
    let id = TargetId {
        ip,
        port: active.port.unwrap_or(node.port),
        hostname: active.host.clone().unwrap_or_else(|| ip_text.clone()),
    };
    let host = match (&conf.pass_host, node.ip, &active.host) {
        (PassHost::Rewrite(h), _, _) => crate::router::strip_port(h).to_owned(),
        (_, None, _) => node.host.clone(),
        (_, Some(_), Some(h)) => h.clone(),
        (_, Some(_), None) if ip.is_ipv6() => format!("[{ip_text}]"),
        (_, Some(_), None) => ip_text,
    };
    TargetSpec { id, host }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(yaml: &str) -> Upstream {
        let text = format!("upstreams:\n  - id: u\n{yaml}");
        match weir_config::parse_yaml(&text) {
            Ok(mut l) => l.config.resources.upstreams.remove(0),
            Err(e) => panic!("{e}"),
        }
    }

    fn spec_of(u: &Upstream, i: usize, addr: &str) -> TargetSpec {
        let active = &u.checks.as_ref().expect("checks").active;
        target_spec(u, active, &u.nodes()[i], addr.parse().expect("addr"))
    }

    #[test]
    fn probe_host_follows_pass_host_node_name_check_host_then_ip() {
        let u = upstream(
            "    nodes:\n      - {host: 10.0.0.1, port: 80, weight: 1}\n      - {host: api.internal, port: 81, weight: 1}\n      - {host: \"[::1]\", port: 82, weight: 1}\n    checks: {active: {port: 9000}}\n",
        );
        let s = spec_of(&u, 0, "10.0.0.1:80");
        assert_eq!(s.host, "10.0.0.1");
        assert_eq!((s.id.port, s.id.hostname.as_str()), (9000, "10.0.0.1"));
        // A name node: probes carry its name; the identity is its address.
        let s = spec_of(&u, 1, "10.0.0.9:81");
        assert_eq!(s.host, "api.internal");
        assert_eq!(s.id.hostname, "10.0.0.9");
        let s = spec_of(&u, 2, "[::1]:82");
        assert_eq!((s.host.as_str(), s.id.hostname.as_str()), ("[::1]", "::1"));

        let u =
            upstream("    nodes: {\"10.0.0.1:80\": 1}\n    checks: {active: {host: hc.example}}\n");
        let s = spec_of(&u, 0, "10.0.0.1:80");
        assert_eq!(
            (s.host.as_str(), s.id.hostname.as_str()),
            ("hc.example", "hc.example")
        );

        let u = upstream(
            "    pass_host: rewrite\n    upstream_host: \"www.example:8443\"\n    nodes: {\"10.0.0.1:80\": 1}\n    checks: {active: {host: hc.example}}\n",
        );
        assert_eq!(spec_of(&u, 0, "10.0.0.1:80").host, "www.example");
    }

    #[test]
    fn passive_defaults_apply_between_attempts_without_a_passive_block() {
        let u = upstream("    nodes: {\"10.0.0.1:80\": 1}\n    checks: {active: {}}\n");
        let checks = u.checks.as_ref().expect("checks");
        let table = weir_health::HealthTable::default();
        let (checker, _) = table.sync("upstreams/u", 1, probe_spec(&checks.active), &[]);
        let h = UpstreamHealth::new(checker, checks.passive.as_ref());
        assert!(!h.final_report);
        assert_eq!(
            (
                h.passive.tcp_failures,
                h.passive.timeouts,
                h.passive.http_failures
            ),
            (2, 7, 5)
        );
        assert_eq!(h.passive_statuses.classify(502), None);
        assert_eq!(
            h.passive_statuses.classify(503),
            Some(weir_health::Report::HttpFailure)
        );
    }
}
