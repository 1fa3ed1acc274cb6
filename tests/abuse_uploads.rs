//! Issue 33, item 3, against the real binary: an upload whose app stops reading no
//! longer outlives its client. Clients that reset (HTTP/1.1 with a length, chunked, and
//! HTTP/2) have their app connections closed within a few seconds, long before
//! `limits.body_timeout`; a client that stays while its upload makes no progress toward
//! the app gets 504 after `body_timeout`.

mod common;

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::raw_app::{reset_on_close, Behaviour, RawApp};
use common::{sample, Env};

fn config(env: &Env, port: u16, body_timeout: &str) -> String {
    format!(
        "{}limits:\n  body_timeout: {body_timeout}\nroutes:\n  - host: a.test\n    upstream: 127.0.0.1:{port}\n",
        env.listen_and_tls()
    )
}

/// Writes `piece` over and over until the gateway stops taking it (every buffer toward
/// the app is full), bounded at 256 MiB. Pieces are written whole (chunked framing).
fn fill(s: &mut impl Write, piece: &[u8]) {
    let mut sent = 0usize;
    let mut at = 0usize;
    while sent < 256 << 20 {
        match s.write(&piece[at..]) {
            Ok(n) => {
                sent += n;
                at = (at + n) % piece.len();
            }
            Err(_) => return,
        }
    }
    panic!("the upload never stalled");
}

/// An HTTP/1.1 upload over TLS that stalls; returns the stream (its socket set to
/// reset on close).
fn h1_upload(env: &Env, chunked: bool) -> native_tls::TlsStream<std::net::TcpStream> {
    let mut s = env.tls_connect("a.test");
    let head: &[u8] = if chunked {
        b"POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    } else {
        b"POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 536870912\r\n\r\n"
    };
    s.write_all(head).expect("head");
    s.get_ref()
        .set_write_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    if chunked {
        let mut piece = b"10000\r\n".to_vec();
        piece.extend(vec![b'u'; 0x10000]);
        piece.extend(b"\r\n");
        fill(&mut s, &piece);
    } else {
        fill(&mut s, &vec![b'u'; 64 << 10]);
    }
    reset_on_close(s.get_ref().as_raw_fd());
    s
}

/// An HTTP/2 upload that stalls; returns the task driving its connection (abort it to
/// reset the connection).
async fn h2_upload(env: &Env) -> tokio::task::JoinHandle<()> {
    let (stream, fd) = env.h2_tls("a.test").await;
    reset_on_close(fd);
    let (send, connection) = h2::client::handshake(stream).await.expect("h2 handshake");
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut send = send.ready().await.expect("ready");
    let req = http::Request::post("https://a.test/upload")
        .body(())
        .expect("request");
    let (_response, mut body) = send.send_request(req, false).expect("send");
    let piece = bytes::Bytes::from(vec![b'u'; 64 << 10]);
    for _ in 0..4096 {
        body.reserve_capacity(piece.len());
        let capacity = tokio::time::timeout(
            Duration::from_millis(500),
            std::future::poll_fn(|cx| body.poll_capacity(cx)),
        )
        .await;
        match capacity {
            Ok(Some(Ok(n))) if n > 0 => body.send_data(piece.slice(..n), false).expect("send data"),
            // No window for 500 ms: the app stopped reading.
            _ => {
                // The stream and its body handle stay open with the connection task.
                std::mem::forget(body);
                std::mem::forget(_response);
                return driver;
            }
        }
    }
    panic!("the HTTP/2 upload never stalled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_whose_clients_reset_release_the_app_connection_within_seconds() {
    let app = RawApp::start(Behaviour::Deaf);
    let env = Env::new();
    let gw = env.start(&config(&env, app.port, "60s"));
    // All at once (each waits for its buffers to fill).
    let h1: Vec<_> = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let uploads: Vec<_> = (0..14)
                .map(|i| {
                    let env = &env;
                    scope.spawn(move || h1_upload(env, i % 2 == 1))
                })
                .collect();
            uploads
                .into_iter()
                .map(|u| u.join().expect("upload"))
                .collect()
        })
    });
    let h2 = futures_util::future::join_all((0..6).map(|_| h2_upload(&env))).await;
    assert_eq!(
        app.requests.load(Ordering::Relaxed),
        20,
        "every upload reached the app"
    );
    assert_eq!(
        app.closed(),
        0,
        "the app's connections are all open while uploading"
    );
    let reset = Instant::now();
    drop(h1);
    for driver in h2 {
        driver.abort();
    }
    while app.closed() < 20 {
        assert!(
            reset.elapsed() < Duration::from_secs(5),
            "{} of 20 app connections closed 5 s after their clients reset:\n{}",
            app.closed(),
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "20 app connections closed {:?} after their clients reset",
        reset.elapsed()
    );
    env.metrics_until("20 uploads are counted as left by their client", |t| {
        sample(t, "gateway_aborted_total{reason=\"client_gone\"}") == Some(20.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_the_app_stops_reading_ends_with_504_after_body_timeout() {
    let app = RawApp::start(Behaviour::Deaf);
    let env = Env::new();
    let gw = env.start(&config(&env, app.port, "2s"));
    let (answer, after) = tokio::task::block_in_place(|| {
        let mut s = h1_upload(&env, false);
        let stalled = Instant::now();
        s.get_ref()
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut answer = vec![0u8; 12];
        s.read_exact(&mut answer).expect("an answer");
        (
            String::from_utf8_lossy(&answer).into_owned(),
            stalled.elapsed(),
        )
    });
    println!("{answer:?} {after:?} after the upload stalled");
    assert_eq!(answer, "HTTP/1.1 504", "{}", gw.log_text());
    assert!(after < Duration::from_secs(10), "{after:?}");
    assert_eq!(app.closed(), 1, "the app's connection is closed");
    env.metrics_until("the stall is counted", |t| {
        sample(t, "gateway_aborted_total{reason=\"body_stalled\"}") == Some(1.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_body_that_stops_gets_408_after_body_timeout() {
    // The app takes what comes (the kernel's buffer), so nothing waits for it: the
    // client is the one that stopped.
    let app = RawApp::start(Behaviour::Deaf);
    let env = Env::new();
    let gw = env.start(&config(&env, app.port, "2s"));
    let mut send = env.h2_connect("a.test").await;
    let req = http::Request::post("https://a.test/upload")
        .body(())
        .expect("request");
    let (response, mut body) = send.send_request(req, false).expect("send");
    body.send_data(bytes::Bytes::from_static(b"the start of a body"), false)
        .expect("data");
    let stopped = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(20), response)
        .await
        .expect("an answer in time")
        .expect("a response");
    println!(
        "{} {:?} after the body stopped",
        response.status(),
        stopped.elapsed()
    );
    assert_eq!(response.status(), 408, "{}", gw.log_text());
    assert!(stopped.elapsed() >= Duration::from_secs(2));
    assert_eq!(app.closed(), 1, "the app's connection is closed");
    drop(body);
}
