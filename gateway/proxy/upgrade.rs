//! HTTP/1.1 upgrades (WebSocket: Streamlit's `/_stcore/stream`, Gradio's queue) proxied by
//! the gateway itself instead of Pingora's proxy loop.
//!
//! NOTE: Pingora 0.9.1 can tear an upgraded connection down the moment it is made
//! (cloudflare/pingora#946, fixes open as #947 and #1016): when the app's `101` is read
//! before the end of the upgrade request's own empty body, that end is taken for the end
//! of the tunnel, and the client gets the `101` and then EOF. On a loaded machine this
//! happened to one WebSocket in three in the suite. Until a release has the fix, the
//! gateway sends the upgrade request, relays the answer and then copies bytes both ways
//! here, with the same phases as any request: `upstream_request_filter` (forwarded
//! fields, logins, prefix) on the way in, `response_filter` (security headers, prefix,
//! the WebSocket gauge) on the way out, and the route's timeouts.

use pingora::protocols::http::client::HttpSession;
use pingora::proxy::{ProxyHttp, Session};
use pingora::{Error, ErrorType, Result};

use super::{upstream, Gateway, RequestCtx};

/// Whether the request asks for an HTTP/1.1 upgrade (HTTP/2 has none).
pub fn wanted(session: &Session) -> bool {
    session.as_downstream().is_upgrade_req()
}

/// Proxies an upgrade request to the route's app: its answer goes back as it is, and after
/// a `101` the two connections are joined until either side closes. Errors before
/// anything was sent to the client become the usual 502/504 page (`fail_to_proxy`).
pub async fn tunnel(gw: &Gateway, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
    // A failed connect is retried once on another replica, as for any request.
    let (app, peer) = loop {
        let peer = upstream::peer(ctx)?;
        match gw.shared.connector().get_http_session(&*peer).await {
            Ok((app, _)) => break (app, peer),
            Err(e) => {
                let e = upstream::connect_failed(ctx, true, e.into_up());
                if !e.retry() {
                    return Err(e);
                }
            }
        }
    };
    let HttpSession::H1(mut app) = app else {
        return Error::e_explain(
            ErrorType::InternalError,
            "upgrade over a non-HTTP/1.1 upstream",
        );
    };
    app.read_timeout = peer.options.read_timeout;
    app.write_timeout = peer.options.write_timeout;
    upstream::connected(ctx);
    ctx.timing.upstream_connected = Some(std::time::Instant::now());

    let mut req = session.req_header().clone();
    gw.upstream_request_filter(session, &mut req, ctx).await?;
    app.write_request_header(Box::new(req))
        .await
        .map_err(|e| e.into_up())?;
    app.read_response().await.map_err(|e| e.into_up())?;
    let mut resp = match app.resp_header() {
        Some(resp) => resp.clone(),
        None => return Error::e_explain(ErrorType::InvalidHTTPHeader, "no response header"),
    };
    gw.upstream_response_filter(session, &mut resp, ctx).await?;
    gw.response_filter(session, &mut resp, ctx).await?;
    // The connection ends with the tunnel or with this answer.
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), false).await?;

    if !app.was_upgraded() {
        // The app refused the upgrade (e.g. 400 or 403): its answer, as it is.
        while let Some(chunk) = app.read_body_bytes().await.map_err(|e| e.into_up())? {
            session.write_response_body(Some(chunk), false).await?;
        }
        return session.write_response_body(None, true).await;
    }
    app.maybe_upgrade_body_writer();
    // Either side may be silent for long (a tab left open); the app's read timeout,
    // restarted by traffic either way, closes a tunnel silent both ways for that long.
    session.as_downstream_mut().set_read_timeout(None);
    copy_both_ways(session, &mut app).await
}

/// Copies the client's bytes to the app and the app's to the client until one side ends
/// (a WebSocket close is a close of both directions).
async fn copy_both_ways(
    session: &mut Session,
    app: &mut pingora::protocols::http::v1::client::HttpSession,
) -> Result<()> {
    loop {
        tokio::select! {
            from_client = session.read_request_body() => match from_client? {
                Some(data) => {
                    app.write_body(&data).await.map_err(|e| e.into_up())?;
                }
                None => {
                    let _ = app.finish_body().await;
                    break;
                }
            },
            from_app = app.read_body_bytes() => match from_app.map_err(|e| e.into_up())? {
                Some(data) => session.write_response_body(Some(data), false).await?,
                None => break,
            },
        }
    }
    session.write_response_body(None, true).await
}
