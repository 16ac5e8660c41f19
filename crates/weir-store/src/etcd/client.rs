//! The low-level etcd layer: one gRPC connection to one etcd endpoint, with the four
//! operations the etcd source needs and nothing of Weir's resources.
//!
//! - [`EtcdConn::connect`] dials one endpoint of an [`EtcdSource`] with its timeout, user and
//!   TLS, and proves the connection with a request, so a dead endpoint fails here (within about
//!   the timeout) and not at the first read.
//! - [`EtcdConn::list`] reads a prefix range in pages, every page at the revision of the first,
//!   so the [`Listing`] is one consistent snapshot however many keys there are.
//! - [`EtcdConn::watch`] watches the prefix range from a revision; [`Watch::next`] yields the
//!   event batches, or [`WatchItem::Compacted`] when etcd no longer has the history asked for.
//! - [`EtcdConn::put`] / [`EtcdConn::delete`] write one key.
//!
//! Failures are [`EtcdError`]s that name the endpoint and the operation (`etcd
//! http://127.0.0.1:2379: range /weir/: Unavailable: ...`) and never contain the password.
//! There is no retry or fail-over here: a caller that gets an error (a watch included) drops the
//! connection and connects again, to the same or the next endpoint.
//!
//! Liveness: every request is bounded by the configured timeout (also the connect timeout).
//! A watch has no such bound (it may rightly be quiet for hours), so the connection sends
//! HTTP/2 keep-alive pings every [`KEEP_ALIVE_INTERVAL`] while a stream is open and drops the
//! connection when one is not answered within the timeout: a watch on an etcd that went away
//! without closing the connection ends with an error instead of hanging. Pings are not sent on
//! an idle connection: etcd's gRPC server (`PermitWithoutStream: false`) answers pings without an
//! open stream more often than every two hours with a `too_many_pings` GOAWAY.

use etcd_client::{
    BalancedChannelBuilder, Channel, Client, ConnectOptions, DeleteOptions, EventType, GetOptions,
    KvClient, WatchClient, WatchOptions, WatchResponse, WatchStream,
};
use hyper_openssl::client::legacy::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslConnector, SslConnectorBuilder, SslMethod, SslVerifyMode};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::X509;
use std::fmt;
use std::future::Future;
use std::time::Duration;
use tonic::transport::channel::Change;
use tonic::transport::Endpoint;
use weir_config::{EtcdSource, EtcdTls};

/// The HTTP/2 ping interval of a connection with an open watch (etcd's server refuses pings
/// more frequent than its `--grpc-keepalive-min-time`, 5 s by default).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// The largest gRPC message accepted from etcd (a page of values, a watch response of one big
/// transaction). etcd itself limits a request to 1.5 MiB by default but not its responses.
const MAX_MESSAGE_SIZE: usize = 256 * 1024 * 1024;

/// One key with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision of the key's last modification.
    pub mod_revision: i64,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(Kv),
    /// `mod_revision` is the revision of the deletion.
    Delete {
        key: String,
        mod_revision: i64,
    },
}

/// Every key of a prefix at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The store revision the listing was read at: watch from `revision + 1` to see every
    /// later change.
    pub revision: i64,
    /// In key order.
    pub kvs: Vec<Kv>,
}

/// What [`Watch::next`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    /// Events in revision order. `revision` is the revision of the last event of the response:
    /// every change up to and including it has been delivered, so a new watch resumes from
    /// `revision + 1`. `events` is empty only when every event of the response was skipped (a
    /// key that is not UTF-8).
    Batch { revision: i64, events: Vec<Event> },
    /// The start revision is no longer available (compacted up to `compact_revision`): the
    /// watch is over; list again and watch from the listing's revision + 1.
    Compacted { compact_revision: i64 },
}

/// An etcd failure: `etcd <endpoint>: <operation>: <reason>`. It never contains the password.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdError {
    message: String,
}

impl EtcdError {
    fn new(
        endpoint: &str,
        op: impl fmt::Display,
        reason: impl fmt::Display,
        secret: Option<&str>,
    ) -> EtcdError {
        let mut message = format!("etcd {endpoint}: {op}: {reason}");
        if let Some(secret) = secret.filter(|s| !s.is_empty()) {
            // Nothing etcd or the transport says should echo the password; make sure of it.
            message = message.replace(secret, "***");
        }
        EtcdError { message }
    }

