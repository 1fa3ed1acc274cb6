//! Issue 3 against the real binary: body limits (declared and streamed) and per-client
//! rate limits, answered at the gateway before the app does any work.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{client, upload, Env, Upstream};
use futures_util::{SinkExt, StreamExt};
use reqwest::header::HeaderMap;
use serde_json::Value;

fn config(env: &Env, top: &str, routes: &str) -> String {
    format!("{}{top}routes:\n{routes}", env.listen_and_tls())
}

fn route(host: &str, up: &Upstream, extra: &str) -> String {
    format!("  - host: {host}\n    upstream: {}\n{extra}", up.addr)
}

/// A streamed body of `chunks` × 64 KiB, with no declared length.
fn stream_body(chunks: usize) -> reqwest::Body {
    let chunk = bytes::Bytes::from(vec![7u8; 64 << 10]);
    let stream = futures_util::stream::iter(
        (0..chunks).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
    );
    reqwest::Body::wrap_stream(stream)
}

async fn get(c: &reqwest::Client, url: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, Value) {
    common::get_json(c, url, headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_body_over_the_limit_is_413_before_the_upstream() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let _gw = env.start(&config(
        &env,
        "",
        &route("a.test", &a, "    max_body: 1M\n"),
    ));

    // `Expect: 100-continue`: the 413 comes instead of the 100, and no body is ever sent.
    let answer = tokio::task::block_in_place(|| {
        let mut s = env.tls_connect("a.test");
        write!(
            s,
            "POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 2097152\r\n\
             Expect: 100-continue\r\n\r\n"
        )
        .expect("write head");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert!(
        answer.contains("1 MiB"),
        "the page names the limit: {answer}"
    );

    // Clients that send the body right away get the 413 too, on HTTP/1.1 and HTTP/2.
    for http2 in [false, true] {
        let c = client(&env, &["a.test"], http2);
        let resp = upload(&c, &env, "a.test", vec![1u8; 2 << 20]).await;
        assert_eq!(resp.status(), 413, "http2={http2}");
    }
    // Exactly at the limit is allowed.
    let c = client(&env, &["a.test"], false);
    let resp = upload(&c, &env, "a.test", vec![1u8; 1 << 20]).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(a.hits(), 1, "only the allowed upload reached the app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_body_over_the_limit_is_413_and_aborts_the_upstream_request() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let _gw = env.start(&config(
        &env,
        "",
        &route("a.test", &a, "    max_body: 1M\n"),
    ));
    for http2 in [false, true] {
        let c = client(&env, &["a.test"], http2);
        let resp = upload(&c, &env, "a.test", stream_body(64)).await;
        assert_eq!(resp.status(), 413, "http2={http2}");
    }
    // The app saw two uploads break off, never a complete (truncated) one.
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.uploads().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let uploads = a.uploads();
    assert_eq!(uploads.len(), 2, "{uploads:?}");
    for u in &uploads {
        assert!(!u.complete, "{u:?}");
        assert!(
            u.bytes <= 1 << 20,
            "no byte past the limit reached the app: {u:?}"
        );
    }
}

/// curl over HTTP/2 shows the 413, declared or streamed (RFC 9113 §8.1: the answer, then
/// the stream reset with NO_ERROR). curl 7.88 exited 92 ("Stream error in the HTTP/2
/// framing layer") with no status when the reset left in the same write as the answer.
#[test]
fn curl_over_http2_shows_the_413() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let a = rt.block_on(Upstream::start("A"));
    let env = Env::new();
    let _gw = env.start(&config(
        &env,
        "",
        &route("a.test", &a, "    max_body: 1K\n"),
    ));
    let body = env.path("body.bin");
    std::fs::write(&body, vec![b'x'; 300_000]).expect("write body");
    let resolve = format!("a.test:{}:127.0.0.1", env.https);
    let url = format!("https://a.test:{}/upload", env.https);
    // With its Content-Length (413 before the body), and without (413 on the count).
    for declared in [true, false] {
        let mut curl = std::process::Command::new("curl");
        curl.args([
            "--http2",
            "-sSk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
        ])
        .args(["--resolve", &resolve, "--data-binary"])
        .arg(format!("@{}", body.display()));
        if !declared {
            curl.args(["-H", "Content-Length:"]);
        }
        let out = curl.arg(&url).output().expect("curl");
        let shown = String::from_utf8_lossy(&out.stdout);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "declared={declared}: {shown} {err}"
        );
        assert_eq!(shown, "413 2", "declared={declared}: {err}");
        if declared {
            assert_eq!(
                a.hits(),
                0,
                "a declared body over the limit never reaches the app"
            );
        }
    }
}

