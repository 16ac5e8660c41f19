//! `certificates` (PEM chain + private key) and `ca_certificates` (PEM bundles), checked when
//! the configuration is loaded: the PEM parses, the key matches the leaf. Private keys are kept
//! in [`Secret`], which never prints its content.

use crate::common::{parse_id, Id, Meta};
use crate::path::Path;
use crate::reader::{self, Cx, Obj};
use openssl::pkey::PKey;
use openssl::x509::X509;
use serde::{Serialize, Serializer};
use serde_json::Value;
use std::fmt;

/// A secret string (private key, API key): `Debug`, `Display` and `Serialize` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the code that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

/// A certificate chain (leaf first) with its private key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Certificate {
    pub id: Id,
    #[serde(flatten)]
    pub meta: Meta,
    pub cert: String,
    pub key: Secret,
}

/// A bundle of one or more trusted CA certificates.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaCertificate {
    pub id: Id,
    #[serde(flatten)]
    pub meta: Meta,
    pub cert: String,
}

/// Check that `pem` holds at least one certificate; returns how many.
pub fn check_cert_pem(pem: &str) -> Result<usize, String> {
    match X509::stack_from_pem(pem.as_bytes()) {
        Ok(v) if !v.is_empty() => Ok(v.len()),
        Ok(_) => Err("no PEM certificate found".into()),
        Err(e) => Err(format!("invalid PEM certificate: {}", first_reason(&e))),
    }
}

/// Check that `key_pem` is a private key matching the leaf (first) certificate of `cert_pem`.
/// The error never quotes the key.
pub fn check_key_pair(cert_pem: &str, key_pem: &str) -> Result<(), String> {
    let key = PKey::private_key_from_pem(key_pem.as_bytes())
        .map_err(|_| "invalid PEM private key".to_string())?;
    let leaf = X509::stack_from_pem(cert_pem.as_bytes())
        .ok()
        .and_then(|v| v.into_iter().next());
    if let Some(leaf) = leaf {
        let matches = leaf
            .public_key()
            .map(|pk| pk.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err("private key does not match the certificate".into());
        }
    }
    Ok(())
}

fn first_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|x| x.reason().map(str::to_owned))
        .unwrap_or_else(|| "unparsable".into())
}

/// Read and check a `cert` + `key` pair inside an object (used by `certificates` and by the
/// upstream `tls.client_cert` / `client_key` alias). Returns `(cert, key)`.
pub fn parse_pem_pair(
    cert: Option<(&Value, Path)>,
    key: Option<(&Value, Path)>,
    cx: &mut Cx,
) -> Option<(String, Secret)> {
    let cert_s = cert.as_ref().and_then(|(v, p)| {
        let s = reader::string(v, p, cx)?;
        match check_cert_pem(s) {
            Ok(_) => Some(s.to_owned()),
            Err(e) => {
                cx.err(p, e);
                None
            }
        }
    });
    // Type-check the key without ever echoing its value.
    let key_s = key.as_ref().and_then(|(v, p)| match v {
        Value::String(s) => Some(s.clone()),
        _ => {
            cx.err(p, "must be a string");
            None
        }
    });
    let (cert_s, key_s) = (cert_s?, key_s?);
    if let Err(e) = check_key_pair(&cert_s, &key_s) {
        if let Some((_, p)) = &key {
            cx.err(p, e);
        }
        return None;
    }
    Some((cert_s, Secret::new(key_s)))
}

pub fn parse_certificate(v: &Value, p: &Path, cx: &mut Cx) -> Option<Certificate> {
    let mut o = Obj::of(v, p, cx)?;
    let id = o.require(cx, "id").and_then(|(v, ip)| parse_id(v, &ip, cx));
    let meta = Meta::parse(&mut o, cx);
    let cert = o.require(cx, "cert");
    let key = o.require(cx, "key");
    let pair = parse_pem_pair(cert, key, cx);
    o.finish(cx);
    let (cert, key) = pair?;
    Some(Certificate {
        id: id?,
        meta,
        cert,
        key,
    })
}

pub fn parse_ca_certificate(v: &Value, p: &Path, cx: &mut Cx) -> Option<CaCertificate> {
    let mut o = Obj::of(v, p, cx)?;
    let id = o.require(cx, "id").and_then(|(v, ip)| parse_id(v, &ip, cx));
    let meta = Meta::parse(&mut o, cx);
    let cert = o.require(cx, "cert").and_then(|(v, cp)| {
        let s = reader::string(v, &cp, cx)?;
        match check_cert_pem(s) {
            Ok(_) => Some(s.to_owned()),
            Err(e) => {
                cx.err(&cp, e);
                None
            }
        }
    });
    o.finish(cx);
    Some(CaCertificate {
        id: id?,
        meta,
        cert: cert?,
    })
}
