//! Response compression (`compress`, on by default): text the app sends as it is (HTML,
//! CSS, JavaScript, JSON, SVG, plain text) goes to the client compressed with zstd,
//! brotli or gzip, whichever its `Accept-Encoding` prefers. Never a response the app
//! encoded itself, a part of one (`Range`, `206`), a stream of events, a WebSocket, a
//! HEAD, an HTTP/1.0 client, one that says `Cache-Control: no-transform`, or one under
//! [`MIN_LENGTH`]. Each piece of the body is sent as soon as it is compressed.

mod encoder;
mod module;
mod negotiate;

use http::header;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

pub use module::{Builder, Compress};
pub use negotiate::Coding;

/// Below this `Content-Length`, an answer fits a packet or two either way (Traefik's
/// default; nginx's `gzip_min_length` is 20, Caddy's 512).
pub const MIN_LENGTH: u64 = 1024;

/// The media types compressed: what browsers load as text, and JSON APIs.
/// `text/event-stream` is not among them, nor `application/x-ndjson` (token streams).
const TYPES: &[&str] = &[
    "text/html",
    "text/css",
    "text/plain",
    "text/javascript",
    "text/xml",
    "text/markdown",
    "text/csv",
    "application/javascript",
    "application/x-javascript",
    "application/json",
    "application/manifest+json",
    "application/ld+json",
    "application/problem+json",
    "application/xml",
    "application/xhtml+xml",
    "application/wasm",
    "image/svg+xml",
];

/// Called once the route is known: whether its answer may be compressed, and with what.
pub fn offer(session: &mut Session, route_compresses: bool) {
    if !route_compresses {
        return;
    }
    let req = session.req_header();
    let plain = req.method == http::Method::HEAD
        || req.version < http::Version::HTTP_11
        || req.headers.contains_key(header::RANGE);
    let coding = if plain {
        None
    } else {
        negotiate::choose(req.headers.get_all(header::ACCEPT_ENCODING))
    };
    if let Some(module) = session.downstream_modules_ctx.get_mut::<Compress>() {
        module.route = true;
        module.offer = coding;
    }
}

/// The coding used for the answer and its body's bytes before and after, if compressed.
pub fn used(session: &Session) -> Option<(Coding, u64, u64)> {
    session
        .downstream_modules_ctx
        .get::<Compress>()
        .and_then(|m| m.used)
}

/// A response of a compressible kind, not encoded or partial already, long enough, and
/// not marked `no-transform`.
fn worth_compressing(resp: &ResponseHeader) -> bool {
    let status = resp.status.as_u16();
    if matches!(status, 204 | 206 | 304) || resp.headers.contains_key(header::CONTENT_ENCODING) {
        return false;
    }
    let h = &resp.headers;
    let text = |name| h.get(name).and_then(|v| v.to_str().ok());
    if let Some(length) = text(header::CONTENT_LENGTH) {
        if length
            .trim()
            .parse::<u64>()
            .map_or(true, |n| n < MIN_LENGTH)
        {
            return false;
        }
    }
    let no_transform = h.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|d| d.trim().eq_ignore_ascii_case("no-transform"))
        })
    });
    let essence = text(header::CONTENT_TYPE)
        .map(|t| t.split(';').next().unwrap_or_default().trim())
        .unwrap_or_default();
    !no_transform && TYPES.iter().any(|t| essence.eq_ignore_ascii_case(t))
}
