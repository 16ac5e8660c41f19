//! TLS material of an upstream, built once per snapshot (docs/tls.md): the CA bundle
//! (the union of `ca_certificates`, parsed once, not per handshake), the client certificate for
//! mTLS, and a fingerprint of both for pool isolation.

use log::error;
use openssl::pkey::PKey;
use openssl::x509::X509;
use pingora::listeners::tls::TlsSettings;
use pingora::protocols::tls::CaType;
use pingora::utils::tls::CertKey;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use weir_config::{CaCertificate, Certificate, ClientCert, Resources, UpstreamTls};

/// An upstream's TLS settings, ready for Pingora peers.
#[derive(Clone, Default)]
pub struct PeerTls {
    pub verify: bool,
    /// `None`: the system trust store.
    pub ca: Option<Arc<CaType>>,
    pub client_cert_key: Option<Arc<CertKey>>,
    /// Hash of verification, CA and client-certificate material (never of private keys'
    /// text in logs; the hash only keys pools).
    pub fingerprint: u64,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("verify", &self.verify)
            .field("ca", &self.ca.as_ref().map(|c| c.len()))
            .field("client_cert", &self.client_cert_key.is_some())
            .finish()
    }
}

/// The `certificates` and `ca_certificates` of a configuration, by id.
pub struct CertStore<'a> {
    certs: HashMap<&'a str, &'a Certificate>,
    cas: HashMap<&'a str, &'a CaCertificate>,
}

impl<'a> CertStore<'a> {
    pub fn new(res: &'a Resources) -> Self {
        CertStore {
            certs: res
                .certificates
                .iter()
                .map(|c| (c.id.as_str(), c))
                .collect(),
            cas: res
                .ca_certificates
                .iter()
                .map(|c| (c.id.as_str(), c))
                .collect(),
        }
    }

    /// The server certificate of a TLS listener, as PEM chain and key.
    pub fn certificate(&self, id: &str) -> Option<&'a Certificate> {
        self.certs.get(id).copied()
    }

    /// Build an upstream's TLS settings. Certificates were checked when the configuration was
    /// loaded; anything that still fails to parse is logged (never with key material) and left
    /// out, so the handshake fails visibly instead of the process.
    pub fn peer_tls(&self, upstream: &str, conf: &UpstreamTls) -> PeerTls {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        conf.verify.hash(&mut h);
        let mut bundle: Vec<X509> = Vec::new();
        for id in &conf.ca_certificates {
            let Some(ca) = self.cas.get(id.as_str()) else {
                error!("upstream {upstream}: unknown ca_certificates id {id:?}");
                continue;
            };
            ca.cert.hash(&mut h);
            match X509::stack_from_pem(ca.cert.as_bytes()) {
                Ok(certs) => bundle.extend(certs),
                Err(e) => error!("upstream {upstream}: ca_certificates {id:?}: {e}"),
            }
        }
        let client = conf.client_cert.as_ref().and_then(|c| {
            let (label, cert, key) = match c {
                ClientCert::Ref(id) => {
                    let Some(obj) = self.certs.get(id.as_str()) else {
                        error!("upstream {upstream}: unknown client certificate id {id:?}");
                        return None;
                    };
                    (
                        format!("certificate {id:?}"),
                        obj.cert.as_str(),
                        obj.key.expose(),
                    )
                }
                ClientCert::Inline { cert, key } => {
                    ("tls.client_cert".to_owned(), cert.as_str(), key.expose())
                }
            };
            cert.hash(&mut h);
            cert_key(cert, key)
                .map_err(|e| error!("upstream {upstream}: {label}: {e}"))
                .ok()
        });
        PeerTls {
            verify: conf.verify,
            ca: (!bundle.is_empty()).then(|| Arc::new(bundle.into_boxed_slice())),
            client_cert_key: client.map(Arc::new),
            fingerprint: h.finish(),
        }
    }
}

/// A Pingora `CertKey` from a PEM chain (leaf first) and a PEM private key.
pub fn cert_key(cert_pem: &str, key_pem: &str) -> Result<CertKey, String> {
    let chain = X509::stack_from_pem(cert_pem.as_bytes()).map_err(|e| e.to_string())?;
    if chain.is_empty() {
        return Err("no PEM certificate found".into());
    }
    // The key's parse error is generic (it never echoes key material).
    let key = PKey::private_key_from_pem(key_pem.as_bytes())
        .map_err(|_| "invalid private key".to_owned())?;
    Ok(CertKey::new(chain, key))
}

/// TLS settings of a `tls_listen` listener: Mozilla's intermediate profile, the certificate
/// chain and key of a `certificates` object, ALPN h2 then http/1.1.
pub fn listener_tls(cert_pem: &str, key_pem: &str) -> Result<TlsSettings, String> {
    use openssl::ssl::{SslAcceptor, SslMethod};
    let pair = cert_key(cert_pem, key_pem)?;
    let mut b =
        SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(|e| e.to_string())?;
    b.set_certificate(pair.leaf()).map_err(|e| e.to_string())?;
    for c in pair.intermediates() {
        b.add_extra_chain_cert(c.clone())
            .map_err(|e| e.to_string())?;
    }
    b.set_private_key(pair.key()).map_err(|e| e.to_string())?;
    b.check_private_key()
        .map_err(|_| "the private key does not match the certificate".to_owned())?;
    let mut settings = TlsSettings::from(b);
    settings.enable_h2();
    Ok(settings)
}