    /// The whole message (what `Display` shows).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EtcdError").field(&self.message).finish()
    }
}

impl std::error::Error for EtcdError {}

/// The reason of an etcd-client error: the gRPC code and message, then the causes not already
/// in the text (the transport's "connection refused", an OpenSSL verify failure).
fn describe(e: &etcd_client::Error) -> String {
    let (mut out, mut source): (String, Option<&(dyn std::error::Error + 'static)>) = match e {
        etcd_client::Error::GRpcStatus(s) => {
            let text = if s.message().is_empty() {
                format!("{:?}", s.code())
            } else {
                format!("{:?}: {}", s.code(), s.message())
            };
            (text, std::error::Error::source(s))
        }
        etcd_client::Error::TransportError(t) => (t.to_string(), std::error::Error::source(t)),
        etcd_client::Error::IoError(io) => (io.to_string(), std::error::Error::source(io)),
        other => (other.to_string(), None),
    };
    while let Some(s) = source {
        let text = s.to_string();
        // tonic's wrapper says only "transport error"; its cause says what.
        if !text.is_empty() && text != "transport error" && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The end of the range of keys that start with `prefix` (etcd's "prefix end"): the prefix
/// with its last byte below 0xff incremented; `\0` (no end) when there is none.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    for (i, b) in prefix.iter().enumerate().rev() {
        if *b < 0xff {
            let mut end = prefix[..=i].to_vec();
            end[i] = *b + 1;
            return end;
        }
    }
    vec![0]
}

/// The first key of the prefix range (etcd refuses an empty key: the empty prefix is `\0`).
fn range_start(prefix: &str) -> Vec<u8> {
    if prefix.is_empty() {
        vec![0]
    } else {
        prefix.as_bytes().to_vec()
    }
}

/// A key as a string, or `None` (with a warning) when it is not UTF-8.
fn utf8_key(endpoint: &str, key: &[u8]) -> Option<String> {
    match std::str::from_utf8(key) {
        Ok(k) => Some(k.to_owned()),
        Err(_) => {
            log::warn!(
                "etcd {endpoint}: skipping key {:?}: not UTF-8",
                String::from_utf8_lossy(key)
            );
            None
        }
    }
}

fn read_file(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))
}

fn read_certs(path: &str) -> Result<Vec<X509>, String> {
    let pem = read_file(path)?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| format!("{path:?}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path:?}: no PEM certificate"));
    }
    Ok(certs)
}

fn read_key(path: &str) -> Result<PKey<Private>, String> {
    let pem = read_file(path)?;
    PKey::private_key_from_pem(&pem).map_err(|e| format!("{path:?}: {e}"))
}

/// The OpenSSL client settings of `tls`: only `ca_file` is trusted when it is given (else the
/// system's store), the client chain of `cert_file` (leaf first) with `key_file`, and
/// `verify: false` accepts any certificate and host name.
fn tls_config(tls: &EtcdTls) -> Result<SslConnectorBuilder, String> {
    let ca = tls.ca_file.as_deref().map(read_certs).transpose()?;
    let identity = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some((read_certs(cert)?, read_key(key)?)),
        (None, None) => None,
        _ => return Err("cert_file and key_file must be given together".to_owned()),
    };
    let build = || -> Result<SslConnectorBuilder, openssl::error::ErrorStack> {
        let mut b = SslConnector::builder(SslMethod::tls_client())?;
        // gRPC needs HTTP/2, which etcd only speaks when ALPN chose it.
        b.set_alpn_protos(b"\x02h2")?;
        if let Some(ca) = ca {
            let mut store = X509StoreBuilder::new()?;
            for cert in ca {
                store.add_cert(cert)?;
            }
            b.set_cert_store(store.build());
        }
        if let Some((chain, key)) = identity {
            let mut chain = chain.into_iter();
            if let Some(leaf) = chain.next() {
                b.set_certificate(&leaf)?;
            }
            for cert in chain {
                b.add_extra_chain_cert(cert)?;
            }
            b.set_private_key(&key)?;
            b.check_private_key()?;
        }
        if !tls.verify {
            b.set_verify(SslVerifyMode::NONE);
        }
        Ok(b)
    };
    build().map_err(|e| e.to_string())
}

