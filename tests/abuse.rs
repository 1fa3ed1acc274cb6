//! Issue 33 against the real binary: resources a client holds stay bounded when it
//! stops playing along. So far: a WebSocket client that leaves while the app is not
//! reading frees both sockets.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{sample, Env};

/// Linux's TCP_INFO state of `fd` (1: established).
fn tcp_state(fd: i32) -> u8 {
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

/// Closes `tcp` with a reset (SO_LINGER 0), as a client that goes away does.
fn reset(tcp: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a plain setsockopt on a socket this test owns.
    let rc = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
}

/// An app that answers every WebSocket request with its `101` and then never reads;
/// its connections are kept for the test to look at.
fn deaf_app() -> (u16, Arc<Mutex<Vec<TcpStream>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let kept = held.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(64).flatten() {
            let mut conn = conn;
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 16 << 10 {
                match conn.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let _ = conn.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                  Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            );
            if let Ok(mut held) = kept.lock() {
                held.push(conn);
            }
        }
    });
    (port, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_leaves_while_the_app_is_not_reading_frees_both_sockets() {
    let (port, held) = deaf_app();
    let env = Env::new();
    let config = format!(
        "{}routes:\n  - host: a.test\n    upstream: 127.0.0.1:{port}\n",
        env.listen_and_tls()
    );
    let gw = env.start(&config);
    tokio::task::block_in_place(|| {
        let mut s = env.tls_connect("a.test");
        s.write_all(
            b"GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        )
        .expect("upgrade request");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(s.read(&mut byte).expect("101"), 1);
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"HTTP/1.1 101 "), "{head:?}");
        // Fill every buffer on the way to the deaf app (bounded: 64 MiB at most).
        s.get_ref()
            .set_write_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let chunk = vec![0x82u8; 64 << 10];
        let mut sent = 0usize;
        while sent < 64 << 20 {
            match s.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        assert!(sent < 64 << 20, "the app's side never filled up");
        reset(s.get_ref());
        drop(s);
    });
    let left = Instant::now();
    let app_side = held.lock().expect("held")[0].as_raw_fd();
    while tcp_state(app_side) == 1 {
        assert!(
            left.elapsed() < Duration::from_secs(2),
            "the gateway still holds the app's connection 2 s after its client left:\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    println!(
        "app's connection closed {:?} after the client's reset",
        left.elapsed()
    );
    env.metrics_until("the tunnel is gone", |t| {
        sample(t, "gateway_websocket_sessions{route=\"a.test\"}") == Some(0.0)
    })
    .await;
}
