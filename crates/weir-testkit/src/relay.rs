//! [`TcpRelay`]: a TCP forwarder between a client under test and a real server, which a test
//! can cut and restore to show what a connection loss does, without stopping the server.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Forwards every connection on its own 127.0.0.1 port to `target`. While cut, every relayed
/// connection is closed and new ones are closed as soon as they are accepted.
pub struct TcpRelay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl TcpRelay {
    pub fn start(target: SocketAddr) -> TcpRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().expect("relay addr");
        let cut = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c, o) = (Arc::clone(&cut), Arc::clone(&open));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                // Checked and registered under the lock `cut` takes: a connection is either
                // refused or closed by the cut, never missed by it.
                let Ok(mut open) = o.lock() else { continue };
                if c.load(Ordering::SeqCst) {
                    continue;
                }
                for s in [&client, &server] {
                    if let Ok(clone) = s.try_clone() {
                        open.push(clone);
                    }
                }
                drop(open);
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        TcpRelay { addr, cut, open }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Close every relayed connection and refuse new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        if let Ok(mut open) = self.open.lock() {
            self.cut.store(true, Ordering::SeqCst);
            for s in open.drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Relay new connections again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

/// Copy `from` to `to` on a thread until either side closes.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Both);
        let _ = from.shutdown(std::net::Shutdown::Both);
    });
}