/// How a connection to one endpoint is dialled: with `TCP_NODELAY`, plain or through OpenSSL.
///
/// Written here because etcd-client's own OpenSSL transport dials with hyper's
/// `HttpConnector`, which leaves Nagle's algorithm on: every small gRPC request then waited
/// for the delayed ACK of the previous one, about 40 ms per Admin API write (measured). tonic's
/// plain channel sets `TCP_NODELAY` itself.
struct Dialer {
    /// The endpoint as configured (`https://...` with TLS).
    url: String,
    tls: Option<SslConnectorBuilder>,
    timeout: Duration,
}

impl BalancedChannelBuilder for Dialer {
    type Error = etcd_client::Error;

    fn balanced_channel(
        self,
        buffer: usize,
    ) -> Result<
        (
            Channel,
            tokio::sync::mpsc::Sender<Change<http::Uri, Endpoint>>,
        ),
        Self::Error,
    > {
        let Some(ssl) = self.tls else {
            let (channel, tx) = tonic::transport::Channel::balance_channel(buffer);
            return Ok((Channel::Tonic(channel), tx));
        };
        let invalid = |e: String| etcd_client::Error::InvalidArgs(e);
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(self.timeout));
        let https =
            HttpsConnector::with_connector(http, ssl).map_err(|e| invalid(e.to_string()))?;
        let endpoint = Endpoint::from_shared(self.url)
            .map_err(|e| invalid(e.to_string()))?
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(self.timeout)
            .keep_alive_while_idle(false);
        let channel = endpoint.connect_with_connector_lazy(https);
        // etcd-client announces the endpoint on this channel; this one is already dialled
        // through OpenSSL above.
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        Ok((Channel::Tonic(channel), tx))
    }
}

/// A client connected to one etcd endpoint.
pub struct EtcdConn {
    endpoint: String,
    timeout: Duration,
    /// For the status probe of `connect`.
    client: Client,
    kv: KvClient,
    watch: WatchClient,
    /// The password, only to keep it out of error messages.
    secret: Option<String>,
}

