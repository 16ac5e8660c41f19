//! Weir's services in your own Pingora `Server`, beside a service of your own.
//!
//! `cargo run -p weir --example embed -- conf/weir.yaml 127.0.0.1:9199` serves the file's
//! routes on its listeners (with health checks, discovery, the control and Admin APIs and the
//! file watcher, as the `weir` binary does) and answers `GET /` on 127.0.0.1:9199 itself.

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use weir::prelude::*;

/// Your own service: every request gets `hello from my service`.
pub struct Hello;

#[async_trait]
impl ServeHttp for Hello {
    async fn response(&self, _session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let body = b"hello from my service".to_vec();
        http::Response::builder()
            .status(200)
            .header("content-length", body.len())
            .body(body)
            .unwrap_or_default()
    }
}

/// A Pingora server with every Weir service of `weir` and [`Hello`] on `hello_addr`.
pub fn server(weir: Weir, hello_addr: &str) -> Result<Server, weir::Error> {
    let mut server = Server::new(None).map_err(|e| weir::Error::Listener(e.to_string()))?;
    server.bootstrap();
    weir.add_to(&mut server)?;
    let mut hello = Service::new("hello".to_owned(), Hello);
    hello.add_tcp(hello_addr);
    server.add_service(hello);
    Ok(server)
}

fn main() {
    env_logger::init();
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "conf/weir.yaml".into());
    let hello = args.next().unwrap_or_else(|| "127.0.0.1:9199".into());
    let weir = match Weir::builder().config_file(&path).build() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    };
    match server(weir, &hello) {
        Ok(s) => s.run_forever(),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
