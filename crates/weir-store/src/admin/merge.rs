//! JSON merge patch (RFC 7396), the body of an Admin API `PATCH`, and APISIX's sub-path
//! `PATCH /apisix/admin/{kind}/{id}/{path}`, which replaces one member.

use serde_json::{Map, Value};

/// Apply merge patch `patch` to `target` (RFC 7396 §2): objects merge member by member, a
/// `null` member removes it, anything else replaces the target.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                // Keep the order of the other members (answers, the file).
                t.shift_remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Replace the member at `path` (`["upstream", "nodes"]`) with `value`, creating objects on
/// the way; `null` removes it. Fails when the way passes through something that is not an
/// object.
pub fn replace_at(target: &mut Value, path: &[&str], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        *target = value;
        return Ok(());
    };
    let mut cur = target;
    for (i, seg) in parents.iter().enumerate() {
        let Value::Object(m) = cur else {
            return Err(format!("{} is not an object", parents[..i].join(".")));
        };
        cur = m
            .entry((*seg).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    let Value::Object(m) = cur else {
        return Err(format!("{} is not an object", parents.join(".")));
    };
    if value.is_null() {
        m.shift_remove(*last);
    } else {
        m.insert((*last).to_owned(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The examples of RFC 7396, appendix A.
    #[test]
    fn rfc_7396_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (
                json!({"a":1,"b":2,"c":3}),
                json!({"a":null}),
                json!({"b":2,"c":3}),
            ),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (mut target, patch, want) in cases {
            merge_patch(&mut target, &patch);
            assert_eq!(target, want, "patch {patch}");
            // Member order is kept too.
            assert_eq!(target.to_string(), want.to_string(), "patch {patch}");
        }
    }

    #[test]
    fn sub_path_replacement() {
        let mut v = json!({"upstream": {"nodes": {"a:1": 1}, "type": "roundrobin"}});
        replace_at(&mut v, &["upstream", "nodes"], json!({"b:2": 1})).unwrap();
        assert_eq!(
            v,
            json!({"upstream": {"nodes": {"b:2": 1}, "type": "roundrobin"}})
        );
        replace_at(&mut v, &["plugins", "key-auth"], json!({})).unwrap();
        assert_eq!(v["plugins"], json!({"key-auth": {}}));
        replace_at(&mut v, &["upstream", "type"], Value::Null).unwrap();
        assert!(v["upstream"].get("type").is_none());
        assert!(replace_at(&mut v, &["upstream", "nodes", "b:2", "x"], json!(1)).is_err());
    }
}