impl fmt::Debug for EtcdConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConn")
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Run `fut` with a deadline of `timeout` (tonic's own request timeout normally fires first;
/// this also bounds a request that waits for a ready connection).
async fn bounded<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

impl EtcdConn {
    /// Connect to `endpoint` (one of `cfg.endpoints`) with `cfg`'s timeout (as the request
    /// and the connect timeout), user and password, and TLS (`ca_file`, `cert_file` +
    /// `key_file` read from disk now; `verify: false` disables the verification of etcd's
    /// certificate). A status request proves the connection, so this fails within about
    /// `cfg.timeout` (twice that with a user: authenticating is one more request) when the
    /// endpoint does not answer.
    pub async fn connect(cfg: &EtcdSource, endpoint: &str) -> Result<EtcdConn, EtcdError> {
        let secret = cfg
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .filter(|p| !p.is_empty());
        let err =
            |op: &str, reason: String| EtcdError::new(endpoint, op, reason, secret.as_deref());

        let mut options = ConnectOptions::new()
            .with_timeout(cfg.timeout)
            .with_connect_timeout(cfg.timeout)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, cfg.timeout)
            .with_keep_alive_while_idle(false)
            // A member cut off from its cluster fails requests and watches instead of serving
            // stale data or a watch that never sees another event.
            .with_require_leader(true)
            // etcd's simple tokens expire after 5 idle minutes (--auth-token-ttl): a request
            // refused for an expired token authenticates again and is retried once.
            .with_auto_token_refresh(true);
        if let Some(user) = &cfg.user {
            let password = cfg.password.as_ref().map(|p| p.expose()).unwrap_or("");
            options = options.with_user(user.as_str(), password);
        }
        // `https://` without a `tls` block: TLS verified against the system's trust store.
        let default_tls = EtcdTls {
            ca_file: None,
            cert_file: None,
            key_file: None,
            verify: true,
        };
        let tls = match (&cfg.tls, endpoint.starts_with("https://")) {
            (Some(tls), _) => Some(tls),
            (None, true) => Some(&default_tls),
            (None, false) => None,
        };
        let tls = match tls {
            Some(tls) => Some(tls_config(tls).map_err(|e| err("connect", format!("tls: {e}")))?),
            None => None,
        };
        let dialer = Dialer {
            url: endpoint.to_owned(),
            tls,
            timeout: cfg.timeout,
        };
        // etcd-client builds its endpoint from this URL; with TLS the dialer above connects
        // (through OpenSSL, to the `https://` URL) and the plain form only keeps etcd-client
        // from asking for a TLS feature of its own.
        let announced = match endpoint.strip_prefix("https://") {
            Some(rest) => format!("http://{rest}"),
            None => endpoint.to_owned(),
        };
        // With a user, etcd-client authenticates here; without one it connects lazily.
        let connect = Client::connect_with_balanced_channel([announced], Some(options), dialer);
        let mut client = bounded(cfg.timeout, connect)
            .await
            .map_err(|e| match &cfg.user {
                Some(user) => err("connect", format!("authenticating as {user:?}: {e}")),
                None => err("connect", e),
            })?;
        bounded(cfg.timeout, client.status())
            .await
            .map_err(|e| err("connect", format!("status: {e}")))?;

        let kv = client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE_SIZE);
        let watch = client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE_SIZE);
        Ok(EtcdConn {
            endpoint: endpoint.to_owned(),
            timeout: cfg.timeout,
            client,
            kv,
            watch,
            secret,
        })
    }

    /// The endpoint this connection is to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn error(&self, op: impl fmt::Display, reason: impl fmt::Display) -> EtcdError {
        EtcdError::new(&self.endpoint, op, reason, self.secret.as_deref())
    }

    /// Every key under `prefix` (a byte prefix: `/weir/` lists `/weir/routes/1`), read in pages
    /// of `page_size` keys (0: all in one response), every page at the revision of the first,
    /// in key order. Keys that are not UTF-8 are skipped with a warning. Fails (and may be
    /// tried again) when that revision is compacted before the last page is read.
    pub async fn list(&mut self, prefix: &str, page_size: i64) -> Result<Listing, EtcdError> {
        self.list_with(prefix, page_size, |_| async {}).await
    }

    /// [`list`](Self::list), awaiting `between_pages(keys read so far)` after every page but
    /// the last (progress reports; tests write there to see that later pages stay at the first
    /// page's revision).
    pub async fn list_with<F, Fut>(
        &mut self,
        prefix: &str,
        page_size: i64,
        mut between_pages: F,
    ) -> Result<Listing, EtcdError>
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = ()>,
    {
        let op = format!("range {prefix}");
        let end = prefix_end(prefix.as_bytes());
        let mut from = range_start(prefix);
        let mut revision = 0;
        let mut kvs = Vec::new();
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(page_size.max(0));
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let mut resp = bounded(self.timeout, self.kv.get(from.clone(), Some(options)))
                .await
                .map_err(|e| self.error(&op, e))?;
            if revision == 0 {
                revision = match resp.header() {
                    Some(h) if h.revision() > 0 => h.revision(),
                    _ => return Err(self.error(&op, "response without a revision")),
                };
            }
            let more = resp.more();
            let page = resp.take_kvs();
            let Some(last) = page.last().map(|kv| kv.key().to_vec()) else {
                break;
            };
            for kv in page {
                let mod_revision = kv.mod_revision();
                let (key, value) = kv.into_key_value();
                if let Some(key) = utf8_key(&self.endpoint, &key) {
                    kvs.push(Kv {
                        key,
                        value,
                        mod_revision,
                    });
                }
            }
            if !more {
                break;
            }
            between_pages(kvs.len()).await;
            // The next page starts right after the last key of this one.
            from = last;
            from.push(0);
        }
        Ok(Listing { revision, kvs })
    }

    /// One key, or `None` when it does not exist.
    pub async fn get(&mut self, key: &str) -> Result<Option<Kv>, EtcdError> {
        let op = format!("range {key}");
        let mut resp = bounded(self.timeout, self.kv.get(key, None))
            .await
            .map_err(|e| self.error(&op, e))?;
        Ok(resp.take_kvs().into_iter().next().map(|kv| {
            let mod_revision = kv.mod_revision();
            let (_, value) = kv.into_key_value();
            Kv {
                key: key.to_owned(),
                value,
                mod_revision,
            }
        }))
    }

    /// Watch the prefix range from `start_revision` (inclusive; 0 is "from now"). Returns once
    /// etcd confirmed the watch (its "created" response), within the timeout.
    pub async fn watch(&mut self, prefix: &str, start_revision: i64) -> Result<Watch, EtcdError> {
        let op = format!("watch {prefix} from revision {start_revision}");
        let options = WatchOptions::new()
            .with_range(prefix_end(prefix.as_bytes()))
            .with_start_revision(start_revision);
        let client = &mut self.watch;
        let created = async {
            let mut stream = client.watch(range_start(prefix), Some(options)).await?;
            loop {
                match stream.message().await? {
                    Some(resp) if resp.created() => return Ok(Ok((stream, resp))),
                    // Nothing comes before "created"; tolerate it anyway.
                    Some(_) => continue,
                    None => return Ok(Err("stream ended before the watch was created")),
                }
            }
        };
        let (stream, resp) = match bounded(self.timeout, created).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Err(self.error(&op, e)),
            Err(e) => return Err(self.error(&op, e)),
        };
        let mut watch = Watch {
            endpoint: self.endpoint.clone(),
            op,
            stream,
            pending: None,
            ended: false,
            secret: self.secret.clone(),
        };
        // The created response may already say the watch is over (compacted, refused).
        match watch.classify(resp) {
            Classified::Skip => {}
            Classified::Item(item) => watch.pending = Some(item),
            Classified::Canceled(reason) => return Err(watch.error(reason)),
        }
        Ok(watch)
    }

    /// Put one key; returns the revision of the write.
    pub async fn put(&mut self, key: &str, value: &[u8]) -> Result<i64, EtcdError> {
        let op = format!("put {key}");
        let resp = bounded(self.timeout, self.kv.put(key, value, None))
            .await
            .map_err(|e| self.error(&op, e))?;
        match resp.header() {
            Some(h) => Ok(h.revision()),
            None => Err(self.error(&op, "response without a revision")),
        }
    }

    /// Delete one key; returns the revision of the write (the current revision, unchanged,
    /// when the key did not exist).
    pub async fn delete(&mut self, key: &str) -> Result<i64, EtcdError> {
        let op = format!("delete {key}");
        let resp = bounded(
            self.timeout,
            self.kv.delete(key, Some(DeleteOptions::new())),
        )
        .await
        .map_err(|e| self.error(&op, e))?;
        match resp.header() {
            Some(h) => Ok(h.revision()),
            None => Err(self.error(&op, "response without a revision")),
        }
    }

    /// Write `key` (`Some(value)`: put, `None`: delete) only if nothing under `prefix` was
    /// created or changed after revision `since`, every key of `existing` still exists, and
    /// (with `create`) `key` does not exist yet: one etcd transaction. `Ok(Ok(revision))`
    /// when written, `Ok(Err(current))` when a condition failed (a concurrent write
    /// elsewhere), with etcd's current revision.
    pub async fn write_if(
        &mut self,
        prefix: &str,
        since: i64,
        existing: &[String],
        create: bool,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<Result<i64, i64>, EtcdError> {
        use etcd_client::{Compare, CompareOp, Txn, TxnOp};
        let op = format!("write {key}");
        let mut when = vec![
            Compare::mod_revision(range_start(prefix), CompareOp::Less, since + 1)
                .with_range(prefix_end(prefix.as_bytes())),
        ];
        for k in existing {
            when.push(Compare::version(k.as_str(), CompareOp::Greater, 0));
        }
        if create {
            when.push(Compare::create_revision(key, CompareOp::Equal, 0));
        }
        let then = match value {
            Some(v) => TxnOp::put(key, v, None),
            None => TxnOp::delete(key, None),
        };
        let txn = Txn::new().when(when).and_then(vec![then]);
        let resp = bounded(self.timeout, self.kv.txn(txn))
            .await
            .map_err(|e| self.error(&op, e))?;
        match (resp.header(), resp.succeeded()) {
            (Some(h), true) => Ok(Ok(h.revision())),
            (Some(h), false) => Ok(Err(h.revision())),
            (None, _) => Err(self.error(&op, "response without a revision")),
        }
    }

    /// The underlying etcd-client (for what this layer does not offer).
    pub fn raw(&mut self) -> &mut Client {
        &mut self.client
    }
}

