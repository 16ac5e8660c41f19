//! A real gRPC backend (tonic's server, h2c or h2 over TLS with ALPN) and a real gRPC client
//! (tonic's channel), speaking raw-bytes messages so no protoc or generated code is needed.
//!
//! Service `weir.test.Echo`:
//! - `Unary`: answers `<name>:<request>`;
//! - `Stream` (server streaming): the request is a count N; answers N messages `<name>:<i>`;
//! - `Chat` (bidirectional): answers each message with `<name>:<message>`;
//! - `Fail`: `NOT_FOUND` with message `no such thing`, trailers-only;
//! - anything else: `UNIMPLEMENTED`.

use crate::pki::Identity;
use bytes::{Buf, BufMut, Bytes};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio_stream::{Stream, StreamExt};
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Request, Response, Status, Streaming};

/// A codec whose messages are the raw bytes of the gRPC frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

type BoxStream = Pin<Box<dyn Stream<Item = Result<Bytes, Status>> + Send>>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

#[derive(Clone)]
struct Echo {
    name: Arc<str>,
    calls: Arc<AtomicU64>,
    authorities: Arc<Mutex<Vec<String>>>,
}

impl Echo {
    fn reply(&self, msg: &[u8]) -> Bytes {
        let mut v = format!("{}:", self.name).into_bytes();
        v.extend_from_slice(msg);
        Bytes::from(v)
    }
}

impl tower::Service<http::Request<Body>> for Echo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| {
                req.headers()
                    .get("host")
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        if let Ok(mut a) = self.authorities.lock() {
            a.push(authority);
        }
        let echo = self.clone();
        let path = req.uri().path().to_owned();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawCodec);
            let resp = match path.as_str() {
                "/weir.test.Echo/Unary" => grpc.unary(Unary(echo), req).await,
                "/weir.test.Echo/Fail" => grpc.unary(Fail, req).await,
                "/weir.test.Echo/Stream" => grpc.server_streaming(ServerStream(echo), req).await,
                "/weir.test.Echo/Chat" => grpc.streaming(Chat(echo), req).await,
                _ => Status::unimplemented(format!("no method {path}")).into_http(),
            };
            Ok(resp)
        })
    }
}

struct Unary(Echo);

impl tonic::server::UnaryService<Bytes> for Unary {
    type Response = Bytes;
    type Future = BoxFuture<Result<Response<Bytes>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let out = self.0.reply(request.get_ref());
        Box::pin(async move { Ok(Response::new(out)) })
    }
}

struct Fail;

impl tonic::server::UnaryService<Bytes> for Fail {
    type Response = Bytes;
    type Future = BoxFuture<Result<Response<Bytes>, Status>>;

    fn call(&mut self, _request: Request<Bytes>) -> Self::Future {
        Box::pin(async { Err(Status::not_found("no such thing")) })
    }
}

struct ServerStream(Echo);

impl tonic::server::ServerStreamingService<Bytes> for ServerStream {
    type Response = Bytes;
    type ResponseStream = BoxStream;
    type Future = BoxFuture<Result<Response<BoxStream>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let n: u32 = std::str::from_utf8(request.get_ref())
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let echo = self.0.clone();
        Box::pin(async move {
            let items: Vec<Result<Bytes, Status>> = (0..n)
                .map(|i| Ok(echo.reply(i.to_string().as_bytes())))
                .collect();
            let s: BoxStream = Box::pin(tokio_stream::iter(items));
            Ok(Response::new(s))
        })
    }
}

struct Chat(Echo);

impl tonic::server::StreamingService<Bytes> for Chat {
    type Response = Bytes;
    type ResponseStream = BoxStream;
    type Future = BoxFuture<Result<Response<BoxStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        let echo = self.0.clone();
        Box::pin(async move {
            let inbound = request.into_inner();
            let s: BoxStream = Box::pin(inbound.map(move |m| m.map(|b| echo.reply(&b))));
            Ok(Response::new(s))
        })
    }
}

