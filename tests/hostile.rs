//! Issue 26 against the real binary: what an outside review sent as a hostile client,
//! and what the gateway does with it now. Fields only a proxy may set (items 3 and 6),
//! the admin listener (5), bodies and pipelining (7), request targets (8), keys a client
//! chooses (9), and the upgrade rules that need no particular app server (2). The path
//! readings and the h2c upgrade, against uvicorn, hypercorn and Node, are in
//! `tests/hostile_apps.rs`; concurrent logins in `tests/hostile_logins.rs`.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::sign_on::SignOn;
use common::{client, sample, Env, Upstream};
use serde_json::Value;

fn config(env: &Env, top: &str, routes: &str) -> String {
    format!("{}{top}routes:\n{routes}", env.listen_and_tls())
}

fn route(host: &str, up: &Upstream, extra: &str) -> String {
    format!("  - host: {host}\n    upstream: {}\n{extra}", up.addr)
}

/// The JSON body of an HTTP/1.1 answer read whole (`Connection: close`).
fn body_json(answer: &str) -> Value {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_only_a_proxy_may_set_never_reach_the_app_as_the_client_wrote_them() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let routes = route("a.test", &a, "")
        + &route("up.test", &a, "")
        + "  - host: b.test\n    upstream: "
        + &a.addr.to_string()
        + "\n    tls: { cert: certs/b.pem, key: certs/b.key }\n";
    let keep = "limits: { underscores_in_headers: true }\n";
    for (top, underscores) in [("", false), (keep, true)] {
        let gw = env.start(&config(&env, top, &routes));
        let request = "GET /echo HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\
            Forwarded: for=10.0.0.1;proto=https;host=admin.test\r\n\
            X-Forwarded-Port: 1\r\nX-Scheme: http\r\nX-Forwarded-Ssl: on\r\n\
            X-Original-URL: /admin/\r\nX-Rewrite-URL: /admin/\r\n\
            Remote_User: admin\r\nRemote-User: alice\r\n\r\n";
        let (answer, _) =
            tokio::task::block_in_place(|| env.exchange("a.test", request.as_bytes()));
        let seen = &body_json(&answer)["headers"];
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
        for gone in [
            "forwarded",
            "x-scheme",
            "x-forwarded-ssl",
            "x-original-url",
            "x-rewrite-url",
        ] {
            assert!(seen.get(gone).is_none(), "{gone} reached the app: {seen}");
        }
        // The port the client addressed: its Host has none, HTTPS's is 443.
        assert_eq!(seen["x-forwarded-port"], "443", "{seen}");
        assert_eq!(seen["remote-user"], "alice");
        assert_eq!(
            seen.get("remote_user").is_some(),
            underscores,
            "names with `_` are dropped unless kept: {seen}"
        );
        drop(gw);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_on_service_hears_only_what_the_gateway_vouches_for() {
    let a = Upstream::start("A").await;
    let sign_on = SignOn::start().await;
    let env = Env::new();
    let extra = format!(
        "    forward_auth:\n      url: http://{}/api/verify\n      copy_headers: [X-Auth-Request-User]\n",
        sign_on.addr
    );
    let _gw = env.start(&config(&env, "", &route("a.test", &a, &extra)));
    let request = "GET /echo?x=1 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\
        Cookie: session=good\r\nX-Forwarded-For: 10.1.2.3\r\nX-Real-IP: 10.1.2.3\r\n\
        X-Original-URL: https://public.test/\r\nX-Original-Method: GET\r\n\
        Forwarded: for=10.1.2.3\r\nX-Forwarded-Port: 80\r\n\r\n";
    let (answer, _) = tokio::task::block_in_place(|| env.exchange("a.test", request.as_bytes()));
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let checks = sign_on.checks();
    assert_eq!(checks.len(), 1, "{checks:?}");
    let h = &checks[0].headers;
    let field = |name: &str| {
        let all: Vec<&str> = h
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("?"))
            .collect();
        all.join(" | ")
    };
    assert_eq!(
        field("x-forwarded-for"),
        "127.0.0.1",
        "one address, the client's"
    );
    assert_eq!(field("x-real-ip"), "127.0.0.1");
    assert_eq!(field("x-original-url"), "https://a.test/echo?x=1");
    assert_eq!(field("x-original-method"), "GET");
    assert_eq!(field("forwarded"), "");
    assert_eq!(field("x-forwarded-port"), "443");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_refuses_other_sites_and_foreign_hosts() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let top = "";
    let base = config(&env, top, &route("a.test", &a, ""));
    let listed = base.replacen(
        "  metrics: ",
        "  metrics_hosts: [gateway.internal]\n  metrics: ",
        1,
    );
    let _gw = env.start(&listed);
    let c = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", env.metrics);
    let status = |req: reqwest::RequestBuilder| async move {
        req.send().await.expect("admin request").status().as_u16()
    };
    // Prometheus and `gateway reload` name the listener by its address.
    assert_eq!(status(c.get(url("/metrics"))).await, 200);
    assert_eq!(
        status(c.get(url("/metrics")).header("host", "localhost")).await,
        200
    );
    assert_eq!(
        status(c.get(url("/metrics")).header("host", "gateway.internal:9")).await,
        200
    );
    // DNS rebinding: the attacker's own name, now resolving to 127.0.0.1.
    assert_eq!(
        status(c.get(url("/metrics")).header("host", "attacker.example")).await,
        403
    );
    // A page of another site posting a reload.
    let cross = c
        .post(url("/-/reload"))
        .header("origin", "http://attacker.example");
    assert_eq!(status(cross).await, 403);
    let fetch = c
        .post(url("/-/reload"))
        .header("sec-fetch-site", "cross-site");
    assert_eq!(status(fetch).await, 403);
    assert_eq!(status(c.post(url("/-/reload"))).await, 200);
    // `gateway reload` still works.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["reload", "-c"])
        .arg(env.path("routes.yaml"))
        .output()
        .expect("gateway reload");
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_targets_other_than_origin_and_absolute_form_get_400() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let top = "trusted_proxies: []\n";
    let text = config(&env, top, &route("a.test", &a, "")).replacen(
        "  http: ",
        "  http_mode: proxy\n  http: ",
        1,
    );
    let _gw = env.start(&text);
    let targets = ["elsewhere.test:40355", "echo/x", "admin/x"];
    for target in targets {
        let request = format!("GET {target} HTTP/1.1\r\nHost: a.test\r\n\r\n");
        let (answer, closed) =
            tokio::task::block_in_place(|| env.exchange("a.test", request.as_bytes()));
        assert!(
            answer.starts_with("HTTP/1.1 400 ") && closed,
            "{target}: {answer}"
        );
        // The plain-HTTP proxy mode reads targets the same way.
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", env.http)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        tcp.write_all(request.as_bytes()).expect("write");
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 400 "),
            "plain {target}: {answer}"
        );
    }
    assert_eq!(a.hits(), 0, "no refused target reached the app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_all_answered_in_order() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let _gw = env.start(&config(&env, "", &route("a.test", &a, "")));
    let two = "GET /echo?n=1 HTTP/1.1\r\nHost: a.test\r\n\r\n\
               GET /echo?n=2 HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
    let (answer, closed) = tokio::task::block_in_place(|| env.exchange("a.test", two.as_bytes()));
    assert!(closed, "{answer}");
    let first = answer.find("/echo?n=1").expect("the first answered");
    let second = answer.find("/echo?n=2").expect("the second answered");
    assert!(first < second, "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 200 ").count(), 2, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_with_bare_line_feeds_gets_400() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let _gw = env.start(&config(&env, "", &route("a.test", &a, "")));
    // Whatever came with the head is read before the app is connected: the app sees
    // nothing of a body whose later chunks end in bare line feeds.
    let head = "POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n";
    for body in ["5\nhello\n0\n\n", "5\r\nhello\r\n3\nabc\n0\n\n"] {
        let request = format!("{head}\r\n{body}");
        let (answer, closed) =
            tokio::task::block_in_place(|| env.exchange("a.test", request.as_bytes()));
        assert!(
            answer.starts_with("HTTP/1.1 400 ") && closed,
            "{body:?}: {answer}"
        );
    }
    assert_eq!(a.hits_on("/upload"), 0);
    // After the app's `100 Continue` the body comes, broken: the client still gets its
    // final answer, 400, instead of a connection that ends without one.
    let answer = tokio::task::block_in_place(|| {
        let mut s = env.tls_connect("a.test");
        s.write_all(format!("{head}Expect: 100-continue\r\n\r\n").as_bytes())
            .expect("head");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        assert!(out.starts_with(b"HTTP/1.1 100 "), "{out:?}");
        s.write_all(b"5\nhello\n0\n\n").expect("body");
        let mut rest = String::new();
        let _ = s.read_to_string(&mut rest);
        rest
    });
    assert!(answer.contains("HTTP/1.1 400 "), "{answer}");
    assert!(a.uploads().iter().all(|u| !u.complete), "{:?}", a.uploads());
}

/// Sends a body of `Content-Length: 1000` a byte every `every` until the gateway answers;
/// returns the answer and how long it took.
fn trickle(env: &Env, every: Duration, limit: Duration) -> (String, Duration) {
    let mut s = env.tls_connect("a.test");
    let head = "POST /upload HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1000\r\n\r\n";
    s.write_all(head.as_bytes()).expect("head");
    s.get_ref()
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let started = Instant::now();
    let mut next = started;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < limit {
        if Instant::now() >= next && every > Duration::ZERO {
            if s.write_all(b"x").is_err() {
                break;
            }
            next += every;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        if out.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_or_trickled_body_gets_408_and_frees_the_app() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let top = "limits: { body_timeout: 2s, body_min_rate: 100 }\n";
    let _gw = env.start(&config(&env, top, &route("a.test", &a, "")));
    // Silent after the head: 408 once body_timeout passes.
    let (answer, took) =
        tokio::task::block_in_place(|| trickle(&env, Duration::ZERO, Duration::from_secs(20)));
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    // A byte every 500 ms never leaves the read waiting 2 s, but falls below 100 bytes/s:
    // 408 at the first byte after the grace period.
    let (answer, took) = tokio::task::block_in_place(|| {
        trickle(&env, Duration::from_millis(500), Duration::from_secs(20))
    });
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    // The app's side of both was aborted: it never got a whole body.
    assert!(a.uploads().iter().all(|u| !u.complete), "{:?}", a.uploads());
    // A chunked body silent after its head: 408 too (its first chunk is awaited before
    // the app is asked).
    let (answer, _) = tokio::task::block_in_place(|| {
        env.exchange(
            "a.test",
            b"POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
    });
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    let text = env
        .metrics_until("three body timeouts counted", |t| {
            sample(
                t,
                "gateway_rejected_total{reason=\"body_timeout\",route=\"a.test\"}",
            ) == Some(3.0)
        })
        .await;
    assert!(text.contains("body_timeout"));
    // A body sent at a normal pace passes.
    let c = client(&env, &["a.test"], false);
    let resp = c
        .post(format!("https://a.test:{}/upload", env.https))
        .body(vec![b'x'; 1 << 20])
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_other_than_a_websocket_get_are_ordinary_requests_and_bodies_refused() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let _gw = env.start(&config(&env, "", &route("a.test", &a, "")));
    let send = |req: &str| tokio::task::block_in_place(|| env.exchange("a.test", req.as_bytes()));
    // h2c: not tunnelled, the request goes on as an ordinary one without its upgrade and
    // the connection-level fields.
    let (answer, _) = send(
        "GET /echo HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade, HTTP2-Settings, X-Secret\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nX-Secret: 1\r\n\
         Proxy-Authorization: Basic YTpi\r\nTE: trailers\r\nKeep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let seen = &body_json(&answer.replace("Connection: close", ""))["headers"];
    for gone in [
        "upgrade",
        "http2-settings",
        "x-secret",
        "proxy-authorization",
        "te",
        "keep-alive",
        "proxy-connection",
    ] {
        assert!(seen.get(gone).is_none(), "{gone} reached the app: {seen}");
    }
    // An upgrade with a body: 400, nothing reaches the app.
    let (answer, closed) = send(
        "POST /echo HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: x\r\n\
         Content-Length: 5\r\n\r\nhello",
    );
    assert!(answer.starts_with("HTTP/1.1 400 ") && closed, "{answer}");
    let (answer, closed) = send(
        "GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 400 ") && closed, "{answer}");
    assert_eq!(a.hits_on("/ws"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_waits_for_a_slot_like_any_request_and_frees_it_after_101() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let extra = "    max_concurrent: 1\n    queue: { size: 4, timeout: 20s }\n";
    let _gw = env.start(&config(&env, "", &route("a.test", &a, extra)));
    let c = client(&env, &["a.test"], false);
    // A slow request holds the only slot; a WebSocket asked for meanwhile waits for it.
    let slow = tokio::spawn({
        let c = c.clone();
        let url = format!("https://a.test:{}/slow?ms=3000", env.https);
        async move { c.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    a.wait_for("/slow", 1).await;
    let started = Instant::now();
    let (ws, resp) = env.ws_connect("a.test", "/ws").await.expect("websocket");
    assert_eq!(resp.status().as_u16(), 101);
    // Well past any handshake's time on a busy machine: it waited for the slow request.
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the WebSocket waited for the slot: {:?}",
        started.elapsed()
    );
    assert_eq!(slow.await.expect("join").expect("slow request"), 200);
    // Open, the WebSocket no longer holds the slot: a request goes through at once.
    let resp = c
        .get(format!("https://a.test:{}/echo", env.https))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("a request beside the open WebSocket");
    assert_eq!(resp.status(), 200);
    drop(ws);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_with_another_upgrade_are_held_to_max_concurrent() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let extra = "    max_concurrent: 1\n    queue: { size: 4, timeout: 20s }\n";
    let _gw = env.start(&config(&env, "", &route("a.test", &a, extra)));
    // Three slow requests with `Upgrade: x` at once: before, each was tunnelled outside
    // the cap and all three reached the app together.
    let started = Instant::now();
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let request =
                "GET /slow?ms=1000 HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade, close\r\n\
                           Upgrade: x\r\n\r\n";
            let env_https = env.https;
            let pem = env.cert_pem("default");
            tokio::task::spawn_blocking(move || {
                let mut b = native_tls::TlsConnector::builder();
                b.add_root_certificate(native_tls::Certificate::from_pem(&pem).expect("cert"));
                let tcp = std::net::TcpStream::connect(("127.0.0.1", env_https)).expect("connect");
                let mut s = b
                    .build()
                    .expect("tls")
                    .connect("a.test", tcp)
                    .expect("handshake");
                s.write_all(request.as_bytes()).expect("write");
                let mut answer = String::new();
                let _ = s.read_to_string(&mut answer);
                answer
            })
        })
        .collect();
    for t in tasks {
        let answer = t.await.expect("join");
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    }
    let took = started.elapsed();
    // One at a time: 3 s; together (as before) 1 s and the handshakes.
    assert!(
        took >= Duration::from_millis(2500),
        "one at a time: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_share_one_bucket_per_prefix() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let top = "trusted_proxies: [127.0.0.1]\n";
    let extra = "    rate_limit: { rate: 1/m, burst: 1 }\n";
    let _gw = env.start(&config(&env, top, &route("a.test", &a, extra)));
    let c = client(&env, &["a.test"], false);
    let url = format!("https://a.test:{}/echo", env.https);
    let get = |from: &'static str| {
        let c = c.clone();
        let url = url.clone();
        async move {
            c.get(url)
                .header("x-forwarded-for", from)
                .send()
                .await
                .expect("request")
                .status()
                .as_u16()
        }
    };
    assert_eq!(get("2001:db8:1:2::1").await, 200);
    // Another address of the same /64: the same host, the same bucket.
    assert_eq!(get("2001:db8:1:2:ffff::9").await, 429);
    // Another /64: another client.
    assert_eq!(get("2001:db8:1:3::1").await, 200);
}

#[test]
fn check_warns_about_a_rate_limit_keyed_by_a_header_on_a_public_route() {
    let env = Env::new();
    let text = "listen: { https: 127.0.0.1:8443 }\nroutes:\n  - host: a.test\n    upstream: 127.0.0.1:9\n    rate_limit: { rate: 10/s, key: header:X-Api-Key }\n  - host: b.test\n    upstream: 127.0.0.1:9\n    allow: [10.0.0.0/8]\n    rate_limit: { rate: 10/s, key: header:X-Api-Key }\n  - host: c.test\n    upstream: 127.0.0.1:9\n    allow: [10.0.0.0/8]\n    rate_limit: { rate: 10/s, key: header:X_Api_Key }\n";
    let path = env.write_config(text);
    let (status, _, stderr) = common::check(&path);
    assert!(status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning:")).collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    let expected = format!(
        "{}:5:36: warning: routes[0].rate_limit.key: the client writes x-api-key itself",
        path.display()
    );
    assert!(warnings[0].starts_with(&expected), "{stderr}");
    // A key field with `_` never arrives: such fields are removed by default.
    let expected = format!(
        "{}:13:36: warning: routes[2].rate_limit.key: requests never carry x_api_key",
        path.display()
    );
    assert!(warnings[1].starts_with(&expected), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_s_101_to_another_protocol_opens_no_tunnel() {
    // An app that answers every request with a 101 to h2c.
    let app = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = app.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in app.incoming().take(4).flatten() {
            let mut conn = conn;
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            );
        }
    });
    let env = Env::new();
    let routes = format!("  - host: a.test\n    upstream: 127.0.0.1:{port}\n");
    let _gw = env.start(&config(&env, "", &routes));
    let request = "GET /ws HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                   Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
    let (answer, closed) =
        tokio::task::block_in_place(|| env.exchange("a.test", request.as_bytes()));
    assert!(answer.starts_with("HTTP/1.1 502 ") && closed, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_chunked_upload_in_one_burst_passes_on_plain_http() {
    let a = Upstream::start("A").await;
    let env = Env::new();
    let text = config(&env, "", &route("a.test", &a, "")).replacen(
        "  http: ",
        "  http_mode: proxy\n  http: ",
        1,
    );
    let _gw = env.start(&text);
    // Head, a 4 KiB chunk and a 64 KiB one in one write: more than the 64 KiB the gateway
    // reads before the app is connected, if it read on.
    let mut request =
        b"POST /upload HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            .to_vec();
    for size in [4 << 10, 64 << 10] {
        request.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        request.extend(std::iter::repeat_n(b'x', size));
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let answer = tokio::task::block_in_place(|| {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", env.http)).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        tcp.write_all(&request).expect("write");
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer);
        answer
    });
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let uploads = a.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].bytes, (4 << 10) + (64 << 10));
    assert!(uploads[0].complete);
}
