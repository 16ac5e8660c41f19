//! HTTP side of the Nacos registry: login with a cached token per host, and one service's
//! instance list. Errors say which host and service failed, never a password, token or
//! signature (they travel in the query, which error texts leave out).

use super::parse::{self, Target};
use super::{NacosConfig, NacosHost};
use crate::consul::http::{self, Reply};
use crate::Node;
use reqwest::Url;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Why a service could not be fetched from a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The host cannot answer (connection, timeout, login): the host's turn is over.
    Host(String),
    /// This service only (a non-200 status, a malformed body): the others are still asked.
    Service(String),
}

struct Token {
    value: String,
    /// Renew from this instant on (shortly before the token's end).
    renew_at: Instant,
}

/// The HTTP client of one Nacos registry and its access tokens, one per host.
pub(crate) struct Client {
    http: reqwest::Client,
    tokens: Vec<Option<Token>>,
}

/// How long before its end a token is renewed: a tenth of its life, at most a minute.
fn renew_margin(ttl: Duration) -> Duration {
    (ttl / 10).min(Duration::from_secs(60))
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

impl Client {
    pub fn new(cfg: &NacosConfig) -> Result<Client, String> {
        Ok(Client {
            http: http::client(cfg.connect_timeout, Some(cfg.read_timeout))?,
            tokens: cfg.hosts.iter().map(|_| None).collect(),
        })
    }

    /// `<host><prefix><path>` as a URL.
    fn url(cfg: &NacosConfig, host: &NacosHost, path: &str) -> Result<Url, String> {
        let base = host.base_url.trim_end_matches('/');
        let s = format!("{base}{}{path}", cfg.prefix);
        Url::parse(&s).map_err(|e| format!("invalid host URL {base:?}: {e}"))
    }

    async fn send(
        &self,
        cfg: &NacosConfig,
        req: reqwest::RequestBuilder,
        shown: &str,
    ) -> Result<Reply, String> {
        let total = cfg.connect_timeout + cfg.send_timeout + cfg.read_timeout;
        http::send(req.timeout(total))
            .await
            .map_err(|e| format!("{shown}: {e}"))
    }

    /// The access token for host `i`, logging in when there is none or it is about to
    /// expire; `None` when the host has no credentials.
    pub async fn token(&mut self, cfg: &NacosConfig, i: usize) -> Result<Option<String>, String> {
        let Some(host) = cfg.hosts.get(i) else {
            return Err(format!("no host {i}"));
        };
        let Some((user, pass)) = &host.credentials else {
            return Ok(None);
        };
        if let Some(Some(t)) = self.tokens.get(i) {
            if Instant::now() < t.renew_at {
                return Ok(Some(t.value.clone()));
            }
        }
        let mut url = Self::url(cfg, host, "auth/login")?;
        url.query_pairs_mut()
            .append_pair("username", user)
            .append_pair("password", pass);
        let shown = format!("POST {}", http::shown(&url));
        let r = self.send(cfg, self.http.post(url), &shown).await?;
        if !r.is_success() {
            // The body of a refused login is the server's reason, never a credential.
            return Err(format!(
                "{shown}: HTTP {} {}",
                r.status,
                http::snippet(&r.body, 200)
            ));
        }
        let (value, ttl) = parse::parse_login(&r.body).map_err(|e| format!("{shown}: {e}"))?;
        let renew_at = Instant::now() + ttl.saturating_sub(renew_margin(ttl));
        if let Some(slot) = self.tokens.get_mut(i) {
            *slot = Some(Token {
                value: value.clone(),
                renew_at,
            });
        }
        Ok(Some(value))
    }

    /// Forget host `i`'s token (the host refused it): the next request logs in again.
    fn drop_token(&mut self, i: usize) {
        if let Some(slot) = self.tokens.get_mut(i) {
            *slot = None;
        }
    }

    /// The instances of `t` on host `i`. A 401/403 with a cached token logs in again and
    /// retries once (the host may have restarted and forgotten its tokens).
    pub async fn instances(
        &mut self,
        cfg: &NacosConfig,
        i: usize,
        t: &Target,
    ) -> Result<Vec<Node>, Failure> {
        let mut retried = false;
        loop {
            let token = self.token(cfg, i).await.map_err(Failure::Host)?;
            let has_token = token.is_some();
            let r = self.list(cfg, i, t, token.as_deref()).await?;
            if matches!(r.status, 401 | 403) && has_token && !retried {
                log::info!(
                    "discovery nacos: host {i} refused its token (HTTP {}); logging in again",
                    r.status
                );
                self.drop_token(i);
                retried = true;
                continue;
            }
            if r.status != 200 {
                return Err(Failure::Service(format!(
                    "{}: HTTP {} {}",
                    t.key(),
                    r.status,
                    http::snippet(&r.body, 200)
                )));
            }
            return parse::parse_instances(&r.body, &t.key(), t.grpc, cfg.weight)
                .map_err(Failure::Service);
        }
    }

    /// `GET <base>ns/instance/list?...` for `t`.
    async fn list(
        &self,
        cfg: &NacosConfig,
        i: usize,
        t: &Target,
        token: Option<&str>,
    ) -> Result<Reply, Failure> {
        let host = cfg
            .hosts
            .get(i)
            .ok_or_else(|| Failure::Host(format!("no host {i}")))?;
        let mut url = Self::url(cfg, host, "ns/instance/list").map_err(Failure::Host)?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("healthyOnly", "true")
                .append_pair("serviceName", &t.name);
            if let Some(tok) = token {
                q.append_pair("accessToken", tok);
            }
            q.append_pair("namespaceId", &t.namespace)
                .append_pair("groupName", &t.group);
            if !cfg.access_key.is_empty() && !cfg.secret_key.is_empty() {
                let data = parse::sign_data(unix_ms(), &t.group, &t.name);
                let sig = parse::signature(&cfg.secret_key, &data).map_err(Failure::Service)?;
                q.append_pair("ak", &cfg.access_key)
                    .append_pair("data", &data)
                    .append_pair("signature", &sig);
            }
        }
        let shown = format!("GET {} ({})", http::shown(&url), t.key());
        let req = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json");
        self.send(cfg, req, &shown).await.map_err(Failure::Host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_shortly_before_they_end() {
        assert_eq!(
            renew_margin(Duration::from_secs(18000)),
            Duration::from_secs(60)
        );
        assert_eq!(
            renew_margin(Duration::from_secs(10)),
            Duration::from_secs(1)
        );
        assert_eq!(renew_margin(Duration::ZERO), Duration::ZERO);
    }
}
