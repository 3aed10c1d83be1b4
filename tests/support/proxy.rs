//! A TCP proxy on loopback that a test can cut: while cut, every byte in either direction is
//! read and dropped (a black hole: the client's writes succeed and nothing ever answers, as
//! when a network partitions); healing closes the connections that lived through the cut
//! (their streams lost bytes) and forwards new ones again.

#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// A proxy from a free loopback port to `127.0.0.1:target`.
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    /// Bumped at every cut and heal: a connection from an older epoch is closed on heal.
    epoch: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port for the proxy");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let (cut, epoch, stop) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (c, e, s) = (cut.clone(), epoch.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        let upstream = if c.load(Ordering::Relaxed) {
                            None
                        } else {
                            TcpStream::connect(("127.0.0.1", target)).ok()
                        };
                        let born = e.load(Ordering::Relaxed);
                        match upstream {
                            Some(server) => {
                                pipe(
                                    client.try_clone().unwrap(),
                                    server.try_clone().unwrap(),
                                    c.clone(),
                                    e.clone(),
                                    s.clone(),
                                    born,
                                );
                                pipe(server, client, c.clone(), e.clone(), s.clone(), born);
                            }
                            // Accepted while cut: a black hole until healed.
                            None => pipe(client.try_clone().unwrap(), client, c.clone(), e.clone(), s.clone(), born),
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { port, cut, epoch, stop }
    }

    /// From now on nothing gets through, in either direction.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Forwards again; connections that lived through the cut are closed.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` on a thread until either ends, dropping bytes while cut and
/// closing both once the epoch moves past a cut the connection lived through.
fn pipe(
    mut from: TcpStream,
    mut to: TcpStream,
    cut: Arc<AtomicBool>,
    epoch: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    born: u64,
) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        let mut lived_through_cut = cut.load(Ordering::Relaxed);
        loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let is_cut = cut.load(Ordering::Relaxed);
            lived_through_cut |= is_cut || epoch.load(Ordering::Relaxed) != born;
            if lived_through_cut && !is_cut {
                break;
            }
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if !cut.load(Ordering::Relaxed) && !lived_through_cut && to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}
