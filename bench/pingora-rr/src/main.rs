//! The baseline of `make bench`: the smallest useful Pingora proxy, round robin over the
//! backends given on the command line.
//! `pingora-rr [-t THREADS] [--no-steal] [--no-modules] [--l4-read BYTES] LISTEN BACKEND...`
//! (one worker thread, Pingora's default work-stealing runtime, its default downstream modules
//! and its default 64 KiB read buffer per client connection unless told otherwise: the flags
//! measure what each of those costs inside Pingora).

use async_trait::async_trait;
use pingora::lb::{selection::RoundRobin, LoadBalancer};
use pingora::listeners::ListenerConfig;
use pingora::prelude::*;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use std::sync::Arc;

struct Rr(Arc<LoadBalancer<RoundRobin>>, bool);

#[async_trait]
impl ProxyHttp for Rr {
    type CTX = ();
    fn new_ctx(&self) {}
    fn init_downstream_modules(&self, modules: &mut pingora::modules::http::HttpModules) {
        if self.1 {
            // Pingora's default: a disabled response compression module.
            modules.add_module(
                pingora::modules::http::compression::ResponseCompressionBuilder::enable(0),
            );
        }
    }
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        let b = self
            .0
            .select(b"", 256)
            .ok_or_else(|| Error::new(HTTPStatus(502)))?;
        Ok(Box::new(HttpPeer::new(b, false, String::new())))
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut threads = 1;
    let mut work_stealing = true;
    let mut modules = true;
    let mut l4_read = None;
    loop {
        match args.first().map(String::as_str) {
            Some("-t") if args.len() > 1 => {
                threads = match args[1].parse() {
                    Ok(n) if n > 0 => n,
                    _ => usage(),
                };
                args.drain(..2);
            }
            Some("--no-modules") => {
                modules = false;
                args.remove(0);
            }
            Some("--l4-read") if args.len() > 1 => {
                l4_read = Some(args[1].parse().unwrap_or_else(|_| usage()));
                args.drain(..2);
            }
            Some("--no-steal") => {
                work_stealing = false;
                args.remove(0);
            }
            _ => break,
        }
    }
    let Some((listen, backends)) = args.split_first() else {
        usage()
    };
    let lb = match LoadBalancer::try_from_iter(backends.iter().map(String::as_str)) {
        Ok(lb) => lb,
        Err(e) => {
            eprintln!("pingora-rr: bad backend address: {e}");
            std::process::exit(2);
        }
    };
    let conf = ServerConf {
        threads,
        work_stealing,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = http_proxy_service(&server.configuration, Rr(Arc::new(lb), modules));
    match l4_read {
        None => svc.add_tcp(listen),
        Some(read) => svc.add_listener(ListenerConfig::tcp(listen).l4_buffer(L4BufferSettings {
            read: Some(read),
            write: None,
        })),
    }
    server.add_service(svc);
    server.run_forever();
}

fn usage() -> ! {
    eprintln!(
        "usage: pingora-rr [-t THREADS] [--no-steal] [--no-modules] [--l4-read BYTES] LISTEN BACKEND..."
    );
    std::process::exit(2);
}
