//! The list-and-watch loop of one cluster: HTTP requests to the API server, paging, the
//! watch stream, backoff. Parsing and mapping are in [`super::parse`].
//!
//! Invariants: the cluster's objects change only from a complete list (all pages) or from
//! watch events that parsed; any failure leaves them as they are and is reported through the
//! feed, then retried after a backoff delay (1, 2, 4 … s, capped at 40 s). The token is read
//! again for every request and never written anywhere but the `Authorization` header.

use super::mapping::{self, Mapper, Object, ObjectKey};
use super::parse::{self, Event, Lines, Next, WatchEnd};
use super::KubernetesCluster;
use crate::{Backoff, Feed, Node};
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{Client, Response, StatusCode};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{sleep, timeout, Instant};

/// TCP connect (and TLS handshake) to the API server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// From sending a request to its response header; also the longest pause inside a list body.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// A watch is given up this long after its `timeoutSeconds` if the server has not ended it.
const WATCH_SLACK: Duration = Duration::from_secs(60);
/// The largest list page accepted.
const MAX_PAGE: usize = 64 << 20;
/// Pages of one list, at most (a server that keeps sending `continue` is an error).
const MAX_PAGES: usize = 10_000;
/// Objects of one cluster, at most: what a hostile or broken server can make Weir hold.
pub(crate) const MAX_OBJECTS: usize = 1_000_000;
/// The longest one list page may take to arrive, however it trickles.
const PAGE_DEADLINE: Duration = Duration::from_secs(120);
/// The shortest time between the starts of two lists, and of two watches: a server that ends
/// every request at once is not hammered.
const LIST_GAP: Duration = Duration::from_secs(1);
const WATCH_GAP: Duration = Duration::from_millis(200);

/// Where the clusters of one registry publish: each cluster owns a slot, the feed gets the
/// union (keys of different clusters never collide: they carry the cluster id).
pub(crate) struct Sink {
    pub feed: Arc<Feed>,
    pub slots: Mutex<Vec<HashMap<String, Vec<Node>>>>,
}

impl Sink {
    pub(crate) fn new(feed: Arc<Feed>, clusters: usize) -> Sink {
        Sink {
            feed,
            slots: Mutex::new(vec![HashMap::new(); clusters]),
        }
    }

    /// Replace cluster `slot`'s services and publish the union of all clusters.
    fn publish(&self, slot: usize, services: HashMap<String, Vec<Node>>) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        if let Some(s) = slots.get_mut(slot) {
            *s = services;
        }
        let all: HashMap<String, Vec<Node>> = slots
            .iter()
            .flat_map(|s| s.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect();
        // Under the lock: two clusters never publish out of order.
        self.feed.publish(all);
    }
}

/// A failed request: 410 (list again) or anything else.
enum Failure {
    Gone,
    Other(String),
}

/// One cluster's loop and what it needs.
pub(crate) struct ClusterLoop {
    pub cfg: KubernetesCluster,
    pub mapper: Mapper,
    pub slot: usize,
    /// `kubernetes` or `kubernetes cluster <id>`, for errors.
    pub label: String,
}

impl ClusterLoop {
    fn id(&self) -> Option<&str> {
        self.cfg.id.as_deref()
    }

    fn fail(&self, sink: &Sink, e: &str) {
        sink.feed.failed(format!("{}: {e}", self.label));
    }

