//! [`AdminClient`]: the Admin API from a test, JSON in and out.

use crate::Client;
use serde_json::Value;
use std::net::SocketAddr;

/// Calls to one instance's Admin API with its key.
pub struct AdminClient {
    client: Client,
    key: Option<String>,
}

impl AdminClient {
    pub fn new(addr: SocketAddr, key: &str) -> AdminClient {
        AdminClient {
            client: Client::new(addr),
            key: Some(key.to_owned()),
        }
    }

    /// A client that sends no `X-API-KEY`.
    pub fn without_key(addr: SocketAddr) -> AdminClient {
        AdminClient {
            client: Client::new(addr),
            key: None,
        }
    }

    /// `method path` with a raw body: (status, body as JSON, or `Value::Null` when it is not).
    pub fn raw(&mut self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(k) = &self.key {
            headers.push(("x-api-key", k.as_str()));
        }
        let r = self
            .client
            .request(method, path, &headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let v = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        (r.status, v)
    }

    /// `method /apisix/admin/<path>` with a JSON body.
    pub fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let full = format!("/apisix/admin/{}", path.trim_start_matches('/'));
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.raw(method, &full, &bytes)
    }

    pub fn get(&mut self, path: &str) -> (u16, Value) {
        self.call("GET", path, None)
    }

    pub fn put(&mut self, path: &str, body: &Value) -> (u16, Value) {
        self.call("PUT", path, Some(body))
    }

    pub fn post(&mut self, path: &str, body: &Value) -> (u16, Value) {
        self.call("POST", path, Some(body))
    }

    pub fn patch(&mut self, path: &str, body: &Value) -> (u16, Value) {
        self.call("PATCH", path, Some(body))
    }

    pub fn delete(&mut self, path: &str) -> (u16, Value) {
        self.call("DELETE", path, None)
    }
}

impl AdminClient {
    /// Write `i` of the mixed series the "no failed request while configuration changes"
    /// tests drive against upstream `u`: node changes (one to three of `backends`), new routes,
    /// replacements of `u` (node and algorithm), and new unused upstreams. Every write keeps
    /// `u` serving one of `backends`; asserts it was accepted (200 or 201).
    pub fn mixed_write(&mut self, i: usize, backends: &[crate::Backend]) {
        let one = |b: &crate::Backend| serde_json::json!({ b.addr.to_string(): 1 });
        let last = &backends[backends.len() - 1];
        let (s, v) = match i % 4 {
            0 => {
                let mut n = serde_json::Map::new();
                for b in backends.iter().take(1 + i % 3) {
                    n.insert(b.addr.to_string(), serde_json::json!(1));
                }
                self.patch("upstreams/u", &serde_json::json!({ "nodes": n }))
            }
            1 => self.put(
                &format!("routes/extra{i}"),
                &serde_json::json!({"uri": format!("/extra/{i}"), "upstream_id": "u"}),
            ),
            2 => {
                let lb = ["roundrobin", "least_conn", "ewma"][i % 3];
                let node = one(&backends[i % backends.len()]);
                self.put(
                    "upstreams/u",
                    &serde_json::json!({"nodes": node, "type": lb}),
                )
            }
            _ => self.put(
                &format!("upstreams/spare{i}"),
                &serde_json::json!({ "nodes": one(last) }),
            ),
        };
        assert!(s == 200 || s == 201, "write {i}: {s} {v}");
    }
}
