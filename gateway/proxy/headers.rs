//! The fields the gateway sets on a request on its way to the app, and on the app's
//! answer on its way back. Pingora's phases and the WebSocket tunnel (`upgrade`) both
//! call these, so a tunnelled request is dressed as any other.

use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::Result;

use super::context::GaugeGuard;
use super::context::RequestCtx;
use super::{access, forwarded, limits, upstream};

/// The upstream request: `X-Forwarded-*` and the request id, the login and sign-on
/// fields, the route's prefix stripped, and its `upstream_host` as `Host` (the client's
/// stays in `X-Forwarded-Host`; Pingora then makes the target's authority agree).
pub fn upstream_request(session: &Session, up: &mut RequestHeader, ctx: &RequestCtx) -> Result<()> {
    let peer = forwarded::peer_ip(session);
    let host = forwarded::client_host_value(session.req_header());
    let id = ctx.request_id.as_ref();
    forwarded::apply(up, peer, ctx.client, ctx.https, host, id)?;
    if let Some(route) = &ctx.route {
        access::upstream_fields(up, route, &ctx.auth_fields)?;
        let vouched = match (&ctx.key, &ctx.user) {
            (Some(key), _) => access::Vouched::Key(&key.identity),
            (None, Some(user)) => access::Vouched::User(user),
            (None, None) => access::Vouched::Nobody,
        };
        access::identity(up, route, vouched)?;
        if let Some(prefix) = &route.prefix {
            prefix.upstream_request(up)?;
        }
        if let Some(host) = &route.upstream_host {
            up.insert_header(http::header::HOST, host.clone())?;
        }
    }
    Ok(())
}

/// The app's answer: the route's security headers where the app set none, the
/// `RateLimit` fields, the prefix put back into redirects and cookies, the sticky
/// cookie and the request id. A `101` counts in the WebSocket gauge while it lives.
pub fn response(session: &Session, resp: &mut ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
    if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
        if let Some(m) = &ctx.metrics {
            ctx._websocket = Some(GaugeGuard::new(&m.websockets));
        }
    }
    if let Some(route) = &ctx.route {
        for (name, value) in &route.headers {
            if !resp.headers.contains_key(name) {
                resp.insert_header(name, value.clone())?;
            }
        }
        limits::response_headers(resp, route, ctx)?;
        if let Some(prefix) = &route.prefix {
            prefix.response(resp, forwarded::client_host(session.req_header()))?;
        }
        upstream::response(resp, ctx)?;
    }
    if let Some(id) = &ctx.request_id {
        resp.insert_header("x-request-id", id.clone())?;
    }
    Ok(())
}
