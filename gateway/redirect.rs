//! The plain-HTTP listener in `http_mode: redirect`: every request for a routed host gets
//! `301` to the same path on HTTPS (`https://HOST[:PORT]/path?query`, port omitted when
//! 443); anything else 404. ACME HTTP-01 challenges are answered first, for any host
//! (`challenge`, also used by the proxy in `http_mode: proxy`): those of the gateway's
//! own orders (`tls: acme`), then, with `acme_webroot` set, files from it, so certbot's
//! `--webroot` mode works with the gateway on port 80.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::deadline;
use crate::router::strip_port;
use crate::state::{Shared, Snapshot};

const ACME_PREFIX: &str = "/.well-known/acme-challenge/";
/// Challenge files are tokens of a few dozen bytes; refuse to serve anything large.
const ACME_MAX_BYTES: u64 = 4096;

pub struct Redirect {
    pub shared: Arc<Shared>,
}

#[async_trait]
impl ServeHttp for Redirect {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // The head deadline's clock: stopped now, restarted by the next request's bytes.
        deadline::head_done(session.stream());
        deadline::request_done(session.stream());
        let snapshot = self.shared.snapshot.load_full();
        let req = session.req_header();
        if let Some(answer) = challenge(&self.shared, &snapshot, req.uri.path()).await {
            return answer;
        }
        let host = req
            .headers
            .get(header::HOST)
            .map(|h| h.as_bytes())
            .unwrap_or_default();
        if snapshot.routes.lookup(host).is_none() {
            return plain(
                StatusCode::NOT_FOUND,
                b"No app is served at this host.\n".to_vec(),
            );
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
            .unwrap_or_else(|_| plain(StatusCode::BAD_REQUEST, b"Bad request.\n".to_vec()))
    }
}

/// The answer to an ACME HTTP-01 challenge at `path`: the gateway's own orders' answer,
/// else a file under `acme.storage` or `acme_webroot`, else 404 when either is set.
/// `None` when `path` is no challenge or nothing serves challenges.
pub async fn challenge(
    shared: &Shared,
    snapshot: &Snapshot,
    path: &str,
) -> Option<Response<Vec<u8>>> {
    let token = path.strip_prefix(ACME_PREFIX)?;
    if let Some(answer) = shared.challenges.answer(token) {
        return Some(plain(StatusCode::OK, answer.into_bytes()));
    }
    let roots = [&snapshot.acme_challenges, &snapshot.acme_webroot];
    for root in roots.into_iter().flatten() {
        if let Some(answer) = acme_challenge(root, token).await {
            return Some(answer);
        }
    }
    // Challenge paths are answered here whenever a root is configured.
    let served = snapshot.acme_challenges.is_some() || snapshot.acme_webroot.is_some();
    served.then(not_found)
}

/// Serves `ROOT/.well-known/acme-challenge/TOKEN`; tokens are base64url, nothing else.
/// `None` when there is no such file.
async fn acme_challenge(root: &Path, token: &str) -> Option<Response<Vec<u8>>> {
    let valid = !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return None;
    }
    let path = root.join(".well-known/acme-challenge").join(token);
    match tokio::fs::metadata(&path).await {
        Ok(meta) if meta.is_file() && meta.len() <= ACME_MAX_BYTES => {
            let body = tokio::fs::read(&path).await.ok()?;
            Some(plain(StatusCode::OK, body))
        }
        _ => None,
    }
}

fn not_found() -> Response<Vec<u8>> {
    plain(StatusCode::NOT_FOUND, b"Not found.\n".to_vec())
}

/// A small `text/plain` response.
pub(crate) fn plain(status: StatusCode, body: Vec<u8>) -> Response<Vec<u8>> {
    let len = body.len();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, len.into());
    resp
}
