//! Apps on raw sockets for the resource tests (`tests/abuse*.rs`): they behave in ways
//! no framework lets an app behave on purpose, and show the test each connection the
//! gateway made to them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What an app does once it has read a request head.
#[derive(Clone, Copy)]
pub enum Behaviour {
    /// Answers `101` and never reads again (a WebSocket app that hangs).
    Upgrade,
    /// Never reads the body and never answers (an app stuck before reading an upload).
    Deaf,
    /// Answers 200 with a body of `len` bytes, written in pieces of `piece` bytes every
    /// `every` (as fast as it can when zero).
    Stream {
        len: usize,
        piece: usize,
        every: Duration,
    },
}

/// A running app: its port, the connections it was given, and what became of them.
pub struct RawApp {
    pub port: u16,
    /// The gateway's connections to it, kept open for the test to look at.
    pub held: Arc<Mutex<Vec<TcpStream>>>,
    /// Connections accepted, and request heads read.
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<AtomicUsize>,
    /// When a streamed answer could not be written on (the gateway closed the
    /// connection), for each such connection.
    pub write_failed: Arc<Mutex<Vec<Instant>>>,
}

impl RawApp {
    pub fn start(behaviour: Behaviour) -> RawApp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let app = RawApp {
            port,
            held: Arc::default(),
            connections: Arc::default(),
            requests: Arc::default(),
            write_failed: Arc::default(),
        };
        let (held, connections, requests, failed) = (
            app.held.clone(),
            app.connections.clone(),
            app.requests.clone(),
            app.write_failed.clone(),
        );
        std::thread::spawn(move || {
            // Bounded: a test never makes more connections than this.
            for conn in listener.incoming().take(20_000).flatten() {
                connections.fetch_add(1, Ordering::Relaxed);
                let (held, requests, failed) = (held.clone(), requests.clone(), failed.clone());
                std::thread::spawn(move || serve(conn, behaviour, &held, &requests, &failed));
            }
        });
        app
    }

    /// How many of the held connections the gateway has closed or reset.
    pub fn closed(&self) -> usize {
        let held = self.held.lock().expect("held");
        held.iter()
            .filter(|c| {
                use std::os::fd::AsRawFd;
                tcp_state(c.as_raw_fd()) != 1
            })
            .count()
    }
}

fn serve(
    mut conn: TcpStream,
    behaviour: Behaviour,
    held: &Mutex<Vec<TcpStream>>,
    requests: &AtomicUsize,
    failed: &Mutex<Vec<Instant>>,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    requests.fetch_add(1, Ordering::Relaxed);
    match behaviour {
        Behaviour::Upgrade => {
            let _ = conn.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            );
        }
        Behaviour::Deaf => {}
        Behaviour::Stream { len, piece, every } => {
            if let Ok(copy) = conn.try_clone() {
                held.lock().expect("held").push(copy);
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: text/plain\r\n\r\n"
            );
            let chunk = vec![b'x'; piece];
            let mut sent = 0;
            let mut ok = conn.write_all(head.as_bytes()).is_ok();
            while ok && sent < len {
                let n = piece.min(len - sent);
                ok = conn.write_all(&chunk[..n]).is_ok();
                sent += n;
                if !every.is_zero() {
                    std::thread::sleep(every);
                }
            }
            if !ok {
                failed.lock().expect("failed").push(Instant::now());
            }
            return;
        }
    }
    held.lock().expect("held").push(conn);
}

/// Linux's TCP_INFO state of `fd` (1: established).
pub fn tcp_state(fd: i32) -> u8 {
    let mut info = [0u8; 256];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO");
    info[0]
}

/// Makes closing `fd` reset its connection (SO_LINGER 0), as a client that goes away.
#[allow(unused_imports)]
pub use gateway::conn::socket::reset_on_close;
