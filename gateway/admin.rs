//! The metrics listener (`listen.metrics`, keep it on loopback): `GET /metrics` in the
//! Prometheus text format, `GET /healthz` (200 while serving), `POST /-/reload` (200
//! with a summary, 400 with the `FILE:LINE:COL: message` lines of `gateway check`).
//! Never on the public listeners.

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::config;
use crate::metrics::Metrics;
use crate::redirect::plain;
use crate::reload::Reloader;

pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub reloader: Arc<Reloader>,
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.uri.path() == "/-/reload" {
            if req.method != Method::POST {
                return plain(StatusCode::METHOD_NOT_ALLOWED, b"Use POST.\n".to_vec());
            }
            let reloader = self.reloader.clone();
            return match tokio::task::spawn_blocking(move || reloader.reload()).await {
                Ok(Ok(summary)) => plain(StatusCode::OK, format!("reloaded: {summary}\n").into()),
                Ok(Err(errors)) => plain(StatusCode::BAD_REQUEST, config::render(&errors).into()),
                Err(_) => plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    b"reload failed\n".to_vec(),
                ),
            };
        }
        if req.method != Method::GET && req.method != Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, b"Use GET.\n".to_vec());
        }
        match req.uri.path() {
            "/metrics" => {
                let mut resp = plain(StatusCode::OK, self.metrics.encode());
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
            "/healthz" => plain(StatusCode::OK, b"ok\n".to_vec()),
            _ => plain(
                StatusCode::NOT_FOUND,
                b"Not found: try /metrics or /healthz.\n".to_vec(),
            ),
        }
    }
}
