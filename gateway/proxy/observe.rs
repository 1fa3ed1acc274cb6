//! The `logging` phase: metrics, the JSON access log line and the warn line for upstream
//! failures, from what the request's context collected on the way.

use log::{debug, warn};
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

use super::context::RequestCtx;
use crate::access_log::{clip, AccessLog, Entry};
use crate::metrics::{Reject, UpstreamError};

/// Status recorded when the client left before any response (nginx's convention).
pub const CLIENT_CLOSED: u16 = 499;

/// The kind label of an upstream failure.
pub fn upstream_kind(e: &Error) -> UpstreamError {
    use ErrorType::*;
    match e.etype() {
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => {
            UpstreamError::Timeout
        }
        ConnectRefused | ConnectNoRoute | ConnectError | BindError | SocketError
        | ConnectProxyFailure => UpstreamError::Connect,
        ConnectionClosed | ReadError | WriteError => UpstreamError::Reset,
        InvalidHTTPHeader | H1Error | H2Error | H2Downgrade | InvalidH2 => UpstreamError::Protocol,
        _ => UpstreamError::Other,
    }
}

/// Records one finished request: the error's log line, the metrics, the access log.
pub fn finish(
    access_log: Option<&AccessLog>,
    session: &Session,
    error: Option<&Error>,
    ctx: &mut RequestCtx,
) {
    let status = session
        .response_written()
        .map_or(CLIENT_CLOSED, |r| r.status.as_u16());
    if let Some(e) = error {
        note_error(e, ctx, status);
    }
    let downstream = session.as_downstream();
    let bytes = (
        downstream.body_bytes_read() as u64,
        downstream.body_bytes_sent() as u64,
    );
    let elapsed = ctx.timing.started.elapsed();
    if let Some(m) = &ctx.metrics {
        let method = &session.req_header().method;
        m.request(method, status, elapsed.as_secs_f64(), bytes.0, bytes.1);
        if let Some(reason) = ctx.reason {
            m.rejected(reason);
        }
        if let Some(kind) = ctx.upstream_error {
            m.upstream_error(kind);
        }
    }
    if let Some(key) = &ctx.key {
        let keys = ctx
            .route
            .as_ref()
            .and_then(|r| r.access.as_ref()?.keys.as_ref());
        if let Some(keys) = keys {
            keys.count(key, status);
        }
    }
    if let Some(log) = access_log {
        write_line(log, session, ctx, status, elapsed, bytes);
    }
}

fn route_name(ctx: &RequestCtx) -> &str {
    ctx.route.as_ref().map_or("_unmatched", |r| r.name.as_str())
}

/// An upstream failure is logged at warn (and its kind kept for the metrics and the
/// access log); a client's, at debug.
fn note_error(e: &Error, ctx: &mut RequestCtx, status: u16) {
    match e.esource() {
        ErrorSource::Upstream => {
            let kind = upstream_kind(e);
            ctx.upstream_error = Some(kind);
            warn!(
                "event=upstream_error route={} status={status} kind={} error_type={}",
                route_name(ctx),
                kind.as_str(),
                e.etype().as_str()
            );
        }
        _ => debug!(
            "event=request_error route={} status={status} error={e}",
            route_name(ctx)
        ),
    }
}

/// The request's access log line. `bytes`: the body bytes read and sent.
fn write_line(
    log: &AccessLog,
    session: &Session,
    ctx: &RequestCtx,
    status: u16,
    elapsed: std::time::Duration,
    (request_bytes, response_bytes): (u64, u64),
) {
    let req = session.req_header();
    let header = |name: http::header::HeaderName| {
        req.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(clip)
            .unwrap_or_default()
    };
    let host = super::forwarded::client_host(req)
        .and_then(|h| std::str::from_utf8(h).ok())
        .map(clip)
        .unwrap_or_default();
    let request_id = ctx
        .request_id
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    log.write(&Entry {
        time: std::time::SystemTime::now(),
        request_id,
        client_ip: ctx.client,
        route: route_name(ctx),
        host,
        method: req.method.as_str(),
        path: clip(req.uri.path()),
        protocol: if session.as_downstream().is_http2() {
            "HTTP/2"
        } else {
            "HTTP/1.1"
        },
        status,
        request_bytes,
        response_bytes,
        duration: elapsed,
        upstream_connect: ctx.timing.since_start(ctx.timing.upstream_connected),
        upstream_header: ctx.timing.since_start(ctx.timing.upstream_header),
        upstream: ctx.replica().map(|r| &*r.addr_text),
        user_agent: header(http::header::USER_AGENT),
        user: ctx.user.as_deref().map(clip),
        reason: ctx.reason.map(Reject::as_str),
        upstream_error: ctx.upstream_error.map(UpstreamError::as_str),
    });
}