    /// List and watch until dropped.
    pub(crate) async fn run(self, sink: Arc<Sink>) {
        let mut backoff = Backoff::doubling(Duration::from_secs(1), Duration::from_secs(40));
        let client = loop {
            match build_client(&self.cfg) {
                Ok(c) => break c,
                Err(e) => {
                    self.fail(&sink, &e);
                    sleep(backoff.next_delay()).await;
                }
            }
        };
        let mut last_list: Option<Instant> = None;
        loop {
            pace(&mut last_list, LIST_GAP).await;
            // A complete list replaces everything this cluster had.
            let (mut objects, mut rv) = match self.list(&client).await {
                Ok((objects, rv)) => {
                    log::debug!(
                        "discovery {}: listed {} objects at resourceVersion {rv}",
                        self.label,
                        objects.len()
                    );
                    sink.publish(self.slot, mapping::build_services(&objects, self.id()));
                    (objects, rv)
                }
                Err(e) => {
                    self.fail(&sink, &e);
                    sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            let mut last_watch: Option<Instant> = None;
            for watches in 1.. {
                pace(&mut last_watch, WATCH_GAP).await;
                let (end, established) = self.watch(&client, &mut objects, &mut rv, &sink).await;
                // The API server answers lists and watches again: the next failure starts
                // the delays over. (A list alone does not: a server that lists but refuses
                // every watch is not retried every second.)
                if established {
                    backoff.reset();
                }
                match parse::next_step(&end, watches) {
                    Next::Watch => {}
                    Next::Relist => break,
                    Next::Backoff(e) => {
                        self.fail(&sink, &e);
                        sleep(backoff.next_delay()).await;
                        break;
                    }
                }
            }
        }
    }

    /// `GET url` with the token and `Accept: application/json`, up to the response header.
    async fn get(&self, client: &Client, url: &str) -> Result<Response, Failure> {
        let headers = self.headers().map_err(Failure::Other)?;
        let sent = timeout(RESPONSE_TIMEOUT, client.get(url).headers(headers).send()).await;
        let resp = match sent {
            Err(_) => {
                return Err(Failure::Other(format!(
                    "no answer within {}s from {}",
                    RESPONSE_TIMEOUT.as_secs(),
                    path_of(url)
                )))
            }
            Ok(Err(e)) => return Err(Failure::Other(error_text(&e))),
            Ok(Ok(r)) => r,
        };
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::GONE => Err(Failure::Gone),
            s => Err(Failure::Other(format!(
                "HTTP {} from {}",
                s.as_u16(),
                path_of(url)
            ))),
        }
    }

    /// The request headers; the token file is read now, every time.
    fn headers(&self) -> Result<HeaderMap, String> {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static("application/json"));
        let token = match &self.cfg.token {
            Some(t) => t.trim().to_owned(),
            None => std::fs::read_to_string(&self.cfg.token_file)
                .map_err(|e| format!("cannot read token_file {}: {e}", self.cfg.token_file))?
                .trim()
                .to_owned(),
        };
        if !token.is_empty() {
            let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "the token is not a valid header value".to_owned())?;
            v.set_sensitive(true);
            h.insert(AUTHORIZATION, v);
        }
        Ok(h)
    }

    /// A complete list, all pages: the objects and the list's resourceVersion.
    async fn list(&self, client: &Client) -> Result<(BTreeMap<ObjectKey, Object>, String), String> {
        let mut objects = BTreeMap::new();
        let mut cont: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let url = parse::list_url(&self.cfg.base_url, &self.mapper, cont.as_deref())?;
            let resp = match self.get(client, &url).await {
                Ok(r) => r,
                Err(Failure::Gone) => return Err(format!("HTTP 410 from {}", path_of(&url))),
                Err(Failure::Other(e)) => return Err(e),
            };
            let body = read_body(resp, &url).await?;
            let page = parse::parse_page(&body, &self.mapper)?;
            objects.extend(page.objects);
            if objects.len() > MAX_OBJECTS {
                return Err(format!(
                    "list from {} has over {MAX_OBJECTS} objects",
                    path_of(&url)
                ));
            }
            match page.cont {
                Some(c) => cont = Some(c),
                None => return Ok((objects, page.resource_version)),
            }
        }
        Err(format!("list did not end within {MAX_PAGES} pages"))
    }

    /// One watch from `rv`: applies its events to `objects` and publishes after every chunk that
    /// changed something. Returns how it ended and whether the server accepted it (2xx).
    async fn watch(
        &self,
        client: &Client,
        objects: &mut BTreeMap<ObjectKey, Object>,
        rv: &mut String,
        sink: &Sink,
    ) -> (WatchEnd, bool) {
        let secs = parse::watch_timeout(fastrand::u64(9..=999));
        let url = match parse::watch_url(&self.cfg.base_url, &self.mapper, rv, secs) {
            Ok(u) => u,
            Err(e) => return (WatchEnd::Failed(e), false),
        };
        let resp = match self.get(client, &url).await {
            Ok(r) => r,
            Err(Failure::Gone) => return (WatchEnd::Expired, false),
            Err(Failure::Other(e)) => return (WatchEnd::Failed(e), false),
        };
        let deadline = Instant::now() + Duration::from_secs(secs) + WATCH_SLACK;
        let mut stream = resp.bytes_stream();
        let mut lines = Lines::default();
        loop {
            let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
                Err(_) => return (WatchEnd::Closed, true),
                Ok(None) => None,
                Ok(Some(Err(e))) => return (WatchEnd::Failed(error_text(&e)), true),
                Ok(Some(Ok(c))) => Some(c),
            };
            let batch = match &chunk {
                Some(c) => match lines.push(c) {
                    Ok(b) => b,
                    Err(e) => return (WatchEnd::Failed(e), true),
                },
                None => lines.finish().into_iter().collect(),
            };
            let mut changed = false;
            let mut end = None;
            for line in &batch {
                match self.apply(line, objects, rv) {
                    Ok(c) => changed |= c,
                    Err(e) => {
                        end = Some(e);
                        break;
                    }
                }
            }
            if changed {
                sink.publish(self.slot, mapping::build_services(objects, self.id()));
            }
            if let Some(e) = end {
                return (e, true);
            }
            if chunk.is_none() {
                return (WatchEnd::Closed, true);
            }
        }
    }

    /// Apply one event line. `Ok(true)` when the objects changed; `Err` ends the watch.
    fn apply(
        &self,
        line: &[u8],
        objects: &mut BTreeMap<ObjectKey, Object>,
        rv: &mut String,
    ) -> Result<bool, WatchEnd> {
        let ev = parse::parse_event(line, &self.mapper).map_err(WatchEnd::Failed)?;
        if let Some(v) = ev.resource_version {
            *rv = v;
        }
        Ok(match ev.event {
            Event::Put(key, Some(_))
                if objects.len() >= MAX_OBJECTS && !objects.contains_key(&key) =>
            {
                return Err(WatchEnd::Failed(format!(
                    "watch would hold over {MAX_OBJECTS} objects"
                )))
            }
            Event::Put(key, Some(o)) => objects.insert(key, o.clone()).as_ref() != Some(&o),
            Event::Put(key, None) | Event::Delete(key) => objects.remove(&key).is_some(),
            Event::Bookmark => false,
            Event::Skip(why) => {
                log::warn!("discovery {}: skipping a watch event: {why}", self.label);
                false
            }
            Event::Expired => return Err(WatchEnd::Expired),
            Event::Failed(e) => return Err(WatchEnd::Failed(e)),
        })
    }
}

