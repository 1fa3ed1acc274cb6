//! A real local upstream (axum on 127.0.0.1:0) mimicking what AI apps do: echo the
//! request, stream server-sent events, echo WebSocket messages, sink large uploads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// What the upload sink saw of one request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    pub bytes: u64,
    pub sha256: String,
    /// False when the body stream broke off (the proxy aborted it).
    pub complete: bool,
}

#[derive(Default)]
pub struct Seen {
    pub name: String,
    /// Requests that reached the app (counted as they arrive, before their handler runs).
    pub hits: AtomicUsize,
    /// The same, by path: a test waits for *its* request to arrive, not for any.
    by_path: Mutex<HashMap<String, usize>>,
    pub uploads: Mutex<Vec<Upload>>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
}

impl Upstream {
    /// Starts an upstream on 127.0.0.1 that names itself `name` in `/echo` answers.
    pub async fn start(name: &str) -> Upstream {
        Upstream::start_on(name, std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    /// The same, listening on `ip` (`0.0.0.0`: every interface, as an exposed app does).
    pub async fn start_on(name: &str, ip: std::net::IpAddr) -> Upstream {
        let seen = Arc::new(Seen {
            name: name.to_string(),
            ..Seen::default()
        });
        let app = Router::new()
            .route("/echo", any(echo))
            .route("/sse", get(sse))
            .route("/ws", get(ws))
            .route("/upload", post(upload))
            .route("/slow", get(slow))
            .route("/api/tags", get(local_only))
            .route("/comfy/ws", get(comfy_ws))
            .route("/comfy/prompt", post(comfy_prompt))
            .fallback(any(echo))
            .layer(middleware::from_fn_with_state(seen.clone(), count))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .expect("bind upstream");
        let port = listener.local_addr().expect("upstream addr").port();
        // Reached through loopback even when listening on every interface.
        let addr = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), port);
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Upstream { addr, seen }
    }

    pub fn hits(&self) -> usize {
        self.seen.hits.load(Ordering::SeqCst)
    }

    /// Requests for `path` that have reached the app so far.
    pub fn hits_on(&self, path: &str) -> usize {
        self.seen
            .by_path
            .lock()
            .map_or(0, |m| m.get(path).copied().unwrap_or(0))
    }

    /// Waits until `n` requests for `path` have reached the app; panics after 20 s.
    pub async fn wait_for(&self, path: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.hits_on(path) < n {
            assert!(
                Instant::now() < deadline,
                "{}: {path} reached {} times, expected {n}",
                self.seen.name,
                self.hits_on(path)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn uploads(&self) -> Vec<Upload> {
        self.seen
            .uploads
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default()
    }
}

/// Counts every request as it arrives, before its handler runs.
async fn count(State(seen): State<Arc<Seen>>, req: Request, next: Next) -> Response {
    seen.hits.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut by_path) = seen.by_path.lock() {
        *by_path.entry(req.uri().path().to_string()).or_default() += 1;
    }
    next.run(req).await
}

/// Ollama's guard of its loopback listener (`allowedHostsMiddleware`): 403 unless the
/// `Host` names this machine (`localhost`, a loopback or private address, `*.localhost`,
/// `*.local`, `*.internal`), which no public name does. Answers with the `Host` it read.
async fn local_only(headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host.as_str(),
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let local = match name.parse::<std::net::IpAddr>() {
        Ok(ip) => {
            ip.is_loopback()
                || ip.is_unspecified()
                || matches!(ip, std::net::IpAddr::V4(v4) if v4.is_private())
        }
        Err(_) => {
            name.is_empty()
                || name == "localhost"
                || [".localhost", ".local", ".internal"]
                    .iter()
                    .any(|tld| name.ends_with(tld))
        }
    };
    match local {
        true => Json(json!({ "models": [], "host": host })).into_response(),
        false => StatusCode::FORBIDDEN.into_response(),
    }
}

fn headers_json(headers: &HeaderMap) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in headers {
        let v = v.to_str().unwrap_or("<binary>").to_string();
        map.entry(k.as_str())
            .and_modify(|e| {
                if let Value::String(s) = e {
                    s.push_str(", ");
                    s.push_str(&v);
                }
            })
            .or_insert(Value::String(v));
    }
    Value::Object(map)
}

/// The request as the app saw it, as JSON. `?location=URL` makes it a `302` to URL and
/// each `cookie=VALUE` adds a `Set-Cookie` (values percent-encoded), as an app's login
/// redirect does.
async fn echo(State(seen): State<Arc<Seen>>, req: Request) -> Response {
    let body = Json(json!({
        "upstream": seen.name,
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "version": format!("{:?}", req.version()),
        "headers": headers_json(req.headers()),
    }));
    let mut resp = body.into_response();
    for pair in req.uri().query().unwrap_or_default().split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        let Ok(value) = header::HeaderValue::from_str(&value) else {
            continue;
        };
        match key {
            "location" => {
                *resp.status_mut() = StatusCode::FOUND;
                resp.headers_mut().insert(header::LOCATION, value);
            }
            "cookie" => drop(resp.headers_mut().append(header::SET_COOKIE, value)),
            _ => {}
        }
    }
    resp
}

