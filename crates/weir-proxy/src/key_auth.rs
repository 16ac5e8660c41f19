//! The `key-auth` plugin (docs/configuration.md), a typed [`Plugin`] registered like any other:
//! the key is read from a header, then a query argument; a known key makes its consumer the
//! request's consumer.

use crate::ctx::HookCtx;
use crate::plugin::Plugin;
use crate::respond::respond_json_with;
use async_trait::async_trait;
use pingora::prelude::*;
use pingora::proxy::Session;
use std::collections::HashMap;
use std::sync::Arc;
use weir_config::KeyAuth;

/// Consumers by key-auth key: the username and its metric number.
pub type ConsumerIndex = HashMap<String, (Arc<str>, u32)>;

/// The built-in `key-auth` plugin.
pub struct KeyAuthPlugin;

const CHALLENGE: (&str, &str) = ("WWW-Authenticate", "apikey realm=\"key\"");

fn query_arg<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| match pair.split_once('=') {
            Some((k, v)) if k == name => Some(v),
            None if pair == name => Some(""),
            _ => None,
        })
}

#[async_trait]
impl Plugin for KeyAuthPlugin {
    type Config = KeyAuth;

    fn name(&self) -> &str {
        "key-auth"
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        cfg: &KeyAuth,
        ctx: &mut HookCtx,
    ) -> Result<bool> {
        // The consumer index is the route's (crate-internal); the consumer is set through the
        // view like any authentication hook would.
        let Some(route) = ctx.route().cloned() else {
            return Ok(false);
        };
        let req = session.req_header();
        let from_header = req
            .headers
            .get(cfg.header.as_str())
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty());
        let key = match from_header {
            Some(k) => Some(k.to_owned()),
            None => req
                .uri
                .query()
                .and_then(|q| query_arg(q, &cfg.query))
                .filter(|v| !v.is_empty())
                .map(|v| {
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned()
                }),
        };
        let Some(key) = key else {
            let body = r#"{"message":"Missing API key in request"}"#;
            respond_json_with(session, 401, body, &[CHALLENGE]).await?;
            return Ok(true);
        };
        match route.consumers.get(&key) {
            Some((user, id)) => {
                ctx.set_consumer(Arc::clone(user));
                ctx.consumer_id = Some(*id);
                Ok(false)
            }
            None => {
                let body = r#"{"message":"Invalid API key in request"}"#;
                respond_json_with(session, 401, body, &[CHALLENGE]).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        cfg: &KeyAuth,
        _ctx: &mut HookCtx,
    ) -> Result<()> {
        if !cfg.hide_credentials {
            return Ok(());
        }
        req.remove_header(cfg.header.as_str());
        let stripped = req.uri.query().map(|q| {
            q.split('&')
                .filter(|p| p.split('=').next() != Some(cfg.query.as_str()))
                .collect::<Vec<_>>()
                .join("&")
        });
        if let Some(q) = stripped {
            let path = req.uri.path().to_owned();
            let target = if q.is_empty() {
                path
            } else {
                format!("{path}?{q}")
            };
            if let Ok(uri) = target.parse::<http::Uri>() {
                req.set_uri(uri);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_arguments() {
        assert_eq!(query_arg("a=1&apikey=k&x", "apikey"), Some("k"));
        assert_eq!(query_arg("apikey", "apikey"), Some(""));
        assert_eq!(query_arg("apikeyx=1", "apikey"), None);
    }
}
