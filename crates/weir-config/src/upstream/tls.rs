//! TLS to the upstream: `tls_verify`, `ca_certificates`, `client_certificate`, and APISIX's
//! `tls: {client_cert, client_key, client_cert_id, verify}` alias (docs/configuration.md).

use crate::cert::{parse_pem_pair, Secret};
use crate::common::{parse_id, Id};
use crate::reader::{self, Cx, Obj};
use serde::Serialize;

/// Where the client certificate for mTLS comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientCert {
    /// A `certificates` object by id.
    Ref(Id),
    /// An inline PEM pair from `tls.client_cert` / `tls.client_key`.
    Inline { cert: String, key: Secret },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UpstreamTls {
    pub verify: bool,
    pub ca_certificates: Vec<Id>,
    pub client_cert: Option<ClientCert>,
}

impl UpstreamTls {
    /// Read the TLS-related members of an upstream object.
    pub fn parse(o: &mut Obj<'_>, cx: &mut Cx) -> UpstreamTls {
        let mut t = UpstreamTls::default();
        let verify = o
            .take("tls_verify")
            .and_then(|(v, p)| reader::boolean(v, &p, cx));
        if let Some((v, p)) = o.take("ca_certificates") {
            if let Some(ids) = reader::list(v, &p, cx, 0, parse_id) {
                t.ca_certificates = ids;
            }
        }
        let client = o
            .take("client_certificate")
            .and_then(|(v, p)| parse_id(v, &p, cx))
            .map(ClientCert::Ref);
        let had_client = o.has("client_certificate");
        let had_verify = o.has("tls_verify");

        let (mut alias_verify, mut alias_client) = (None, None);
        if let Some(mut a) = o.obj(cx, "tls") {
            if let Some((v, p)) = a.take("verify") {
                if had_verify {
                    cx.err(&p, "conflicts with tls_verify (the same setting twice)");
                } else {
                    alias_verify = reader::boolean(v, &p, cx);
                }
            }
            let id = a.take("client_cert_id");
            let cert = a.take("client_cert");
            let key = a.take("client_key");
            let any = id.is_some() || cert.is_some() || key.is_some();
            if any && had_client {
                cx.err(
                    &a.path,
                    "client_cert* conflicts with client_certificate (the same setting twice)",
                );
            } else if let Some((v, p)) = id {
                if cert.is_some() || key.is_some() {
                    cx.err(&p, "not allowed together with client_cert and client_key");
                } else {
                    alias_client = parse_id(v, &p, cx).map(ClientCert::Ref);
                }
            } else if cert.is_some() != key.is_some() {
                let missing = if cert.is_some() {
                    "client_key"
                } else {
                    "client_cert"
                };
                cx.err(
                    &a.path.field(missing),
                    "required (client_cert and client_key go together)",
                );
            } else if cert.is_some() {
                alias_client = parse_pem_pair(cert, key, cx)
                    .map(|(cert, key)| ClientCert::Inline { cert, key });
            }
            a.finish(cx);
        }
        t.verify = verify.or(alias_verify).unwrap_or(false);
        t.client_cert = client.or(alias_client);
        t
    }

    /// Whether any TLS setting was given (warned about on plaintext schemes).
    pub fn is_configured(&self) -> bool {
        self.verify || !self.ca_certificates.is_empty() || self.client_cert.is_some()
    }
}
