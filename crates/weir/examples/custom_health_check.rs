//! A health check of your own, registered under a `checks.active.type` name.
//!
//! `cargo run -p weir --example custom_health_check -- conf/weir.yaml` runs Weir with two
//! checks next to the built-in `http`, `https` and `tcp`, both made of one [`SendExpect`]:
//!
//! - `redis`: sends `PING`, expects `+PONG` (an upstream of Redis nodes, say for a TCP-level
//!   health view, with `checks: {active: {type: redis}}`);
//! - `http-ready`: sends a bare `GET /ready HTTP/1.0` and expects a `200` status line, without
//!   the `Host` and headers the built-in `http` check sends.
//!
//! Thresholds and intervals are the configuration's, as for any type: a wrong reply counts
//! against `unhealthy.http_failures`, a refused or reset connection against `tcp_failures`,
//! no reply in time against `timeouts`.

use async_trait::async_trait;
use weir::prelude::*;

/// Connect, send `send` (if any), and expect the reply to start with `expect`.
pub struct SendExpect {
    pub send: Vec<u8>,
    pub expect: Vec<u8>,
}

impl SendExpect {
    pub fn new(send: &str, expect: &str) -> Self {
        SendExpect {
            send: send.as_bytes().to_vec(),
            expect: expect.as_bytes().to_vec(),
        }
    }
}

#[async_trait]
impl HealthCheck for SendExpect {
    async fn check(&self, target: &HealthTarget, spec: &ProbeSpec) -> Option<HealthReport> {
        // Each step within `spec.timeout` (checks.active.timeout), errors classified:
        // refused or reset is a tcp failure, out of time a timeout.
        let exchange = async {
            let mut conn = ProbeStream::connect(target, spec).await?;
            if !self.send.is_empty() {
                conn.write_all(&self.send).await?;
            }
            conn.read_up_to(self.expect.len()).await
        };
        Some(match exchange.await {
            Ok(reply) if reply == self.expect => HealthReport::Success,
            // Closed without a word: the connection failed, not the service.
            Ok(reply) if reply.is_empty() => HealthReport::TcpFailure,
            // It answered, wrongly: counts against `unhealthy.http_failures`.
            Ok(_) => HealthReport::HttpFailure,
            Err(report) => report,
        })
    }
}

/// `builder` with the `redis` and `http-ready` checks registered.
pub fn with_checks(builder: WeirBuilder) -> WeirBuilder {
    builder
        .health_check("redis", SendExpect::new("PING\r\n", "+PONG"))
        .health_check(
            "http-ready",
            SendExpect::new("GET /ready HTTP/1.0\r\n\r\n", "HTTP/1.1 200 "),
        )
}

fn main() {
    env_logger::init();
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "conf/weir.yaml".into());
    match with_checks(Weir::builder().config_file(&path)).build() {
        Ok(w) => {
            if let Err(e) = w.run(Opt::default()) {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    }
}