enum Classified {
    Skip,
    Item(WatchItem),
    Canceled(String),
}

/// An open watch (see [`EtcdConn::watch`]). It holds its own gRPC stream: dropping it cancels
/// the watch.
pub struct Watch {
    endpoint: String,
    op: String,
    /// Holds the request half too: dropping it would end the stream.
    stream: WatchStream,
    /// An item of the created response, returned by the first `next`.
    pending: Option<WatchItem>,
    /// A compaction, a cancel or an error was returned: nothing more will come.
    ended: bool,
    secret: Option<String>,
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch")
            .field("endpoint", &self.endpoint)
            .field("op", &self.op)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Watch {
    fn error(&self, reason: impl fmt::Display) -> EtcdError {
        EtcdError::new(&self.endpoint, &self.op, reason, self.secret.as_deref())
    }

    fn classify(&self, resp: WatchResponse) -> Classified {
        if resp.compact_revision() > 0 {
            return Classified::Item(WatchItem::Compacted {
                compact_revision: resp.compact_revision(),
            });
        }
        if resp.canceled() {
            let reason = if resp.cancel_reason().is_empty() {
                "canceled by etcd".to_owned()
            } else {
                format!("canceled by etcd: {}", resp.cancel_reason())
            };
            return Classified::Canceled(reason);
        }
        let raw = resp.events();
        if raw.is_empty() {
            // "created" and progress notifications.
            return Classified::Skip;
        }
        let mut revision = 0;
        let mut events = Vec::with_capacity(raw.len());
        for ev in raw {
            let Some(kv) = ev.kv() else {
                log::warn!(
                    "etcd {}: {}: skipping an event without a key",
                    self.endpoint,
                    self.op
                );
                continue;
            };
            let mod_revision = kv.mod_revision();
            revision = revision.max(mod_revision);
            let Some(key) = utf8_key(&self.endpoint, kv.key()) else {
                continue;
            };
            events.push(match ev.event_type() {
                EventType::Put => Event::Put(Kv {
                    key,
                    value: kv.value().to_vec(),
                    mod_revision,
                }),
                EventType::Delete => Event::Delete { key, mod_revision },
            });
        }
        if revision == 0 {
            revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        }
        Classified::Item(WatchItem::Batch { revision, events })
    }

    /// The next batch of events. A compaction of the start revision yields
    /// [`WatchItem::Compacted`] (and ends the watch); a watch canceled by etcd, the end of the
    /// stream or a transport error (a dead connection included, found by keep-alive) is an
    /// error: connect again. Responses without events ("created", progress) are skipped.
    /// After a `Compacted` or an error, every call fails at once.
    pub async fn next(&mut self) -> Result<WatchItem, EtcdError> {
        if let Some(item) = self.pending.take() {
            self.ended = matches!(item, WatchItem::Compacted { .. });
            return Ok(item);
        }
        if self.ended {
            return Err(self.error("the watch has ended"));
        }
        loop {
            let resp = match self.stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    self.ended = true;
                    return Err(self.error("the stream ended"));
                }
                Err(e) => {
                    self.ended = true;
                    return Err(self.error(describe(&e)));
                }
            };
            match self.classify(resp) {
                Classified::Skip => continue,
                Classified::Item(item) => {
                    self.ended = matches!(item, WatchItem::Compacted { .. });
                    return Ok(item);
                }
                Classified::Canceled(reason) => {
                    self.ended = true;
                    return Err(self.error(reason));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/weir/"), b"/weir0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
        assert_eq!(range_start(""), vec![0]);
    }

    #[test]
    fn errors_hide_the_password() {
        let e = EtcdError::new("http://h:1", "put /k", "bad s3cret here", Some("s3cret"));
        assert_eq!(e.to_string(), "etcd http://h:1: put /k: bad *** here");
        assert!(!format!("{e:?}").contains("s3cret"));
    }
}
