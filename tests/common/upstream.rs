//! A real local upstream (axum on 127.0.0.1:0) mimicking what AI apps do: echo the
//! request, stream server-sent events, echo WebSocket messages, sink large uploads.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
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
    /// Requests that reached any handler.
    pub hits: AtomicUsize,
    pub uploads: Mutex<Vec<Upload>>,
}

pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
}

impl Upstream {
    /// Starts an upstream that names itself `name` in `/echo` answers.
    pub async fn start(name: &str) -> Upstream {
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
            .fallback(any(echo))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Upstream { addr, seen }
    }

    pub fn hits(&self) -> usize {
        self.seen.hits.load(Ordering::SeqCst)
    }

    pub fn uploads(&self) -> Vec<Upload> {
        self.seen
            .uploads
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default()
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

async fn echo(State(seen): State<Arc<Seen>>, req: Request) -> Json<Value> {
    seen.hits.fetch_add(1, Ordering::SeqCst);
    Json(json!({
        "upstream": seen.name,
        "method": req.method().as_str(),
        "uri": req.uri().to_string(),
        "version": format!("{:?}", req.version()),
        "headers": headers_json(req.headers()),
    }))
}

/// Five events, 300 ms apart, like a token stream from a generation queue.
async fn sse(State(seen): State<Arc<Seen>>) -> Response {
    seen.hits.fetch_add(1, Ordering::SeqCst);
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

async fn ws(State(seen): State<Arc<Seen>>, upgrade: WebSocketUpgrade) -> Response {
    seen.hits.fetch_add(1, Ordering::SeqCst);
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
    seen.hits.fetch_add(1, Ordering::SeqCst);
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

async fn slow(
    State(seen): State<Arc<Seen>>,
    Query(q): Query<std::collections::HashMap<String, u64>>,
) -> &'static str {
    seen.hits.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(q.get("ms").copied().unwrap_or(1000))).await;
    "done"
}
