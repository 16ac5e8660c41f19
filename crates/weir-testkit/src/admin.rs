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
