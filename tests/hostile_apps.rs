//! Issue 26, items 1 and 2, against the real binary in front of real app servers
//! (`tests/common/apps.rs`: Starlette under uvicorn and hypercorn, a Node app routing on
//! `new URL()`): a path that one of them reads as a guarded route's never reaches it,
//! over HTTP/1.1, HTTP/2 and the plain-HTTP proxy mode; an `h2c` upgrade is not
//! tunnelled; a WebSocket's handshake reaches the app without hop-by-hop fields.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::apps::{App, Server};
use common::Env;
use serde_json::Value;

/// `a.test`: `/` public, `/admin/` behind a login, both on `app`; served on HTTPS and
/// on plain HTTP (`http_mode: proxy`).
fn config(env: &Env, app: &App) -> String {
    let hash = bcrypt::hash("pw", 4).expect("bcrypt");
    let text = format!(
        "{}routes:\n\
         - host: a.test\n  upstream: 127.0.0.1:{port}\n\
         - host: a.test\n  path: /admin/\n  upstream: 127.0.0.1:{port}\n  \
         basic_auth: {{ users: {{ alice: \"{hash}\" }} }}\n",
        env.listen_and_tls(),
        port = app.port(),
    );
    text.replacen("  http: ", "  http_mode: proxy\n  http: ", 1)
}

/// What the review sent, each read by at least one of the servers as `/admin/…`.
const WALKS: &[&str] = &[
    "/admin%2F..%2Fsettings",
    "/admin%2f%2e%2e%2fsettings",
    "/admin%2F%2E%2E%2Fsettings",
    "/admin\\x",
    "/public\\..\\admin\\x",
    "/public/%2e%2e/admin/secret",
    "//admin/secret",
];

/// The status of `GET target` on plain HTTP (the proxy mode), byte for byte.
fn plain_status(env: &Env, target: &str) -> String {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", env.http)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = format!("GET {target} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).expect("write");
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_string()
}

/// The status of `GET target` over HTTP/2, `:path` as given.
async fn h2_status(env: &Env, target: &str) -> u16 {
    let mut h2 = env.h2_connect("a.test").await;
    let uri = format!("https://a.test:{}{target}", env.https);
    let req = http::Request::get(uri).body(()).expect("request");
    let (resp, _) = h2.send_request(req, true).expect("send");
    resp.await.expect("response").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_path_is_not_reached_through_another_reading_of_it() {
    for server in [Server::Uvicorn, Server::Hypercorn, Server::Node] {
        let app = App::start(server);
        let env = Env::new();
        let _gw = env.start(&config(&env, &app));
        for target in WALKS {
            let request =
                format!("GET {target} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
            let (answer, _) =
                tokio::task::block_in_place(|| env.exchange("a.test", request.as_bytes()));
            assert!(
                answer.starts_with("HTTP/1.1 400 "),
                "{server:?} {target}: {answer}"
            );
            let plain = tokio::task::block_in_place(|| plain_status(&env, target));
            assert!(
                plain.starts_with("HTTP/1.1 400 "),
                "{server:?} plain {target}: {plain}"
            );
            // HTTP/2 carries no `\` in `:path` (the client library refuses it).
            if !target.contains('\\') {
                assert_eq!(h2_status(&env, target).await, 400, "{server:?} h2 {target}");
            }
        }
        assert_eq!(
            app.seen(),
            Vec::<String>::new(),
            "{server:?}: something got through"
        );
        // Paths whose readings agree are served, byte for byte; the guard still guards.
        let (answer, _) = tokio::task::block_in_place(|| {
            env.exchange(
                "a.test",
                b"GET /settings%2Fx HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
            )
        });
        assert!(answer.starts_with("HTTP/1.1 200 "), "{server:?}: {answer}");
        assert_eq!(app.seen(), ["/settings%2Fx"], "{server:?}");
        let (answer, _) = tokio::task::block_in_place(|| {
            env.exchange(
                "a.test",
                b"GET /admin/secret HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
            )
        });
        assert!(answer.starts_with("HTTP/1.1 401 "), "{server:?}: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_is_an_ordinary_request_to_hypercorn() {
    let app = App::start(Server::Hypercorn);
    let env = Env::new();
    let _gw = env.start(&config(&env, &app));
    // What the review sent: hypercorn answered 101, and the client then spoke HTTP/2 to
    // it past the gateway's routes.
    let request = "GET / HTTP/1.1\r\nHost: a.test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                   Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
    let answer = tokio::task::block_in_place(|| {
        let mut s = env.tls_connect("a.test");
        s.write_all(request.as_bytes()).expect("write");
        let mut out = Vec::new();
        let mut buf = [0u8; 16 << 10];
        // Until the JSON body is whole (the connection stays open for the next request).
        while !out.ends_with(b"}") {
            match s.read(&mut buf) {
                Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    });
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let seen: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    assert_eq!(seen["route"], "public", "{seen}");
    assert_eq!(seen["http_version"], "1.1", "{seen}");
    let names: Vec<&str> = seen["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .filter_map(|h| h[0].as_str())
        .collect();
    for gone in ["upgrade", "http2-settings", "connection"] {
        assert!(
            !names.contains(&gone),
            "{gone} reached hypercorn: {names:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_handshake_reaches_uvicorn_without_hop_by_hop_fields() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = App::start(Server::Uvicorn);
    let env = Env::new();
    let _gw = env.start(&config(&env, &app));
    let url = format!("wss://a.test:{}/ws-headers", env.https);
    let mut req = url.into_client_request().expect("request");
    let h = req.headers_mut();
    h.insert("connection", "Upgrade, X-Secret".parse().expect("value"));
    for (name, value) in [
        ("x-secret", "1"),
        ("proxy-authorization", "Basic YTpi"),
        ("te", "trailers"),
        ("keep-alive", "timeout=5"),
        ("proxy-connection", "keep-alive"),
        ("x-scheme", "http"),
    ] {
        h.insert(name, value.parse().expect("value"));
    }
    let (mut ws, resp) = env.ws_connect_request(req).await.expect("websocket");
    assert_eq!(resp.status().as_u16(), 101);
    let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a message within 10 s")
        .expect("a message")
        .expect("no error");
    let seen: Value = serde_json::from_str(message.to_text().expect("text")).expect("json");
    let field = |name: &str| {
        seen["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .find(|h| h[0] == name)
            .and_then(|h| h[1].as_str())
            .map(str::to_string)
    };
    for gone in [
        "x-secret",
        "proxy-authorization",
        "te",
        "keep-alive",
        "proxy-connection",
        "x-scheme",
    ] {
        assert_eq!(field(gone), None, "{gone} reached uvicorn: {seen}");
    }
    assert_eq!(field("upgrade").as_deref(), Some("websocket"), "{seen}");
    assert_eq!(field("connection").as_deref(), Some("Upgrade"), "{seen}");
    assert!(field("sec-websocket-key").is_some(), "{seen}");
    assert_eq!(
        field("x-forwarded-proto").as_deref(),
        Some("https"),
        "{seen}"
    );
}
