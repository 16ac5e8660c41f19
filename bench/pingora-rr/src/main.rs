//! The baseline of `make bench`: the smallest useful Pingora proxy, round robin over the
//! backends given on the command line. `pingora-rr LISTEN BACKEND...`

use async_trait::async_trait;
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::prelude::*;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use std::sync::Arc;

struct Rr(Arc<LoadBalancer<RoundRobin>>);

#[async_trait]
impl ProxyHttp for Rr {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        let b = self
            .0
            .select(b"", 256)
            .ok_or_else(|| Error::new(HTTPStatus(502)))?;
        Ok(Box::new(HttpPeer::new(b, false, String::new())))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((listen, backends)) = args.split_first() else {
        eprintln!("usage: pingora-rr LISTEN BACKEND...");
        std::process::exit(2);
    };
    let lb = match LoadBalancer::try_from_iter(backends.iter().map(String::as_str)) {
        Ok(lb) => lb,
        Err(e) => {
            eprintln!("pingora-rr: bad backend address: {e}");
            std::process::exit(2);
        }
    };
    let conf = ServerConf {
        threads: 1,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = http_proxy_service(&server.configuration, Rr(Arc::new(lb)));
    svc.add_tcp(listen);
    server.add_service(svc);
    server.run_forever();
}
