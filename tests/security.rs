//! Issue 11 against the real binary: request smuggling refused before any app sees it,
//! head limits (431), slowloris, SNI/Host agreement (421), request targets, the
//! exposed-upstream check. The TLS scan is in `tests/tls_scan.rs`.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{client, sample, Env, Upstream};
use serde_json::Value;

fn config(env: &Env, top: &str, routes: &str) -> String {
    format!("{}{top}routes:\n{routes}", env.listen_and_tls())
}

fn route(host: &str, up: &Upstream, extra: &str) -> String {
    format!("  - host: {host}\n    upstream: {}\n{extra}", up.addr)
}

/// Requests whose body could be read two ways (or whose head is malformed): each must get
/// 400 and a closed connection, and none may reach the app.
const SMUGGLING: &[(&str, &str)] = &[
    (
        "Content-Length and Transfer-Encoding",
        "POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /echo HTTP/1.1\r\nHost: a.test\r\n\r\n",
    ),
    (
        "Transfer-Encoding and Content-Length",
        "POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST /echo HTTP/1.1\r\n\r\n0\r\n\r\n",
    ),
    (
        "duplicate Content-Length",
        "POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd",
    ),
    (
        "conflicting Content-Length",
        "POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    ),
    (
        "Content-Length list",
        "POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: 4, 4\r\n\r\nabcd",
    ),
    (
        "malformed chunk size",
        "POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabcd\r\n0\r\n\r\n",
    ),
    (
        "chunk size overflowing 64 bits",
        "POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nabcd\r\n0\r\n\r\n",
    ),
    (
        "obsolete line folding",
        "GET /echo HTTP/1.1\r\nHost: a.test\r\nX-Folded: a\r\n b\r\n\r\n",
    ),
    (
        "Transfer-Encoding chunked twice",
        "POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "Transfer-Encoding other than chunked",
        "POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip\r\n\r\nabcd",
    ),
    (
        "space before the colon",
        "POST /echo HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\nabcd",
    ),
    (
        "Transfer-Encoding on HTTP/1.0",
        "POST /echo HTTP/1.0\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_attempts_get_400_a_closed_connection_and_reach_no_app() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let gw = env.start(&config(&env, "", &route("a.test", &a, "")));
    for (case, request) in SMUGGLING {
        let (answer, closed) =
            tokio::task::block_in_place(|| env.exchange("a.test", request.as_bytes()));
        assert!(answer.starts_with("HTTP/1.1 400 "), "{case}:\n{answer}");
        assert!(closed, "{case}: connection left open:\n{answer}");
        assert_eq!(a.hits(), 0, "{case}: reached the app");
    }
    // The same app answers a well-formed request, chunked body included.
    let ok = "POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n4\r\nabcd\r\n0\r\n\r\n";
    let (answer, _) = tokio::task::block_in_place(|| env.exchange("a.test", ok.as_bytes()));
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert_eq!(a.uploads().last().map(|u| u.bytes), Some(4));
    assert_eq!(
        gw.errors_logged(),
        Vec::<String>::new(),
        "client mistakes are not errors"
    );
}

/// An HTTP/2 request whose body is `sent` bytes against a declared `declared`.
async fn h2_mismatch(env: &Env, declared: usize, sent: usize) -> String {
    let mut h2 = env.h2_connect("a.test").await;
    let req = http::Request::post(format!("https://a.test:{}/upload", env.https))
        .header("content-length", declared)
        .body(())
        .expect("request");
    let (resp, mut body) = h2.send_request(req, false).expect("send");
    let _ = body.send_data(Bytes::from(vec![b'x'; sent]), true);
    match tokio::time::timeout(Duration::from_secs(20), resp).await {
        Ok(Ok(resp)) => format!("status {}", resp.status()),
        Ok(Err(e)) => format!("stream error: {e}"),
        Err(_) => panic!("no answer to a body of {sent} bytes declared as {declared}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_content_length_mismatch_is_a_stream_error_and_never_a_complete_body() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let gw = env.start(&config(&env, "", &route("a.test", &a, "")));
    for (declared, sent) in [(10, 5), (5, 10)] {
        let outcome = h2_mismatch(&env, declared, sent).await;
        assert!(
            outcome.starts_with("stream error") || outcome.starts_with("status 4"),
            "declared {declared}, sent {sent}: {outcome}"
        );
    }
    // Whatever reached the app broke off; nothing arrived as complete.
    let complete: Vec<_> = a.uploads().into_iter().filter(|u| u.complete).collect();
    assert!(complete.is_empty(), "{complete:?}");
    // A stream error, not a connection error: the client's next request is served.
    let c = client(&env, &["a.test"], true);
    let resp = c
        .get(format!("https://a.test:{}/echo", env.https))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(gw.errors_logged(), Vec::<String>::new());
}

/// An HTTP/1.1 GET with `fields` extra header fields of `size` bytes each.
fn head_with(fields: usize, size: usize) -> String {
    let mut req = "GET /echo HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n".to_string();
    for i in 0..fields {
        req.push_str(&format!("X-F{i}: {}\r\n", "v".repeat(size)));
    }
    req + "\r\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_over_the_limits_get_431_on_http1_and_http2() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    // 50 fields (the test app, hyper, allows 100 in all, and the gateway adds five of its
    // own); the default 64 KiB of head.
    let top = "limits: { max_headers: 50 }\n";
    let gw = env.start(&config(&env, top, &route("a.test", &a, "")));
    let status = |req: String| {
        let (answer, closed) =
            tokio::task::block_in_place(|| env.exchange("a.test", req.as_bytes()));
        let first = answer.lines().next().unwrap_or_default().to_string();
        (first, closed, answer.contains("header fields"))
    };
    let too_large = "HTTP/1.1 431 Request Header Fields Too Large".to_string();
    // Host and Connection count.
    assert_eq!(status(head_with(48, 1)).0, "HTTP/1.1 200 OK");
    assert_eq!(status(head_with(49, 1)), (too_large.clone(), true, true));
    assert_eq!(status(head_with(1, 60 << 10)).0, "HTTP/1.1 200 OK");
    assert_eq!(status(head_with(1, 70 << 10)), (too_large, true, true));
    assert_eq!(
        a.hits(),
        2,
        "only the heads within the limits reached the app"
    );

    // HTTP/2: the same count, and the header list size announced in SETTINGS.
    // No Host field on HTTP/2 (:authority is not a field).
    for (fields, size, expect) in [(50, 1, 200), (51, 1, 431), (1, 70 << 10, 431)] {
        let mut h2 = env.h2_connect("a.test").await;
        let mut req = http::Request::get(format!("https://a.test:{}/echo", env.https));
        for i in 0..fields {
            req = req.header(format!("x-f{i}"), "v".repeat(size));
        }
        let (resp, _) = h2
            .send_request(req.body(()).expect("request"), true)
            .expect("send");
        let got = match tokio::time::timeout(Duration::from_secs(20), resp).await {
            Ok(Ok(resp)) => resp.status().as_u16(),
            Ok(Err(e)) => panic!("{fields} fields of {size} bytes: {e}"),
            Err(_) => panic!("{fields} fields of {size} bytes: no answer"),
        };
        assert_eq!(got, expect, "HTTP/2, {fields} fields of {size} bytes");
    }
    assert_eq!(a.hits(), 3);
    env.metrics_until("431s not counted", |text| {
        sample(
            text,
            r#"gateway_rejected_total{reason="head_too_large",route="a.test"}"#,
        ) == Some(3.0)
    })
    .await;
    assert_eq!(gw.errors_logged(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_are_forwarded_as_received_and_odd_forms_refused() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let _gw = env.start(&config(&env, "", &route("a.test", &a, "")));
    let send = |req: &str| tokio::task::block_in_place(|| env.exchange("a.test", req.as_bytes()));
    // Dot segments and escapes mean one thing to the gateway and another to some apps:
    // the target goes upstream byte for byte, to be read once, by the app.
    let target = "/echo/%2e%2e/x/../y%2F?q=%2F..&r";
    let (answer, _) = send(&format!(
        "GET {target} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
    ));
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let echo: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    assert_eq!(echo["uri"], target, "{answer}");
    // `*` is for OPTIONS only; an absolute-form target naming another host is refused.
    let (answer, closed) = send("GET * HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400 ") && closed, "{answer}");
    let (answer, _) = send("OPTIONS * HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let (answer, closed) = send("GET https://b.test/echo HTTP/1.1\r\nHost: a.test\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400 ") && closed, "{answer}");
    assert_eq!(a.hits_on("/echo"), 0, "the refused targets reached no app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_served_by_another_certificate_than_the_connections_gets_421() {
    let (a, b) = (Upstream::start("A").await, Upstream::start("B").await);
    let env = Env::new();
    // a.test and *.apps.test share the default certificate; b.test has its own.
    let routes = route("a.test", &a, "")
        + &route("\"*.apps.test\"", &a, "")
        + &route(
            "b.test",
            &b,
            "    tls: { cert: certs/b.pem, key: certs/b.key }\n",
        );
    let gw = env.start(&config(&env, "", &routes));
    let get = |sni: &str, host: &str| {
        let req = format!("GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let mut tls = native_tls::TlsConnector::builder();
        tls.danger_accept_invalid_certs(true);
        let tcp = std::net::TcpStream::connect(("127.0.0.1", env.https)).expect("connect");
        let mut s = tls
            .build()
            .expect("tls")
            .connect(sni, tcp)
            .expect("handshake");
        std::io::Write::write_all(&mut s, req.as_bytes()).expect("write");
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut out);
        out.lines().next().unwrap_or_default().to_string()
    };
    tokio::task::block_in_place(|| {
        assert_eq!(get("a.test", "b.test"), "HTTP/1.1 421 Misdirected Request");
        assert_eq!(get("b.test", "a.test"), "HTTP/1.1 421 Misdirected Request");
        assert_eq!(
            get("a.test", "x.apps.test"),
            "HTTP/1.1 200 OK",
            "same certificate"
        );
        assert_eq!(get("A.TEST", "a.test:8443"), "HTTP/1.1 200 OK");
    });
    assert_eq!(
        b.hits(),
        0,
        "nothing reached b.test's app through a.test's connection"
    );

    // HTTP/2, where browsers reuse one connection for every host its certificate names.
    let mut h2 = env.h2_connect("a.test").await;
    for (host, expect) in [("b.test", 421), ("x.apps.test", 200), ("a.test", 200)] {
        let req = http::Request::get(format!("https://{host}:{}/echo", env.https))
            .body(())
            .expect("request");
        let (resp, _) = h2.send_request(req, true).expect("send");
        let status = resp.await.expect("response").status().as_u16();
        assert_eq!(status, expect, "{host} on a.test's HTTP/2 connection");
    }
    assert_eq!(b.hits(), 0);
    assert_eq!(gw.errors_logged(), Vec::<String>::new());
}

/// A slowloris connection: a request head sent a byte every `every`, never finished.
/// Returns how long the gateway took to close it, from the moment it was handed over
/// (after the TLS handshake, on HTTPS).
async fn slowloris<S>(stream: S, every: Duration) -> Duration
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let (mut read, mut write) = tokio::io::split(stream);
    let head = b"GET /echo HTTP/1.1\r\nHost: a.test\r\nX-Slow: ";
    let trickle = async {
        let _ = write.write_all(head).await;
        loop {
            tokio::time::sleep(every).await;
            if write.write_all(b"a").await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let closed = async {
        let mut buf = [0u8; 1024];
        while matches!(read.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    tokio::select! {
        _ = trickle => {}
        _ = closed => {}
    }
    started.elapsed()
}

/// The same over TLS to the HTTPS listener.
async fn slowloris_tls(
    connector: tokio_native_tls::TlsConnector,
    port: u16,
    every: Duration,
) -> Duration {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let tls = connector.connect("a.test", tcp).await.expect("handshake");
    slowloris(tls, every).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_at_the_header_timeout_and_normal_clients_stay_fast() {
    const ATTACKERS: usize = 500;
    let a = Upstream::start("A").await;
    let env = Env::new();
    // The default limits (header_timeout 10 s), but for the cap on connections per
    // address: all 500 attackers come from 127.0.0.1 (tests/abuse_conns.rs tests it).
    let top = "limits:\n  max_connections_per_client: off\n";
    let gw = env.start(&config(&env, top, &route("a.test", &a, "")));
    let mut tls = native_tls::TlsConnector::builder();
    tls.add_root_certificate(
        native_tls::Certificate::from_pem(&env.cert_pem("default")).expect("cert"),
    );
    let connector = tokio_native_tls::TlsConnector::from(tls.build().expect("tls"));
    let attack: Vec<_> = (0..ATTACKERS)
        .map(|_| {
            let c = connector.clone();
            tokio::spawn(slowloris_tls(c, env.https, Duration::from_secs(2)))
        })
        .collect();
    // And one on the plain-HTTP (redirect) listener.
    let plain = tokio::net::TcpStream::connect(("127.0.0.1", env.http))
        .await
        .expect("connect http");
    let plain = tokio::spawn(slowloris(plain, Duration::from_secs(2)));
    // Once every attacker is connected (counted by the gateway), a normal client's
    // requests are timed, some on a kept-alive connection, some on new connections.
    env.metrics_until("the attackers never all connected", |text| {
        sample(text, r#"gateway_open_connections{listener="https"}"#)
            .is_some_and(|n| n >= ATTACKERS as f64)
    })
    .await;
    let url = format!("https://a.test:{}/echo", env.https);
    let kept = client(&env, &["a.test"], false);
    let mut latencies = Vec::new();
    let measuring = Instant::now();
    while measuring.elapsed() < Duration::from_secs(4) {
        let fresh;
        let c = if latencies.len() % 10 == 9 {
            fresh = client(&env, &["a.test"], false);
            &fresh
        } else {
            &kept
        };
        let sent = Instant::now();
        let resp = c.get(&url).send().await.expect("request during the attack");
        assert_eq!(resp.status(), 200);
        latencies.push(sent.elapsed());
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "normal client during {ATTACKERS} slowloris connections: {} requests, p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        p99,
        latencies[latencies.len() - 1]
    );
    // Served promptly: well under a second, on a loaded machine too.
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");

    // Every attacker is cut once its head has taken the 10 s header_timeout: not
    // before (the deadline is not shorter than configured), and not long after (the
    // margin is for a busy machine).
    let mut cut = Vec::new();
    for t in attack {
        cut.push(t.await.expect("attacker"));
    }
    let plain = plain.await.expect("plain attacker");
    assert!(
        (Duration::from_secs(9)..Duration::from_secs(30)).contains(&plain),
        "plain HTTP slowloris cut after {plain:?}"
    );
    cut.sort();
    eprintln!(
        "slowloris connections closed after {:?} to {:?}",
        cut[0],
        cut[cut.len() - 1]
    );
    assert!(cut[0] >= Duration::from_secs(9), "cut early: {:?}", cut[0]);
    assert!(
        cut[cut.len() - 1] < Duration::from_secs(30),
        "{:?}",
        cut[cut.len() - 1]
    );
    assert_eq!(a.hits(), latencies.len(), "no slow head reached the app");
    assert_eq!(gw.errors_logged(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_listening_on_every_interface_is_flagged_and_one_on_loopback_is_not() {
    assert!(
        !gateway::exposure::local_addresses().is_empty(),
        "this test needs a non-loopback address on the host"
    );
    let open = Upstream::start_on("open", std::net::Ipv4Addr::UNSPECIFIED.into()).await;
    let closed = Upstream::start("closed").await;
    let env = Env::new();
    let routes = route("a.test", &open, "    name: open\n")
        + &route("b.test", &closed, "    name: closed\n");
    let text = config(&env, "", &routes);
    let gw = env.start(&text);
    let exposed = |route: &str| format!("gateway_upstream_exposed{{route=\"{route}\"}}");
    env.metrics_until("the exposed upstream was not flagged", |text| {
        sample(text, &exposed("open")) == Some(1.0) && sample(text, &exposed("closed")) == Some(0.0)
    })
    .await;
    let log = gw.log_text();
    assert!(log.contains("event=upstream_exposed route=open "), "{log}");
    assert!(!log.contains("route=closed"), "{log}");
    assert!(
        log.contains("server_name=\"127.0.0.1\""),
        "the fix is named:\n{log}"
    );

    let (status, out, err) = common::check(&env.path("routes.yaml"));
    assert!(status.success(), "a warning, not an error: {out}{err}");
    assert!(err.contains(": warning: route open: its app"), "{err}");
    assert!(!err.contains("route closed"), "{err}");

    // A reload checks again: the exposed app behind a new route name is flagged at once.
    env.write_config(&text.replace("name: open", "name: renamed"));
    gw.signal(libc::SIGHUP);
    env.metrics_until("not checked again after the reload", |text| {
        sample(text, &exposed("renamed")) == Some(1.0) && sample(text, &exposed("open")).is_none()
    })
    .await;
}
