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

/// Where a resource of `kind` keeps its secrets.
fn secret_paths(kind: Kind) -> &'static [&'static [&'static str]] {
    match kind {
        Kind::Certificates => &[&["key"]],
        Kind::Consumers => &[&["plugins", "key-auth", "key"]],
        Kind::Upstreams => &[&["tls", "client_key"]],
        Kind::Routes | Kind::Services => &[&["upstream", "tls", "client_key"]],
        Kind::CaCertificates => &[],
    }
}

/// Put the stored secrets back where a client sent [`MASK`] (it read the resource and wrote
/// it back): a masked value never replaces a real key. A mask with no stored secret behind it
/// is an error naming the member.
pub fn unmask(kind: Kind, value: &mut Value, stored: Option<&Value>) -> Result<(), String> {
    for path in secret_paths(kind) {
        let pointer: String = path.iter().map(|p| format!("/{p}")).collect();
        if value.pointer(&pointer).and_then(Value::as_str) != Some(MASK) {
            continue;
        }
        let Some(real) = stored.and_then(|s| s.pointer(&pointer)).cloned() else {
            return Err(format!(
                "{}: is the mask {MASK:?}, and there is no stored value it stands for",
                path.join(".")
            ));
        };
        if let Some(slot) = value.pointer_mut(&pointer) {
            *slot = real;
        }
    }
    Ok(())
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
    fn a_mask_written_back_keeps_the_stored_secret() {
        let stored = json!({"username": "a", "plugins": {"key-auth": {"key": "s3cret"}}});
        let mut back = masked(Kind::Consumers, &stored);
        unmask(Kind::Consumers, &mut back, Some(&stored)).unwrap();
        assert_eq!(back, stored);
        let mut new = json!({"username": "b", "plugins": {"key-auth": {"key": MASK}}});
        let e = unmask(Kind::Consumers, &mut new, None).unwrap_err();
        assert!(e.starts_with("plugins.key-auth.key: "), "{e}");
        let mut changed = json!({"id": "c", "cert": "C2", "key": "K2"});
        unmask(Kind::Certificates, &mut changed, Some(&json!({"key": "K"}))).unwrap();
        assert_eq!(changed["key"], "K2");
    }

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
