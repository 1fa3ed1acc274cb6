//! Issue 33, item 1, against the real binary: a client that stops reading its answer is
//! cut after `limits.send_timeout` (HTTP/1.1: the connection; HTTP/2: the stream whose
//! window stays shut), and the app's request is aborted; a slow client that keeps
//! reading gets its whole answer however long it takes.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::raw_app::{Behaviour, RawApp};
use common::{sample, Env};

fn config(env: &Env, port: u16, send_timeout: &str) -> String {
    format!(
        "{}limits:\n  send_timeout: {send_timeout}\nroutes:\n  - host: a.test\n    upstream: 127.0.0.1:{port}\n",
        env.listen_and_tls()
    )
}

/// Waits (bounded) until the app could no longer write its answer: the gateway closed
/// its connection. Returns when that happened.
fn app_cut(app: &RawApp, within: Duration, log: impl Fn() -> String) -> Instant {
    let start = Instant::now();
    loop {
        if let Some(at) = app.write_failed.lock().expect("failed").first() {
            return *at;
        }
        assert!(
            start.elapsed() < within,
            "the app's request was not aborted within {within:?}:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_client_that_reads_nothing_is_cut_after_send_timeout() {
    // More than every buffer on the way can hold.
    let app = RawApp::start(Behaviour::Stream {
        len: 1 << 30,
        piece: 64 << 10,
        every: Duration::ZERO,
    });
    let env = Env::new();
    let gw = env.start(&config(&env, app.port, "2s"));
    let sent = Instant::now();
    let client = tokio::task::block_in_place(|| {
        let mut s = env.tls_connect("a.test");
        s.write_all(b"GET /big HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .expect("request");
        let cut = app_cut(&app, Duration::from_secs(30), || gw.log_text());
        let after = cut.duration_since(sent);
        println!("the app's request was aborted {after:?} after the request");
        // The buffers fill within a second or so; then 2 s without progress.
        assert!(after >= Duration::from_secs(2), "cut too early: {after:?}");
        s
    });
    let text = env
        .metrics_until("the send timeout is counted", |t| {
            sample(t, "gateway_aborted_total{reason=\"send_timeout\"}") == Some(1.0)
        })
        .await;
    assert_eq!(
        sample(&text, "gateway_open_connections{listener=\"https\"}"),
        Some(0.0),
        "the client's connection is closed"
    );
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_http1_reader_gets_its_whole_answer() {
    const LEN: usize = 8 << 20;
    let app = RawApp::start(Behaviour::Stream {
        len: LEN,
        piece: 64 << 10,
        every: Duration::ZERO,
    });
    let env = Env::new();
    let gw = env.start(&config(&env, app.port, "3s"));
    let started = Instant::now();
    let got = tokio::task::block_in_place(|| {
        let mut s = env.tls_connect("a.test");
        s.write_all(b"GET /big HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
            .expect("request");
        // About 1 MiB/s: the answer takes about 8 s, each read well within 3 s.
        let mut buf = vec![0u8; 16 << 10];
        let mut got = 0usize;
        while started.elapsed() < Duration::from_secs(60) {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => panic!("read failed after {got} bytes: {e}\n{}", gw.log_text()),
            }
            std::thread::sleep(Duration::from_millis(15));
        }
        got
    });
    println!("{got} bytes in {:?}", started.elapsed());
    assert!(got > LEN, "the answer was cut at {got} bytes");
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "not a slow reader"
    );
    assert!(app.write_failed.lock().expect("failed").is_empty());
    let (_, text) = env.metrics_get("/metrics").await;
    assert_eq!(
        sample(&text, "gateway_aborted_total{reason=\"send_timeout\"}"),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_stream_whose_window_stays_shut_is_cut_after_send_timeout() {
    // An event stream: 100 bytes every 20 ms.
    let app = RawApp::start(Behaviour::Stream {
        len: 1 << 20,
        piece: 100,
        every: Duration::from_millis(20),
    });
    let env = Env::new();
    let gw = env.start(&config(&env, app.port, "2s"));
    let (stream, _) = env.h2_tls("a.test").await;
    // No stream may be sent a byte until the client says so, and it never does.
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(stream)
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut send = send.ready().await.expect("ready");
    let req = http::Request::get("https://a.test/events")
        .body(())
        .expect("request");
    let sent = Instant::now();
    let (response, _) = send.send_request(req, true).expect("send");
    let response = response.await.expect("the head is not flow-controlled");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let end = tokio::time::timeout(Duration::from_secs(30), body.data())
        .await
        .expect("the stream was never cut");
    let after = sent.elapsed();
    println!("stream ended {after:?} after the request: {end:?}");
    assert!(
        matches!(end, Some(Err(_))),
        "the stream should be reset, got {end:?}"
    );
    assert!(after >= Duration::from_secs(2), "cut too early: {after:?}");
    tokio::task::block_in_place(|| app_cut(&app, Duration::from_secs(10), || gw.log_text()));
    env.metrics_until("the send timeout is counted", |t| {
        sample(t, "gateway_aborted_total{reason=\"send_timeout\"}") == Some(1.0)
    })
    .await;
    // The connection itself is still good.
    let req = http::Request::head("https://a.test/")
        .body(())
        .expect("request");
    let mut send = send.ready().await.expect("the connection is still open");
    let (response, _) = send.send_request(req, true).expect("send");
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("an answer")
        .expect("a response");
    assert_eq!(response.status(), 200);
}
