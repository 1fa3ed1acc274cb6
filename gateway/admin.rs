//! The metrics listener (`listen.metrics`, keep it on loopback): `GET /metrics` in the
//! Prometheus text format, `GET /healthz` (200 while serving). Never on the public
//! listeners.

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::Metrics;
use crate::redirect::plain;

pub struct Admin {
    pub metrics: Arc<Metrics>,
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
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