/// ComfyUI's guard against DNS rebinding (server.py, its origin-only middleware): when the
/// `Host` it is sent names a loopback host, a request whose `Origin` names another host
/// (ports compared when both carry one) gets 403. Any other `Host` is not checked.
fn comfy_refuses(headers: &HeaderMap) -> bool {
    let field = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    let (Some(host), Some(origin)) = (field(header::HOST), field(header::ORIGIN)) else {
        return false;
    };
    let Some(origin) = origin
        .parse::<axum::http::Uri>()
        .ok()
        .and_then(|u| u.authority().cloned())
    else {
        return false;
    };
    let Ok(host) = host.parse::<axum::http::uri::Authority>() else {
        return false;
    };
    let name = host.host().trim_start_matches('[').trim_end_matches(']');
    let loopback = name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let (mine, theirs) = match (host.port_u16(), origin.port_u16()) {
        (Some(_), Some(_)) => (host.as_str(), origin.as_str()),
        _ => (host.host(), origin.host()),
    };
    loopback && mine != theirs
}

async fn comfy_ws(headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    match comfy_refuses(&headers) {
        true => StatusCode::FORBIDDEN.into_response(),
        false => upgrade.on_upgrade(echo_socket),
    }
}

async fn comfy_prompt(headers: HeaderMap) -> Response {
    match comfy_refuses(&headers) {
        true => StatusCode::FORBIDDEN.into_response(),
        false => Json(json!({ "prompt_id": "1", "number": 0 })).into_response(),
    }
}

/// Five events, 300 ms apart, like a token stream from a generation queue.
async fn sse() -> Response {
    let events = futures_util::stream::unfold(0u32, |i| async move {
        if i >= 5 {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let chunk = Bytes::from(format!("data: event {i}\n\n"));
        Some((Ok::<_, std::io::Error>(chunk), i + 1))
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(events))
        .unwrap_or_default()
}

async fn ws(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(echo_socket)
}

async fn echo_socket(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(t) => Message::Text(format!("echo: {}", t.as_str()).into()),
            Message::Binary(b) => Message::Binary(b),
            Message::Close(_) => break,
            _ => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

/// Streams the body through SHA-256 without keeping it; records whether it ended cleanly.
async fn upload(State(seen): State<Arc<Seen>>, body: Body) -> Response {
    let mut stream = body.into_data_stream();
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut complete = true;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(data) => {
                bytes += data.len() as u64;
                hasher.update(&data);
            }
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    let sha256 = format!("{:x}", hasher.finalize());
    let result = Upload {
        bytes,
        sha256: sha256.clone(),
        complete,
    };
    if let Ok(mut uploads) = seen.uploads.lock() {
        uploads.push(result);
    }
    if !complete {
        return (StatusCode::BAD_REQUEST, "body broke off").into_response();
    }
    Json(json!({ "bytes": bytes, "sha256": sha256 })).into_response()
}

async fn slow(Query(q): Query<std::collections::HashMap<String, u64>>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(q.get("ms").copied().unwrap_or(1000))).await;
    "done"
}
