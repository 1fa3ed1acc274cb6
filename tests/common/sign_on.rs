//! A real local sign-on service for forward-auth tests (axum on 127.0.0.1:0), answering
//! the way oauth2-proxy's `/oauth2/auth` and Authelia's `/api/verify` do, by the
//! `session` cookie the request carries:
//!
//! - `session=good`: 202 with `X-Auth-Request-User: alice` and
//!   `X-Auth-Request-Email: alice@example.com`;
//! - `session=banned`: 403, a `Set-Cookie` and a body;
//! - `session=moved`: 302 to `/elsewhere`;
//! - `session=slow`: 202 after 10 s;
//! - none: 401 with `WWW-Authenticate: Bearer` and the body `login first`.
//!
//! Every check request it receives is kept (method, headers, body length).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;

/// One check request as the service saw it.
#[derive(Debug, Clone)]
pub struct Check {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body_len: usize,
}

pub struct SignOn {
    pub addr: SocketAddr,
    checks: Arc<Mutex<Vec<Check>>>,
}

impl SignOn {
    pub async fn start() -> SignOn {
        let checks = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .fallback(any(check))
            .with_state(checks.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind sign-on");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SignOn { addr, checks }
    }

    pub fn checks(&self) -> Vec<Check> {
        self.checks.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

async fn check(State(checks): State<Arc<Mutex<Vec<Check>>>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body_len = to_bytes(body, 1 << 20).await.map_or(0, |b| b.len());
    if let Ok(mut c) = checks.lock() {
        c.push(Check {
            method: parts.method.to_string(),
            path: parts.uri.to_string(),
            headers: parts.headers.clone(),
            body_len,
        });
    }
    let cookie = parts
        .headers
        .get(header::COOKIE)
        .and_then(|c| c.to_str().ok())
        .unwrap_or_default();
    let session = cookie
        .split(';')
        .find_map(|c| c.trim().strip_prefix("session="))
        .unwrap_or_default();
    match session {
        "good" | "slow" => {
            if session == "slow" {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            Response::builder()
                .status(StatusCode::ACCEPTED)
                .header("x-auth-request-user", "alice")
                .header("x-auth-request-email", "alice@example.com")
                .header("x-not-copied", "1")
                .body(Body::empty())
                .unwrap_or_default()
        }
        "banned" => Response::builder()
            .status(StatusCode::FORBIDDEN)
            .header(header::SET_COOKIE, "flagged=1; Path=/")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("banned"))
            .unwrap_or_default(),
        "moved" => Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, "/elsewhere")
            .body(Body::empty())
            .unwrap_or_default(),
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "login first",
        )
            .into_response(),
    }
}
