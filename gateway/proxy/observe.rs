//! The `logging` phase: metrics, the JSON access log line and the warn line for upstream
//! failures, from what the request's context collected on the way.


use log::{debug, warn};
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

use super::context::{round_ms, RequestCtx};
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

/// Records one finished request.
pub fn finish(
    access_log: Option<&AccessLog>,
    session: &Session,
    error: Option<&Error>,
    ctx: &mut RequestCtx,
) {
    let status = session
        .response_written()
        .map_or(CLIENT_CLOSED, |r| r.status.as_u16());
    let route_name = ctx.route.as_ref().map_or("_unmatched", |r| r.name.as_str());
    if let Some(e) = error {
        match e.esource() {
            ErrorSource::Upstream => {
                let kind = upstream_kind(e);
                ctx.upstream_error = Some(kind);
                warn!(
                    "event=upstream_error route={route_name} status={status} kind={} error_type={}",
                    kind.as_str(),
                    e.etype().as_str()
                );
            }
            _ => debug!("event=request_error route={route_name} status={status} error={e}"),
        }
    }
    let request_bytes = session.as_downstream().body_bytes_read() as u64;
    let response_bytes = session.as_downstream().body_bytes_sent() as u64;
    let elapsed = ctx.timing.started.elapsed().as_secs_f64();
    let req = session.req_header();
    if let Some(m) = &ctx.metrics {
        m.request(&req.method, status, elapsed, request_bytes, response_bytes);
        if let Some(reason) = ctx.reason {
            m.rejected(reason);
        }
        if let Some(kind) = ctx.upstream_error {
            m.upstream_error(kind);
        }
    }
    let Some(log) = access_log else { return };
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
        route: route_name,
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
        duration_ms: round_ms(elapsed),
        upstream_connect_ms: ctx.timing.ms(ctx.timing.upstream_connected),
        upstream_header_ms: ctx.timing.ms(ctx.timing.upstream_header),
        upstream: ctx.replica().map(|r| &*r.addr_text),
        user_agent: header(http::header::USER_AGENT),
        user: ctx.user.as_deref().map(clip),
        reason: ctx.reason.map(Reject::as_str),
        upstream_error: ctx.upstream_error.map(UpstreamError::as_str),
    });
}
