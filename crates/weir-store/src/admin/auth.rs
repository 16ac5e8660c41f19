//! Who may call the Admin API: a client address inside `allow_admin`, and the `X-API-KEY`
//! header equal to `admin.api_key`, compared in constant time.

use ipnet::IpNet;
use std::net::IpAddr;

/// The configured key, kept as its SHA-256 digest: comparing digests of equal length with
/// OpenSSL's constant-time `memcmp` reveals neither the key's content nor its length.
pub struct ApiKey([u8; 32]);

impl ApiKey {
    pub fn new(key: &str) -> Self {
        ApiKey(openssl::sha::sha256(key.as_bytes()))
    }

    /// Whether `presented` (the header's bytes) is the key.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let digest = openssl::sha::sha256(presented);
        openssl::memcmp::eq(&digest, &self.0)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Whether `client` may call the Admin API under `allow` (empty: everyone who can reach it).
/// An IPv4 client on an IPv6 socket (`::ffff:127.0.0.1`) matches in either form.
pub fn allowed(allow: &[IpNet], client: Option<IpAddr>) -> bool {
    if allow.is_empty() {
        return true;
    }
    let Some(ip) = client else { return false };
    let mapped = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    allow
        .iter()
        .any(|n| n.contains(&ip) || mapped.is_some_and(|m| n.contains(&m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_matches_only_itself() {
        let k = ApiKey::new("edd1c9f034335f136f87ad84b625c8f1");
        assert!(k.matches(b"edd1c9f034335f136f87ad84b625c8f1"));
        assert!(!k.matches(b"edd1c9f034335f136f87ad84b625c8f"));
        assert!(!k.matches(b""));
        assert!(!format!("{k:?}").contains("edd1"));
    }

    #[test]
    fn allow_lists_match_networks() {
        let allow: Vec<IpNet> = vec!["127.0.0.0/24".parse().unwrap(), "fd00::/8".parse().unwrap()];
        assert!(allowed(&allow, Some("127.0.0.9".parse().unwrap())));
        assert!(allowed(&allow, Some("::ffff:127.0.0.1".parse().unwrap())));
        assert!(allowed(&allow, Some("fd12::1".parse().unwrap())));
        assert!(!allowed(&allow, Some("127.0.1.1".parse().unwrap())));
        assert!(!allowed(&allow, None));
        assert!(allowed(&[], None));
        let v6: Vec<IpNet> = vec!["::ffff:0:0/96".parse().unwrap()];
        assert!(allowed(&v6, Some("::ffff:10.1.2.3".parse().unwrap())));
    }
}