/// After an early answer over HTTP/2 the stream is drained (so that the client reads the
/// answer before the reset), but not for long: a client that ignores the 413 and keeps
/// sending is let go after 256 KiB, its stream reset, well before the 5 s a drain may
/// last at most.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_ignoring_its_413_is_let_go_after_256_kib() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let _gw = env.start(&config(
        &env,
        "",
        &route("a.test", &a, "    max_body: 1K\n"),
    ));
    let mut send = env.h2_connect("a.test").await;
    let req = http::Request::post(format!("https://a.test:{}/upload", env.https))
        .header("content-length", "104857600")
        .body(())
        .expect("request");
    let (response, mut body) = send.send_request(req, false).expect("send");
    let response = response.await.expect("response");
    assert_eq!(response.status(), 413);
    let started = Instant::now();
    let piece = bytes::Bytes::from(vec![b'x'; 16 << 10]);
    let mut sent = 0usize;
    let ended = loop {
        if started.elapsed() > Duration::from_secs(4) {
            break false;
        }
        body.reserve_capacity(piece.len());
        let capacity = tokio::time::timeout(
            Duration::from_secs(1),
            std::future::poll_fn(|cx| body.poll_capacity(cx)),
        )
        .await;
        match capacity {
            Ok(Some(Ok(n))) if n > 0 => {
                match body.send_data(piece.slice(..n.min(piece.len())), false) {
                    Ok(()) => sent += n.min(piece.len()),
                    Err(_) => break true,
                }
            }
            Ok(Some(Ok(_))) | Err(_) => continue,
            Ok(Some(Err(_)) | None) => break true,
        }
    };
    assert!(
        ended,
        "the stream was still drained after 4 s ({sent} bytes sent)"
    );
    assert!(sent >= 256 << 10, "let go before its 256 KiB: {sent} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_body_off_is_unlimited_and_routes_inherit_defaults() {
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let env = Env::new();
    let routes = route("a.test", &a, "    max_body: off\n") + &route("up.test", &b, "");
    let _gw = env.start(&config(&env, "defaults:\n  max_body: 1K\n", &routes));
    let c = client(&env, &["a.test", "up.test"], false);
    let resp = upload(&c, &env, "a.test", stream_body(48)).await;
    assert_eq!(resp.status(), 200);
    let json: Value = resp.json().await.expect("json");
    assert_eq!(json["bytes"], 48 * (64 << 10));
    let resp = upload(&c, &env, "up.test", vec![0u8; 2048]).await;
    assert_eq!(resp.status(), 413);
}

