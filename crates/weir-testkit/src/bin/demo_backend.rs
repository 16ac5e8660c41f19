//! Demo backends for `make run`: `weir-demo-backend PORT [PORT...]` serves each port with a
//! backend named after it, answering `node <port>` so balancing is visible with curl.

fn main() {
    let ports: Vec<u16> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if ports.is_empty() {
        eprintln!("usage: weir-demo-backend PORT [PORT...]");
        std::process::exit(2);
    }
    let backends: Vec<weir_testkit::Backend> = ports
        .iter()
        .map(|p| weir_testkit::Backend::start_on(&format!("node {p}\n"), &format!("127.0.0.1:{p}")))
        .collect();
    for b in &backends {
        eprintln!("demo backend listening on {}", b.addr);
    }
    loop {
        std::thread::park();
    }
}
