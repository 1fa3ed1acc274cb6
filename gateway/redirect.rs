//! The plain-HTTP listener: every request for a routed host gets `301` to the same path
//! on HTTPS (`https://HOST[:PORT]/path?query`, port omitted when 443); anything else 404.

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::router::strip_port;
use crate::state::Shared;

pub struct Redirect {
    pub shared: Arc<Shared>,
}

#[async_trait]
impl ServeHttp for Redirect {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let snapshot = self.shared.snapshot.load();
        let req = session.req_header();
        let host = req.headers.get(header::HOST).map(|h| h.as_bytes()).unwrap_or_default();
        if snapshot.routes.lookup(host).is_none() {
            return plain(StatusCode::NOT_FOUND, "No app is served at this host.\n");
        }
        // lookup() accepted it, so the host is DNS characters only.
        let name = String::from_utf8_lossy(strip_port(host));
        let name = name.trim_end_matches('.');
        let path = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let location = match snapshot.https_port {
            443 => format!("https://{name}{path}"),
            port => format!("https://{name}:{port}{path}"),
        };
        Response::builder()
            .status(StatusCode::MOVED_PERMANENTLY)
            .header(header::LOCATION, location)
            .header(header::CONTENT_LENGTH, 0)
            .body(Vec::new())
            .unwrap_or_else(|_| plain(StatusCode::BAD_REQUEST, "Bad request.\n"))
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Vec<u8>> {
    let mut resp = Response::new(text.as_bytes().to_vec());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    resp.headers_mut().insert(header::CONTENT_LENGTH, text.len().into());
    resp
}
