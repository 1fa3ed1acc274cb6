//! Issue 33, item 5, against the real binary: HTTP/2 streams reset by the client in a
//! paced stream (5 per write, under the h2 layer's own rapid-reset counters) reach the
//! app only as a small fraction, the connection gets GOAWAY once it resets more than
//! 100 streams in a second, and the access log does not get a line per reset stream
//! after that.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::raw_app::{Behaviour, RawApp};
use common::{sample, Env};

/// Waits (at most 1 s) until the gateway has counted `sent` reset streams.
async fn accepted(env: &Env, sent: usize) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while Instant::now() < deadline {
        let (_, t) = env.metrics_get("/metrics").await;
        let counted = sample(&t, "gateway_h2_client_resets_total{app=\"no\"}").unwrap_or(0.0)
            + sample(&t, "gateway_h2_client_resets_total{app=\"yes\"}").unwrap_or(0.0);
        if counted >= sent as f64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Streams the test may open; GOAWAY is expected long before.
const MAX_STREAMS: usize = 2000;

// One thread: the client's connection task runs only when the test yields, so each batch
// of five requests and their resets goes out in one write, as in the review.
#[tokio::test(flavor = "current_thread")]
async fn paced_resets_are_kept_from_the_app_and_the_connection_gets_goaway() {
    // An app that holds every answer: a request that reaches it stays there.
    let app = RawApp::start(Behaviour::Deaf);
    let env = Env::new();
    let config = format!(
        "{}access_log: access.log\nroutes:\n  - host: a.test\n    upstream: 127.0.0.1:{}\n",
        env.listen_and_tls(),
        app.port
    );
    let gw = env.start(&config);
    let mut send = env.h2_connect("a.test").await;
    let started = Instant::now();
    let mut sent = 0usize;
    let mut goaway = None;
    'paced: while sent < MAX_STREAMS && started.elapsed() < Duration::from_secs(30) {
        send = match send.ready().await {
            Ok(send) => send,
            Err(e) => {
                goaway = Some(e);
                break;
            }
        };
        // Five requests and their resets, written together.
        for _ in 0..5 {
            let req = http::Request::get("https://a.test/reset-me")
                .body(())
                .expect("request");
            match send.send_request(req, true) {
                Ok((_response, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
                Err(e) => {
                    goaway = Some(e);
                    break 'paced;
                }
            }
            sent += 1;
        }
        // About 500 streams a second, well over 100 resets a second; and every third
        // write waits until the gateway has taken what was sent, so that the h2 layer's
        // own guard (more than 20 streams reset before they are accepted) never trips,
        // even on a busy machine.
        tokio::time::sleep(Duration::from_millis(10)).await;
        if sent.is_multiple_of(15) {
            accepted(&env, sent).await;
        }
    }
    let goaway = goaway.unwrap_or_else(|| {
        panic!(
            "{sent} streams reset in {:?} and no GOAWAY:\n{}",
            started.elapsed(),
            gw.log_text()
        )
    });
    println!(
        "GOAWAY after {sent} reset streams in {:?}: {goaway}",
        started.elapsed()
    );
    assert!(sent <= 1000, "GOAWAY came only after {sent} streams");
    // Let what was sent settle, then count what reached the app.
    let text = env
        .metrics_until("every reset stream is counted", |t| {
            let before = sample(t, "gateway_h2_client_resets_total{app=\"no\"}").unwrap_or(0.0);
            let after = sample(t, "gateway_h2_client_resets_total{app=\"yes\"}").unwrap_or(0.0);
            before + after >= 101.0 && sample(t, "gateway_h2_reset_floods_total") == Some(1.0)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let requests = app.requests.load(Ordering::Relaxed);
    let connections = app.connections.load(Ordering::Relaxed);
    println!(
        "{requests} requests ({connections} connections) reached the app of {sent} reset streams; \
         resets counted before the app: {:?}, after: {:?}",
        sample(&text, "gateway_h2_client_resets_total{app=\"no\"}"),
        sample(&text, "gateway_h2_client_resets_total{app=\"yes\"}"),
    );
    assert!(
        requests * 10 <= sent,
        "{requests} of {sent} reset streams reached the app (more than 10 %)"
    );
    // The lines written before the connection was flagged (the writer is a thread of
    // its own: wait for them), and none after.
    let lines = || {
        std::fs::read_to_string(env.path("access.log"))
            .unwrap_or_default()
            .matches("/reset-me")
            .count()
    };
    let waited = Instant::now();
    while lines() < 100 && waited.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = lines();
    println!("{lines} access-log lines for {sent} reset streams");
    assert!(
        lines == 100,
        "{lines} access-log lines for {sent} reset streams (100 before the flag, none after)"
    );
    let log = gw.log_text();
    assert!(
        log.contains("event=h2_reset_flood "),
        "the flood is logged:\n{log}"
    );
}

fn deaf_config(env: &Env, app: &RawApp) -> String {
    format!(
        "{}routes:\n  - host: a.test\n    upstream: 127.0.0.1:{}\n",
        env.listen_and_tls(),
        app.port
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reset_while_the_app_works_on_it_is_cancelled_at_the_app() {
    let app = RawApp::start(Behaviour::Deaf);
    let env = Env::new();
    let gw = env.start(&deaf_config(&env, &app));
    let mut send = env.h2_connect("a.test").await;
    let req = http::Request::get("https://a.test/slow")
        .body(())
        .expect("request");
    let (_response, mut stream) = send.send_request(req, true).expect("send");
    let waited = Instant::now();
    while app.requests.load(Ordering::Relaxed) == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stream.send_reset(h2::Reason::CANCEL);
    let reset = Instant::now();
    while app.closed() == 0 {
        assert!(
            reset.elapsed() < Duration::from_secs(2),
            "the app's request outlived the reset:\n{}",
            gw.log_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "the app's connection closed {:?} after the reset",
        reset.elapsed()
    );
    env.metrics_until("the reset is counted", |t| {
        sample(t, "gateway_h2_client_resets_total{app=\"yes\"}") == Some(1.0)
    })
    .await;
}

// Spread over connections, each under the limit: the address as a whole is not.
#[tokio::test(flavor = "current_thread")]
async fn resets_spread_over_connections_are_counted_for_the_address() {
    let app = RawApp::start(Behaviour::Deaf);
    let env = Env::new();
    let gw = env.start(&deaf_config(&env, &app));
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(env.h2_connect("a.test").await);
    }
    let started = Instant::now();
    let mut sent = 0usize;
    let mut refused = 0usize;
    // 4 connections x 40 resets: 160 within a second, 40 on each (every tenth round
    // once the gateway has counted the last, as above).
    'rounds: for _ in 0..40 {
        for send in &mut conns {
            let req = http::Request::get("https://a.test/reset-me")
                .body(())
                .expect("request");
            match send.send_request(req, true) {
                Ok((_response, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    sent += 1;
                }
                Err(_) => {
                    refused += 1;
                    if refused == 4 {
                        break 'rounds;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(4)).await;
        if sent.is_multiple_of(40) {
            accepted(&env, sent).await;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "too slow to test: {:?}",
        started.elapsed()
    );
    println!("{sent} resets on 4 connections, {refused} requests refused after GOAWAY");
    env.metrics_until("the address is flagged", |t| {
        sample(t, "gateway_h2_reset_floods_total").is_some_and(|n| n >= 1.0)
    })
    .await;
    assert!(gw.log_text().contains("event=h2_reset_flood "));
}
