//! Issue 33, item 2, against the real binary: a WebSocket client that leaves while the
//! app is not reading frees both sockets. (Items 1, 3, 4 and 5: `abuse_*.rs`.)

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::raw_app::{reset_on_close, tcp_state, Behaviour, RawApp};
use common::{sample, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_leaves_while_the_app_is_not_reading_frees_both_sockets() {
    let app = RawApp::start(Behaviour::Upgrade);
    let (port, held) = (app.port, app.held.clone());
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
        reset_on_close(s.get_ref().as_raw_fd());
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
