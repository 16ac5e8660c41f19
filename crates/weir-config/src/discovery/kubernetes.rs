//! `discovery.kubernetes`: one cluster, or several with ids.

use crate::cert::Secret;
use crate::reader::{self, Cx, Obj};
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NamespaceSelector {
    Equal(String),
    NotEqual(String),
    Match(Vec<String>),
    NotMatch(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KubernetesConfig {
    /// `Some` in the multi-cluster (array) form.
    pub id: Option<String>,
    pub tls: bool,
    /// May hold `${VAR}` references, expanded at run time.
    pub host: String,
    pub port: String,
    pub ssl_verify: bool,
    #[serde(skip)]
    pub token: Option<Secret>,
    pub token_file: String,
    /// `service.ca_file` (Weir): the PEM CA bundle `ssl_verify` checks the API server
    /// against; default the service account's `ca.crt` when it exists, else the system store.
    pub ca_file: Option<String>,
    pub namespace_selector: Option<NamespaceSelector>,
    pub label_selector: Option<String>,
    pub default_weight: u32,
    pub watch_endpoint_slices: bool,
}

/// A list of regular expressions, each matched against a whole namespace name.
fn regex_list(o: &mut Obj<'_>, cx: &mut Cx, k: &str) -> Vec<String> {
    o.take(k)
        .and_then(|(v, p)| {
            reader::list(v, &p, cx, 0, |x, xp, cx| {
                let s = reader::string(x, xp, cx)?;
                match regex::Regex::new(&format!("^(?:{s})$")) {
                    Ok(_) => Some(s.to_owned()),
                    Err(e) => {
                        let first = e.to_string();
                        let why = first.lines().last().unwrap_or("invalid").trim();
                        cx.err(
                            xp,
                            format!("not a valid regular expression ({why}), got {s:?}"),
                        );
                        None
                    }
                }
            })
        })
        .unwrap_or_default()
}

pub(super) fn parse_kubernetes(
    mut o: Obj<'_>,
    cx: &mut Cx,
    multi: bool,
) -> Option<KubernetesConfig> {
    let id = if multi {
        o.require(cx, "id").and_then(|(v, p)| {
            let s = reader::string(v, &p, cx)?;
            let ok = (1..=64).contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if !ok {
                cx.err(&p, format!("must match ^[a-z0-9]{{1,64}}$, got {s:?}"));
                return None;
            }
            Some(s.to_owned())
        })
    } else {
        None
    };
    let mut k = KubernetesConfig {
        id,
        tls: true,
        host: "${KUBERNETES_SERVICE_HOST}".into(),
        port: "${KUBERNETES_SERVICE_PORT}".into(),
        ssl_verify: false,
        token: None,
        token_file: "/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
        ca_file: None,
        namespace_selector: None,
        label_selector: None,
        default_weight: 50,
        watch_endpoint_slices: false,
    };
    if let Some(mut s) = o.obj(cx, "service") {
        if let Some(t) = s.enumeration(cx, "schema", &[("http", false), ("https", true)]) {
            k.tls = t;
        }
        if let Some(h) = s.str(cx, "host") {
            k.host = h.to_owned();
        }
        if let Some((v, p)) = s.take("port") {
            match v {
                Value::Number(_) => {
                    if let Some(n) = reader::uint(v, &p, cx, 1, 65535) {
                        k.port = n.to_string();
                    }
                }
                _ => {
                    if let Some(s) = reader::string(v, &p, cx) {
                        k.port = s.to_owned();
                    }
                }
            }
        }
        k.ssl_verify = s.bool(cx, "ssl_verify", false);
        k.ca_file = s.str(cx, "ca_file").map(str::to_owned);
        s.finish(cx);
    }
    if let Some(mut c) = o.obj(cx, "client") {
        if let Some((v, p)) = c.take("token") {
            if !v.is_string() {
                cx.err(&p, "must be a string");
            } else if let Some(s) = v.as_str() {
                k.token = Some(Secret::new(s));
            }
        }
        if let Some(f) = c.str(cx, "token_file") {
            k.token_file = f.to_owned();
        }
        c.finish(cx);
    }
    if let Some(mut ns) = o.obj(cx, "namespace_selector") {
        let mut chosen = Vec::new();
        if let Some(s) = ns.str(cx, "equal") {
            chosen.push(NamespaceSelector::Equal(s.to_owned()));
        }
        if let Some(s) = ns.str(cx, "not_equal") {
            chosen.push(NamespaceSelector::NotEqual(s.to_owned()));
        }
        let match_list = ns.has("match").then(|| regex_list(&mut ns, cx, "match"));
        if let Some(l) = match_list {
            chosen.push(NamespaceSelector::Match(l));
        }
        let not_match = ns
            .has("not_match")
            .then(|| regex_list(&mut ns, cx, "not_match"));
        if let Some(l) = not_match {
            chosen.push(NamespaceSelector::NotMatch(l));
        }
        if chosen.len() != 1 {
            cx.err(
                &ns.path,
                "must set exactly one of equal, not_equal, match, not_match",
            );
        }
        k.namespace_selector = chosen.pop();
        ns.finish(cx);
    }
    k.label_selector = o.str(cx, "label_selector").map(str::to_owned);
    k.default_weight = o
        .uint(cx, "default_weight", 0, u32::MAX as u64)
        .unwrap_or(50) as u32;
    k.watch_endpoint_slices = o.bool(cx, "watch_endpoint_slices", false);
    o.finish(cx);
    Some(k)
}
