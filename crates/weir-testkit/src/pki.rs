//! Certificates made at test time: a CA, and server or client certificates it signs, with DNS
//! and IP subject alternative names.

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509Name, X509};
use std::net::IpAddr;

/// A certificate with its private key.
#[derive(Clone)]
pub struct Identity {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl Identity {
    pub fn cert_pem(&self) -> String {
        String::from_utf8(self.cert.to_pem().expect("pem")).expect("utf8")
    }

    pub fn key_pem(&self) -> String {
        String::from_utf8(self.key.private_key_to_pem_pkcs8().expect("pem")).expect("utf8")
    }
}

fn new_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("curve");
    PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey")
}

fn name(cn: &str) -> X509Name {
    let mut n = X509Name::builder().expect("name");
    n.append_entry_by_text("CN", cn).expect("cn");
    n.build()
}

fn serial() -> openssl::asn1::Asn1Integer {
    let mut bn = BigNum::new().expect("bn");
    bn.rand(64, MsbOption::MAYBE_ZERO, false).expect("rand");
    bn.to_asn1_integer().expect("serial")
}

/// A test certificate authority.
pub struct TestCa {
    pub id: Identity,
}

impl TestCa {
    pub fn new(cn: &str) -> TestCa {
        let key = new_key();
        let mut b = X509::builder().expect("builder");
        b.set_version(2).expect("v3");
        b.set_serial_number(&serial()).expect("serial");
        b.set_subject_name(&name(cn)).expect("subject");
        b.set_issuer_name(&name(cn)).expect("issuer");
        b.set_pubkey(&key).expect("pubkey");
        b.set_not_before(&Asn1Time::days_from_now(0).expect("t"))
            .expect("nb");
        b.set_not_after(&Asn1Time::days_from_now(365).expect("t"))
            .expect("na");
        b.append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
            .expect("ext");
        b.append_extension(
            KeyUsage::new()
                .key_cert_sign()
                .crl_sign()
                .build()
                .expect("ku"),
        )
        .expect("ext");
        b.sign(&key, MessageDigest::sha256()).expect("sign");
        TestCa {
            id: Identity {
                cert: b.build(),
                key,
            },
        }
    }

    pub fn cert_pem(&self) -> String {
        self.id.cert_pem()
    }

    /// Issue a leaf certificate for `dns` names and `ips`; `client` makes it a client cert.
    pub fn issue(&self, cn: &str, dns: &[&str], ips: &[IpAddr], client: bool) -> Identity {
        let key = new_key();
        let mut b = X509::builder().expect("builder");
        b.set_version(2).expect("v3");
        b.set_serial_number(&serial()).expect("serial");
        b.set_subject_name(&name(cn)).expect("subject");
        b.set_issuer_name(self.id.cert.subject_name())
            .expect("issuer");
        b.set_pubkey(&key).expect("pubkey");
        b.set_not_before(&Asn1Time::days_from_now(0).expect("t"))
            .expect("nb");
        b.set_not_after(&Asn1Time::days_from_now(30).expect("t"))
            .expect("na");
        let mut san = SubjectAlternativeName::new();
        for d in dns {
            san.dns(d);
        }
        for ip in ips {
            san.ip(&ip.to_string());
        }
        if !dns.is_empty() || !ips.is_empty() {
            let ext = san
                .build(&b.x509v3_context(Some(&self.id.cert), None))
                .expect("san");
            b.append_extension(ext).expect("ext");
        }
        let eku = if client {
            ExtendedKeyUsage::new().client_auth().build()
        } else {
            ExtendedKeyUsage::new().server_auth().build()
        };
        b.append_extension(eku.expect("eku")).expect("ext");
        b.sign(&self.id.key, MessageDigest::sha256()).expect("sign");
        Identity {
            cert: b.build(),
            key,
        }
    }
}

/// A PEM text as a YAML block scalar (`|` then the lines) indented by `indent` spaces, for
/// writing certificates into test configurations.
pub fn yaml_block(pem: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let mut s = String::from("|\n");
    for line in pem.lines() {
        s.push_str(&pad);
        s.push_str(line);
        s.push('\n');
    }
    s
}
