//! Demo backends for `make run` and the benchmarks: `weir-demo-backend PORT[:DELAY_MS] ...`
//! serves each port with a backend answering `node <port>`, optionally after a delay.

use std::time::Duration;
use weir_testkit::{Backend, Mode};

fn main() {
    let mut backends = Vec::new();
    for arg in std::env::args().skip(1) {
        let (port, delay) = match arg.split_once(':') {
            Some((p, d)) => (p.parse::<u16>().ok(), d.parse::<u64>().ok()),
            None => (arg.parse::<u16>().ok(), Some(0)),
        };
        let (Some(port), Some(delay)) = (port, delay) else {
            eprintln!("usage: weir-demo-backend PORT[:DELAY_MS] ...  (bad argument {arg:?})");
            std::process::exit(2);
        };
        let b = Backend::start_on(&format!("node {port}\n"), &format!("127.0.0.1:{port}"));
        if delay > 0 {
            b.set_mode(Mode::Delay(Duration::from_millis(delay)));
        }
        eprintln!("demo backend listening on {} (delay {delay} ms)", b.addr);
        backends.push(b);
    }
    if backends.is_empty() {
        eprintln!("usage: weir-demo-backend PORT[:DELAY_MS] ...");
        std::process::exit(2);
    }
    // DEMO_STATS=SECONDS prints every backend's request count at that interval.
    let every = std::env::var("DEMO_STATS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    loop {
        match every {
            Some(s) => {
                std::thread::sleep(Duration::from_secs(s.max(1)));
                let counts: Vec<String> = backends
                    .iter()
                    .map(|b| format!("{}={}", b.port(), b.hits()))
                    .collect();
                eprintln!("hits {}", counts.join(" "));
            }
            None => std::thread::park(),
        }
    }
}