/// The Retry-After of a 429, in seconds.
fn retry_after(h: &HeaderMap) -> u64 {
    h["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_429s_after_burst_per_route_and_recovers() {
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let env = Env::new();
    // Token intervals of a minute: no token comes back while the counts are checked,
    // however slowly the machine runs the requests.
    let routes = route("a.test", &a, "")
        + &route("up.test", &b, "    rate_limit: { rate: 1/m, burst: 2 }\n")
        + &route("x.apps.test", &b, "    rate_limit: off\n")
        + &route("slow.test", &b, "    rate_limit: { rate: 1/s, burst: 1 }\n");
    let top = "defaults:\n  rate_limit: { rate: 1/m, burst: 3 }\n";
    let _gw = env.start(&config(&env, top, &routes));
    let c = client(
        &env,
        &["a.test", "up.test", "x.apps.test", "slow.test"],
        false,
    );
    let url = |host: &str| format!("https://{host}:{}/echo", env.https);

    for remaining in [2, 1, 0] {
        let (status, h, _) = get(&c, &url("a.test"), &[]).await;
        assert_eq!(status, 200);
        assert_eq!(h["ratelimit-policy"], "\"default\";q=3;w=180");
        let field = h["ratelimit"].to_str().unwrap_or_default().to_string();
        assert!(
            field.starts_with(&format!("\"default\";r={remaining};t=")),
            "{field}"
        );
    }
    let (status, h, _) = get(&c, &url("a.test"), &[]).await;
    assert_eq!(status, 429);
    let retry = retry_after(&h);
    assert!((55..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        h["ratelimit"],
        format!("\"default\";r=0;t={retry}").as_str()
    );
    assert_eq!(a.hits(), 3, "the app never sees a rejected request");

    // Another route keeps its own buckets; `off` has none.
    for _ in 0..2 {
        assert_eq!(get(&c, &url("up.test"), &[]).await.0, 200);
    }
    let (status, h, _) = get(&c, &url("up.test"), &[]).await;
    assert_eq!(status, 429);
    let retry = retry_after(&h);
    assert!(
        (55..=60).contains(&retry),
        "one token a minute: Retry-After {retry}"
    );
    for _ in 0..10 {
        let (status, h, _) = get(&c, &url("x.apps.test"), &[]).await;
        assert_eq!(status, 200);
        assert!(!h.contains_key("ratelimit"));
    }

    // One token a second: once limited, waiting Retry-After lets a request through. The
    // loop stops at the first 429 (the second request, unless the machine took a whole
    // second between two requests, in which case a later one).
    let mut limited = None;
    for _ in 0..20 {
        let (status, h, _) = get(&c, &url("slow.test"), &[]).await;
        if status == 429 {
            limited = Some(retry_after(&h));
            break;
        }
        assert_eq!(status, 200);
    }
    let retry = limited.expect("never limited at 1/s");
    assert_eq!(retry, 1);
    // Retry-After is rounded up: after it, the token is back (the margin covers the
    // gateway's and the test's clocks ticking apart).
    tokio::time::sleep(Duration::from_millis(retry * 1000 + 50)).await;
    assert_eq!(get(&c, &url("slow.test"), &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let a = Upstream::start("A").await;
    let limit = "    rate_limit: { rate: 1/m, burst: 1 }\n";
    let url = |env: &Env| format!("https://a.test:{}/echo", env.https);

    // Untrusted peer: its X-Forwarded-For is ignored; every request is 127.0.0.1's.
    let env = Env::new();
    let gw = env.start(&config(&env, "", &route("a.test", &a, limit)));
    let c = client(&env, &["a.test"], false);
    let (status, _, body) = get(&c, &url(&env), &[("x-forwarded-for", "1.1.1.1")]).await;
    assert_eq!(status, 200);
    assert_eq!(body["headers"]["x-real-ip"], "127.0.0.1");
    let (status, _, _) = get(&c, &url(&env), &[("x-forwarded-for", "2.2.2.2")]).await;
    assert_eq!(
        status, 429,
        "a spoofed X-Forwarded-For does not buy a new bucket"
    );
    drop(gw);

    // Trusted proxy: the right-most untrusted address is the client.
    let env = Env::new();
    let top = "trusted_proxies: [\"127.0.0.0/8\"]\n";
    let _gw = env.start(&config(&env, top, &route("a.test", &a, limit)));
    let c = client(&env, &["a.test"], false);
    let (status, _, body) = get(&c, &url(&env), &[("x-forwarded-for", "1.1.1.1")]).await;
    assert_eq!(status, 200);
    assert_eq!(body["headers"]["x-real-ip"], "1.1.1.1");
    assert_eq!(body["headers"]["x-forwarded-for"], "1.1.1.1, 127.0.0.1");
    let (status, _, _) = get(&c, &url(&env), &[("x-forwarded-for", "2.2.2.2")]).await;
    assert_eq!(
        status, 200,
        "another client behind the proxy has its own bucket"
    );
    let spoof = [("x-forwarded-for", "9.9.9.9, 1.1.1.1")];
    let (status, _, _) = get(&c, &url(&env), &spoof).await;
    assert_eq!(
        status, 429,
        "the client's own left-hand entries are not believed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_by_header_key_falls_back_to_the_address() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let limit = "    rate_limit: { rate: 1/m, burst: 1, key: \"header:X-Api-Key\" }\n";
    let _gw = env.start(&config(&env, "", &route("a.test", &a, limit)));
    let c = client(&env, &["a.test"], true);
    let url = format!("https://a.test:{}/echo", env.https);
    let key = |k: &'static str| [("x-api-key", k)];
    assert_eq!(get(&c, &url, &key("k1")).await.0, 200);
    assert_eq!(get(&c, &url, &key("k1")).await.0, 429);
    assert_eq!(get(&c, &url, &key("k2")).await.0, 200);
    assert_eq!(get(&c, &url, &[]).await.0, 200);
    assert_eq!(get(&c, &url, &[]).await.0, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_is_one_request_and_not_a_body() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let extra = "    max_body: 1K\n    rate_limit: { rate: 1/m, burst: 1 }\n";
    let _gw = env.start(&config(&env, "", &route("a.test", &a, extra)));
    let (mut ws, _) = env
        .ws_connect("a.test", "/ws")
        .await
        .expect("first websocket");
    let payload = "x".repeat(1024);
    for _ in 0..16 {
        ws.send(tokio_tungstenite::tungstenite::Message::text(
            payload.clone(),
        ))
        .await
        .expect("send");
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("reply in time")
            .expect("open")
            .expect("frame");
        assert_eq!(reply.into_text().expect("text").len(), payload.len() + 6);
    }
    match env.ws_connect("a.test", "/ws").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 429),
        other => panic!(
            "second websocket should be rate limited: {:?}",
            other.map(|r| r.1)
        ),
    }
}
