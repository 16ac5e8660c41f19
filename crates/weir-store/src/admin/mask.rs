//! Secrets never leave the Admin API: private keys and consumers' API keys are replaced by
//! [`MASK`] in every answer.

use crate::set::Kind;
use serde_json::Value;

/// What a secret reads as in an answer.
pub const MASK: &str = "******";

/// `value` (a stored resource of `kind`) as the Admin API may show it.
pub fn masked(kind: Kind, value: &Value) -> Value {
    let mut v = value.clone();
    match kind {
        Kind::Certificates => hide(&mut v, &["key"]),
        Kind::Consumers => hide(&mut v, &["plugins", "key-auth", "key"]),
        Kind::Upstreams => hide_upstream(&mut v),
        Kind::Routes | Kind::Services => {
            if let Some(u) = v.get_mut("upstream") {
                hide_upstream(u);
            }
        }
        Kind::CaCertificates => {}
    }
    v
}

/// An upstream's inline client key (APISIX's `tls.client_key`).
fn hide_upstream(u: &mut Value) {
    hide(u, &["tls", "client_key"]);
}

fn hide(v: &mut Value, path: &[&str]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for p in parents {
        match cur.get_mut(*p) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(secret) = cur.get_mut(*last) {
        if !secret.is_null() {
            *secret = Value::String(MASK.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_masked_everything_else_kept() {
        let c = masked(
            Kind::Certificates,
            &json!({"id": "c", "cert": "C", "key": "K"}),
        );
        assert_eq!(c, json!({"id": "c", "cert": "C", "key": MASK}));
        let u = json!({"username": "a", "plugins": {"key-auth": {"key": "s3cret"}}});
        assert_eq!(
            masked(Kind::Consumers, &u)["plugins"]["key-auth"]["key"],
            MASK
        );
        let r = json!({"id": "r", "upstream": {"tls": {"client_cert": "C", "client_key": "K"}}});
        assert_eq!(
            masked(Kind::Routes, &r)["upstream"]["tls"]["client_key"],
            MASK
        );
        let u = json!({"id": "u", "tls": {"client_key": "K"}});
        assert_eq!(masked(Kind::Upstreams, &u)["tls"]["client_key"], MASK);
        let plain = json!({"id": "u", "nodes": {"a:1": 1}});
        assert_eq!(masked(Kind::Upstreams, &plain), plain);
    }
}