/// A TLS stream the tonic server can serve.
struct TlsConn(tokio_openssl::SslStream<tokio::net::TcpStream>);

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A running gRPC backend. Dropping it stops it.
pub struct GrpcBackend {
    pub addr: SocketAddr,
    calls: Arc<AtomicU64>,
    conns: Arc<AtomicU64>,
    authorities: Arc<Mutex<Vec<String>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GrpcBackend {
    /// h2c (HTTP/2 cleartext, prior knowledge) on an ephemeral port.
    pub fn start(name: &str) -> GrpcBackend {
        Self::start_with(name, None)
    }

    /// HTTP/2 over TLS (ALPN h2) with `identity`.
    pub fn start_tls(name: &str, identity: Identity) -> GrpcBackend {
        Self::start_with(name, Some(identity))
    }

    fn start_with(name: &str, identity: Option<Identity>) -> GrpcBackend {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind gRPC backend");
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let echo = Echo {
            name: Arc::from(name),
            calls: Arc::new(AtomicU64::new(0)),
            authorities: Arc::new(Mutex::new(Vec::new())),
        };
        let (calls, authorities) = (Arc::clone(&echo.calls), Arc::clone(&echo.authorities));
        let conns = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&conns);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let acceptor = identity.map(|id| Arc::new(h2_acceptor(&id)));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let incoming =
                    tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |conn| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        conn
                    });
                let server = tonic::transport::Server::builder();
                let signal = async {
                    let _ = stopped.await;
                };
                let result = match acceptor {
                    None => {
                        server
                            .serve_with_incoming_shutdown(echo, incoming, signal)
                            .await
                    }
                    Some(acceptor) => {
                        let tls = incoming.then(move |conn| {
                            let acceptor = Arc::clone(&acceptor);
                            async move {
                                let tcp = conn?;
                                let ssl = openssl::ssl::Ssl::new(acceptor.context())
                                    .map_err(std::io::Error::other)?;
                                let mut s = tokio_openssl::SslStream::new(ssl, tcp)
                                    .map_err(std::io::Error::other)?;
                                Pin::new(&mut s)
                                    .accept()
                                    .await
                                    .map_err(std::io::Error::other)?;
                                Ok::<_, std::io::Error>(TlsConn(s))
                            }
                        });
                        // A failed handshake must not end the server: skip it.
                        let tls = tls.filter(|c| c.is_ok());
                        server
                            .serve_with_incoming_shutdown(echo, Box::pin(tls), signal)
                            .await
                    }
                };
                if let Err(e) = result {
                    eprintln!("gRPC backend stopped: {e}");
                }
            });
        });
        GrpcBackend {
            addr,
            calls,
            conns,
            authorities,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Calls received so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.conns.load(Ordering::SeqCst)
    }

    /// The `:authority` of every call, oldest first.
    pub fn authorities(&self) -> Vec<String> {
        self.authorities
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn h2_acceptor(id: &Identity) -> openssl::ssl::SslAcceptor {
    use openssl::ssl::{AlpnError, SslAcceptor, SslMethod};
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor");
    b.set_certificate(&id.cert).expect("cert");
    b.set_private_key(&id.key).expect("key");
    b.set_alpn_select_callback(|_, client| {
        openssl::ssl::select_next_proto(b"\x02h2", client).ok_or(AlpnError::NOACK)
    });
    b.build()
}

/// A gRPC client (tonic's channel) with its own runtime, for synchronous tests.
pub struct GrpcClient {
    rt: tokio::runtime::Runtime,
    channel: tonic::transport::Channel,
}

impl GrpcClient {
    /// h2c with prior knowledge to `addr`.
    pub fn connect(addr: SocketAddr) -> GrpcClient {
        let rt = client_runtime();
        let channel = {
            let _guard = rt.enter();
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("endpoint")
                .connect_lazy()
        };
        GrpcClient { rt, channel }
    }

    /// h2 over TLS (ALPN h2) to `addr`, trusting `ca` and checking the name `host`.
    pub fn connect_tls(addr: SocketAddr, host: &str, ca: &openssl::x509::X509) -> GrpcClient {
        use openssl::ssl::{SslConnector, SslMethod};
        let rt = client_runtime();
        let mut b = SslConnector::builder(SslMethod::tls()).expect("connector");
        let mut store = openssl::x509::store::X509StoreBuilder::new().expect("store");
        store.add_cert(ca.clone()).expect("ca");
        b.set_verify_cert_store(store.build()).expect("store");
        b.set_alpn_protos(b"\x02h2").expect("alpn");
        let connector = Arc::new(b.build());
        let uri = format!("http://{host}:{}", addr.port());
        let host = host.to_owned();
        let connect = tower::service_fn(move |_uri: http::Uri| {
            let (connector, host) = (Arc::clone(&connector), host.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let ssl = connector
                    .configure()
                    .and_then(|c| c.into_ssl(&host))
                    .map_err(std::io::Error::other)?;
                let mut s =
                    tokio_openssl::SslStream::new(ssl, tcp).map_err(std::io::Error::other)?;
                Pin::new(&mut s)
                    .connect()
                    .await
                    .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        });
        let channel = {
            let _guard = rt.enter();
            tonic::transport::Endpoint::from_shared(uri)
                .expect("endpoint")
                .connect_with_connector_lazy(connect)
        };
        GrpcClient { rt, channel }
    }

    fn grpc(&self) -> tonic::client::Grpc<tonic::transport::Channel> {
        tonic::client::Grpc::new(self.channel.clone())
    }

    /// A unary call to `/weir.test.Echo/<method>`.
    pub fn unary(&self, method: &str, msg: &str) -> Result<String, Status> {
        let mut grpc = self.grpc();
        let path = path(method);
        self.rt.block_on(async move {
            ready(&mut grpc).await?;
            let r = grpc
                .unary(Request::new(Bytes::from(msg.to_owned())), path, RawCodec)
                .await?;
            Ok(text(r.get_ref()))
        })
    }

    /// A server-streaming call: every message, or the status that ended the stream.
    pub fn server_stream(&self, method: &str, msg: &str) -> Result<Vec<String>, Status> {
        let mut grpc = self.grpc();
        let path = path(method);
        self.rt.block_on(async move {
            ready(&mut grpc).await?;
            let r = grpc
                .server_streaming(Request::new(Bytes::from(msg.to_owned())), path, RawCodec)
                .await?;
            collect(r.into_inner()).await
        })
    }

    /// A bidirectional call sending `msgs`.
    pub fn chat(&self, msgs: &[&str]) -> Result<Vec<String>, Status> {
        let mut grpc = self.grpc();
        let out: Vec<Bytes> = msgs.iter().map(|m| Bytes::from(m.to_string())).collect();
        self.rt.block_on(async move {
            ready(&mut grpc).await?;
            let r = grpc
                .streaming(
                    Request::new(tokio_stream::iter(out)),
                    path("Chat"),
                    RawCodec,
                )
                .await?;
            collect(r.into_inner()).await
        })
    }
}

/// Wait until the channel can take a call; a connection failure is `UNAVAILABLE`.
async fn ready(grpc: &mut tonic::client::Grpc<tonic::transport::Channel>) -> Result<(), Status> {
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn path(method: &str) -> http::uri::PathAndQuery {
    format!("/weir.test.Echo/{method}").parse().expect("path")
}

fn text(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn collect(mut s: Streaming<Bytes>) -> Result<Vec<String>, Status> {
    let mut out = Vec::new();
    while let Some(m) = s.message().await? {
        out.push(text(&m));
    }
    Ok(out)
}
