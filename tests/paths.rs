//! Issue 13 against the real binary: several apps on one host by path prefix. Longest
//! prefix by whole segments, the slash redirect, `X-Forwarded-Prefix`, `strip_prefix` with
//! `Location` and `Set-Cookie` put back under the prefix, per-route keys and labels, and
//! paths that decode into another route refused.

mod common;

use std::time::{Duration, Instant};

use common::{client, sample, Env, Upstream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;

const AI: &str = "ai.apps.test";
const SOLO: &str = "solo.apps.test";
const GUARD: &str = "guard.apps.test";

struct Apps {
    voice: Upstream,
    image: Upstream,
    rest: Upstream,
}

/// ai: /voice/ (stripped), /image/ (named, 1K bodies), the rest; solo: /app/ only;
/// guard: /admin/ for 10.0.0.0/8 only, the rest public, one app behind both.
async fn start(env: &Env) -> (Apps, common::Gateway) {
    let apps = Apps {
        voice: Upstream::start("voice").await,
        image: Upstream::start("image").await,
        rest: Upstream::start("rest").await,
    };
    let routes = format!(
        "access_log: access.log\nroutes:
  - host: {AI}
    path: /voice/
    upstream: {voice}
    strip_prefix: true
  - host: {AI}
    path: /image
    name: image
    upstream: {image}
    max_body: 1K
  - host: {AI}
    upstream: {rest}
  - host: {SOLO}
    path: /app/
    upstream: {rest}
  - host: {GUARD}
    path: /admin/
    upstream: {rest}
    allow: [10.0.0.0/8]
  - host: {GUARD}
    upstream: {rest}
",
        voice = apps.voice.addr,
        image = apps.image.addr,
        rest = apps.rest.addr,
    );
    let gw = env.start(&format!("{}{routes}", env.listen_and_tls()));
    (apps, gw)
}

/// GET `path` on `host`: (status, headers, the app's echo or null).
async fn get(
    c: &reqwest::Client,
    env: &Env,
    host: &str,
    path: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let url = format!("https://{host}:{}{path}", env.https);
    let resp = c
        .get(&url)
        .header("x-forwarded-prefix", "/forged")
        .send()
        .await
        .expect(&url);
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longest_prefix_by_segments_with_the_prefix_named_or_stripped() {
    let env = Env::new();
    let (apps, _gw) = start(&env).await;
    for http2 in [false, true] {
        let c = client(&env, &[AI, SOLO, GUARD], http2);
        // (host, path) → (app, the path it saw, X-Forwarded-Prefix)
        let cases = [
            (
                AI,
                "/voice/x/y?q=/image/",
                "voice",
                "/x/y?q=/image/",
                "/voice",
            ),
            (AI, "/voice/", "voice", "/", "/voice"),
            (AI, "/image/a%2Fb", "image", "/image/a%2Fb", "/image"),
            (AI, "/voicemail", "rest", "/voicemail", ""),
            (AI, "/Voice/x", "rest", "/Voice/x", ""),
            (AI, "/x?/voice/", "rest", "/x?/voice/", ""),
            (AI, "/", "rest", "/", ""),
            (SOLO, "/app/x", "rest", "/app/x", "/app"),
            (GUARD, "/public/x", "rest", "/public/x", ""),
        ];
        for (host, path, app, seen, prefix) in cases {
            let (status, _, echo) = get(&c, &env, host, path).await;
            assert_eq!(status, 200, "{host}{path}");
            assert_eq!(echo["upstream"], app, "{host}{path}");
            assert_eq!(echo["uri"], seen, "{host}{path}");
            let forwarded = echo["headers"]["x-forwarded-prefix"].as_str();
            assert_eq!(
                forwarded.unwrap_or(""),
                prefix,
                "{host}{path}: no forged value"
            );
        }
        // The prefix without its slash: 301 to it, query kept, nothing forwarded.
        let before = apps.voice.hits() + apps.image.hits() + apps.rest.hits();
        for (path, location) in [("/voice?a=1&b=2", "/voice/?a=1&b=2"), ("/image", "/image/")] {
            let (status, h, _) = get(&c, &env, AI, path).await;
            assert_eq!((status, h["location"].to_str().ok()), (301, Some(location)));
        }
        // Not covered by any route of the host: 404, no fall-through to another host.
        assert_eq!(get(&c, &env, SOLO, "/other").await.0, 404);
        assert_eq!(get(&c, &env, SOLO, "/").await.0, 404);
        // The guarded part of the app: refused, however the path is written.
        assert_eq!(get(&c, &env, GUARD, "/admin/x").await.0, 403);
        assert_eq!(get(&c, &env, GUARD, "/%61dmin/x").await.0, 400);
        assert_eq!(get(&c, &env, GUARD, "/admin%2Fx").await.0, 400);
        let after = apps.voice.hits() + apps.image.hits() + apps.rest.hits();
        assert_eq!(after, before, "redirects and refusals reached no app");
    }
    // Dot segments, which HTTP clients resolve before sending: written by hand.
    let raw = |path: &str| {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {GUARD}\r\nConnection: close\r\n\r\n");
        tokio::task::block_in_place(|| env.exchange(GUARD, request.as_bytes())).0
    };
    assert!(raw("/public/../admin/x").starts_with("HTTP/1.1 400"));
    assert!(raw("/public/%2e%2e/admin/x").starts_with("HTTP/1.1 400"));
    let served = raw("/public/../y");
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    assert!(
        served.contains("\"uri\":\"/public/../y\""),
        "forwarded as received"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripped_apps_get_their_prefix_back_on_redirects_and_cookies() {
    let env = Env::new();
    let (apps, _gw) = start(&env).await;
    let c = client(&env, &[AI], false);
    let origin = format!("https://{AI}:{}", env.https);
    let app_url = format!("http://{}", apps.voice.addr);
    let enc = |s: &str| {
        s.replace('%', "%25")
            .replace(';', "%3B")
            .replace(' ', "%20")
    };
    // (Location the app sends, Location the client gets)
    let cases = [
        (
            "/login?next=/x".to_string(),
            "/voice/login?next=/x".to_string(),
        ),
        ("/voice/ok".to_string(), "/voice/ok".to_string()),
        (format!("{app_url}/x"), "/voice/x".to_string()),
        (format!("{origin}/x"), format!("{origin}/voice/x")),
        (
            "https://sso.example/login".to_string(),
            "https://sso.example/login".to_string(),
        ),
        ("relative/x".to_string(), "relative/x".to_string()),
    ];
    for (sent, expected) in cases {
        let path = format!(
            "/voice/echo?location={}&cookie={}&cookie={}",
            enc(&sent),
            enc("sid=1; Path=/; HttpOnly"),
            enc("pref=2; Path=/voice/")
        );
        let (status, h, _) = get(&c, &env, AI, &path).await;
        assert_eq!(status, 302);
        assert_eq!(h["location"], expected.as_str(), "{sent}");
        let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(
            cookies,
            ["sid=1; Path=/voice/; HttpOnly", "pref=2; Path=/voice/"]
        );
    }
    // Without strip_prefix the app knows its prefix: its answers pass unchanged.
    let path = format!(
        "/image/echo?location=/login&cookie={}",
        enc("sid=1; Path=/")
    );
    let (status, h, _) = get(&c, &env, AI, &path).await;
    assert_eq!(status, 302);
    assert_eq!(h["location"], "/login");
    assert_eq!(h["set-cookie"], "sid=1; Path=/");

    // A WebSocket under the prefix (Streamlit's /_stcore/stream, Gradio's queue).
    let (mut ws, _) = env.ws_connect(AI, "/voice/ws").await.expect("upgrade");
    ws.send(tokio_tungstenite::tungstenite::Message::Text("hi".into()))
        .await
        .expect("send");
    let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a reply within 10 s");
    assert_eq!(
        reply.expect("open").expect("frame").to_text().ok(),
        Some("echo: hi")
    );
    assert_eq!(
        apps.voice.hits_on("/ws"),
        1,
        "upgraded on the stripped path"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_path_route_has_its_own_limits_and_labels() {
    let env = Env::new();
    let (apps, _gw) = start(&env).await;
    let c = client(&env, &[AI], false);
    let body = vec![b'x'; 2048];
    let post = |path: &str| {
        c.post(format!("https://{AI}:{}{path}", env.https))
            .body(body.clone())
            .send()
    };
    assert_eq!(post("/image/upload").await.expect("post").status(), 413);
    assert_eq!(post("/upload").await.expect("post").status(), 200);
    assert_eq!(apps.image.hits(), 0);
    assert_eq!(get(&c, &env, AI, "/voice/x").await.0, 200);

    let series = [
        r#"gateway_requests_total{code="413",method="POST",route="image"}"#,
        r#"gateway_requests_total{code="200",method="POST",route="ai.apps.test"}"#,
        r#"gateway_requests_total{code="200",method="GET",route="ai.apps.test/voice/"}"#,
    ];
    env.metrics_until("each path route counted under its name", |text| {
        series.iter().all(|s| sample(text, s) == Some(1.0))
    })
    .await;
    let log = env.path("access.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    let routes: Vec<String> = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let entries: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if entries.len() >= 3 {
            break entries.iter().map(|e| e["route"].to_string()).collect();
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        routes,
        [
            r#""image""#,
            r#""ai.apps.test""#,
            r#""ai.apps.test/voice/""#
        ]
    );
}