/// Wait until `gap` has passed since `last`, then set `last` to now.
async fn pace(last: &mut Option<Instant>, gap: Duration) {
    if let Some(t) = *last {
        tokio::time::sleep_until(t + gap).await;
    }
    *last = Some(Instant::now());
}

/// The whole body of a list page, with a pause limit between chunks, an overall deadline and
/// a size limit.
async fn read_body(resp: Response, url: &str) -> Result<Vec<u8>, String> {
    match timeout(PAGE_DEADLINE, read_chunks(resp, url)).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "list page from {} took over {PAGE_DEADLINE:?}",
            path_of(url)
        )),
    }
}

async fn read_chunks(mut resp: Response, url: &str) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match timeout(RESPONSE_TIMEOUT, resp.chunk()).await {
            Err(_) => return Err(format!("list body from {} stalled", path_of(url))),
            Ok(Err(e)) => return Err(error_text(&e)),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(c))) => {
                body.extend_from_slice(&c);
                if body.len() > MAX_PAGE {
                    return Err(format!(
                        "list page from {} over {MAX_PAGE} bytes",
                        path_of(url)
                    ));
                }
            }
        }
    }
}

/// The HTTP/1.1 client of a cluster: TLS verification per `ssl_verify` and `ca_file`, no
/// proxy from the environment, no automatic redirects.
fn build_client(cfg: &KubernetesCluster) -> Result<Client, String> {
    let mut b = Client::builder()
        .http1_only()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_keepalive(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(60));
    if !cfg.ssl_verify {
        b = b
            .tls_danger_accept_invalid_certs(true)
            .tls_danger_accept_invalid_hostnames(true);
    } else if let Some(path) = &cfg.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read ca_file {path}: {e}"))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("ca_file {path}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("ca_file {path}: no certificate"));
        }
        b = b.tls_certs_only(certs);
    }
    b.build().map_err(|e| error_text(&e))
}

/// An error with its causes ("error sending request …: connection refused").
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cause = c.source();
    }
    text
}

/// The path of `url` without the query, for messages.
fn path_of(url: &str) -> &str {
    let start = url.find("://").map(|i| i + 3).unwrap_or(0);
    let path = url
        .get(start..)
        .and_then(|rest| rest.find('/'))
        .map(|i| start + i)
        .unwrap_or(url.len());
    let end = url.find('?').unwrap_or(url.len());
    url.get(path..end.max(path)).unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_for_messages() {
        assert_eq!(
            path_of("http://k:1/api/v1/endpoints?limit=120"),
            "/api/v1/endpoints"
        );
        assert_eq!(path_of("http://k:1/api/v1/endpoints"), "/api/v1/endpoints");
        assert_eq!(path_of("http://k:1"), "");
    }
}
