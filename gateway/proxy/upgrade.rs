//! HTTP/1.1 upgrades (WebSocket: Streamlit's `/_stcore/stream`, Gradio's queue) proxied by
//! the gateway itself instead of Pingora's proxy loop.
//!
//! Only `Upgrade: websocket` on a `GET` without a body is tunnelled (`screen`). Any other
//! upgrade (`h2c`, which would let the client speak HTTP/2 to the app past every route
//! check) is removed and the request proxied as an ordinary one; an upgrade request with
//! a body is refused. The tunnel's request loses the hop-by-hop fields as every proxied
//! request does (`clean`), and holds its replica's `max_concurrent` slot until the app
//! answers; after a `101` it counts as a tunnel of that replica instead.
//!
//! NOTE: Pingora 0.9.1 can tear an upgraded connection down the moment it is made
//! (cloudflare/pingora#946, fixes open as #947 and #1016): when the app's `101` is read
//! before the end of the upgrade request's own empty body, that end is taken for the end
//! of the tunnel, and the client gets the `101` and then EOF. On a loaded machine this
//! happened to one WebSocket in three in the suite. Until a release has the fix, the
//! gateway sends the upgrade request, relays the answer and then copies bytes both ways
//! here, with the same fields as any request (`headers`: forwarded fields, logins,
//! prefix on the way in; security headers, prefix, the WebSocket gauge on the way out)
//! and the route's timeouts.
//!
//! After the `101` the app's side is read with a small buffer of our own instead of
//! Pingora's body reader, which holds 64 KiB per connection for as long as the tunnel
//! lives (`BODY_BUFFER_SIZE`, not configurable in 0.9.1): thousands of open Streamlit
//! tabs are thousands of tunnels. The client's side stays with Pingora's reader, as a
//! `Session` gives no mutable access to its stream.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderName};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::protocols::http::client::HttpSession;
use pingora::protocols::http::v1::client::HttpSession as HttpSessionV1;
use pingora::protocols::Stream;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, OrErr, Result};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};

use super::context::RequestCtx;
use super::page::Reply;
use super::step::{Checked, Step};
use super::ws_frames::{Frames, GOING_AWAY};
use super::{admission, headers, upstream};
use crate::admission::Fault;
use crate::apps::Tunnel;
use crate::conn::socket::{client_left, reset_on_close};

/// The most the tunnel reads from the app at once: one TLS record's worth. Only what a
/// read fills is touched, so an idle tunnel holds next to nothing of it.
const APP_READ: usize = 16 * 1024;

/// Fields that describe one connection, never passed on (RFC 9110, 7.6.1), with the
/// proxy's credentials and HTTP/2's upgrade settings.
const HOP_BY_HOP: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    HeaderName::from_static("http2-settings"),
];

/// Most `Connection` options read (Pingora's own bound is 10).
const MAX_NOMINATED: usize = 16;

/// Marks a WebSocket upgrade request for `tunnel` (`ctx.websocket`). An HTTP/1.1 request
/// asking for any other upgrade has its `Upgrade` (and `HTTP2-Settings`) removed and goes
/// on as an ordinary request; an upgrade request with a body is refused (400).
pub async fn screen(session: &mut Session, ctx: &mut RequestCtx, reply: &Reply<'_>) -> Checked {
    if !session.as_downstream().is_upgrade_req() {
        return Ok(Step::Next);
    }
    let req = session.req_header();
    let length = req.headers.get(header::CONTENT_LENGTH);
    if req.headers.contains_key(header::TRANSFER_ENCODING)
        || length.is_some_and(|v| v.as_bytes() != b"0")
    {
        let fault = Fault::Framing("An upgrade request cannot carry a body.");
        return admission::reject(session, fault, reply).await;
    }
    if crate::admission::asks_websocket(true, req) {
        ctx.websocket = true;
        return Ok(Step::Next);
    }
    let req = session.req_header_mut();
    req.remove_header(&header::UPGRADE);
    req.remove_header("http2-settings");
    Ok(Step::Next)
}

/// The tunnel's request as every proxied request leaves (Pingora's own clean-up on its
/// proxy path): without the fields `Connection` names (but `Host`) and the hop-by-hop
/// fields, then asking the app for the WebSocket upgrade alone.
fn clean(req: &mut RequestHeader) -> Result<()> {
    let named: Vec<HeaderName> = req
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .filter(|name| *name != header::HOST)
        .take(MAX_NOMINATED)
        .collect();
    for name in named.iter().chain(&HOP_BY_HOP) {
        req.remove_header(name);
    }
    req.insert_header(header::CONNECTION, "Upgrade")?;
    req.insert_header(header::UPGRADE, "websocket")?;
    Ok(())
}

/// Proxies an upgrade request to the route's app: its answer goes back as it is, and after
/// a `101` the two connections are joined until either side closes. Errors before
/// anything was sent to the client become the usual 502/504 page (`fail_to_proxy`).
pub async fn tunnel(
    connector: &Connector,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<()> {
    let mut app = connect(connector, ctx).await?;
    let mut req = session.req_header().clone();
    clean(&mut req)?;
    headers::upstream_request(session, &mut req, ctx)?;
    app.write_request_header(Box::new(req))
        .await
        .map_err(|e| e.into_up())?;
    app.read_response().await.map_err(|e| e.into_up())?;
    let mut resp = match app.resp_header() {
        Some(resp) => resp.clone(),
        None => return Error::e_explain(ErrorType::InvalidHTTPHeader, "no response header"),
    };
    // A `101` to anything but the WebSocket asked for would open a raw pipe to the app.
    let upgrade = resp.headers.get(header::UPGRADE).map(|v| v.as_bytes());
    if resp.status == 101 && !upgrade.is_some_and(|v| v.eq_ignore_ascii_case(b"websocket")) {
        return Error::e_explain(ErrorType::InvalidHTTPHeader, "a 101 to another protocol")
            .map_err(|e| e.into_up());
    }
    ctx.timing.header_received();
    headers::response(session, &mut resp, ctx)?;
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
    // From now on a tunnel of its replica, no longer a request under `max_concurrent`,
    // nor one in flight on its app (whose stop closes it).
    ctx.lease = ctx.lease.take().map(crate::pool::Lease::into_tunnel);
    // Nor one of its API key's `max_concurrent` requests.
    ctx.key_slot = None;
    let mut app_tunnel = ctx.app.take().map(crate::apps::InFlight::into_tunnel);
    // Bytes the app sent right behind its `101` are already in Pingora's reader: take
    // them without waiting for more, then keep only the bare connection.
    let early = super::context::poll_once(app.read_body_bytes());
    let timeouts = (app.read_timeout, app.write_timeout);
    let mut app = app.into_inner();
    if let Some(read) = early {
        match read.map_err(|e| e.into_up())? {
            Some(data) => session.write_response_body(Some(data), false).await?,
            None => return session.write_response_body(None, true).await,
        }
    }
    // Either side may be silent for long (a tab left open); the app's read timeout,
    // restarted by traffic either way, closes a tunnel silent both ways for that long.
    session.as_downstream_mut().set_read_timeout(None);
    copy_both_ways(session, &mut app, timeouts, app_tunnel.as_mut()).await
}

/// A connection to the request's replica, with the route's timeouts. A failed connect is
/// retried once on another replica, as for any request.
async fn connect(connector: &Connector, ctx: &mut RequestCtx) -> Result<HttpSessionV1> {
    let (app, peer) = loop {
        let peer = upstream::peer(ctx)?;
        match connector.get_http_session(&*peer).await {
            Ok((app, _)) => break (app, peer),
            Err(e) => {
                let e = upstream::connect_failed(ctx, e.into_up());
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
    Ok(app)
}

/// How often a tunnel whose write to the app is stalled looks whether its client is
/// still there.
const CLIENT_CHECK: Duration = Duration::from_millis(250);

/// A write of the client's bytes to the app in progress: it owns the app's write half
/// and gives it back when done, so the tunnel goes on reading the app meanwhile.
type Writing<'a> =
    Pin<Box<dyn Future<Output = (WriteHalf<&'a mut Stream>, Result<()>)> + Send + 'a>>;

/// Copies the client's bytes to the app and the app's to the client until one side ends
/// (a WebSocket close is a close of both directions). The two directions run
/// independently: while the app does not read, its own messages still reach the client,
/// and a client that leaves meanwhile (its TCP connection closed or reset, which no read
/// shows while its bytes wait for the app) is noticed within `CLIENT_CHECK`.
async fn copy_both_ways(
    session: &mut Session,
    app: &mut Stream,
    (read_timeout, write_timeout): (Option<Duration>, Option<Duration>),
    mut managed: Option<&mut Tunnel>,
) -> Result<()> {
    let client = session.as_downstream().stream().map(|s| s.id());
    let app_fd = app.id();
    let (mut from_app, to_app) = tokio::io::split(app);
    let mut idle = Some(to_app);
    let mut writing: Option<Writing<'_>> = None;
    let mut check = tokio::time::interval(CLIENT_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = BytesMut::new();
    // The app's frames, followed only on a managed app's tunnel (closed between frames
    // when the app stops).
    let mut frames = managed.as_ref().map(|_| Frames::default());
    let mut closing = false;
    loop {
        if closing && frames.as_ref().is_none_or(Frames::at_boundary) {
            let close = Bytes::from_static(&GOING_AWAY);
            session.write_response_body(Some(close), false).await?;
            break;
        }
        buf.clear();
        buf.reserve(APP_READ);
        let busy = writing.is_some();
        let written = async {
            match writing.as_mut() {
                Some(w) => w.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            from_client = session.read_request_body(), if !busy => {
                let Some(mut half) = idle.take() else { break };
                match from_client? {
                    Some(data) => {
                        if let Some(m) = &managed {
                            m.touch();
                        }
                        writing = Some(Box::pin(async move {
                            let done = within(write_timeout, ErrorType::WriteTimedout, write_all(&mut half, &data)).await;
                            (half, done)
                        }));
                    }
                    None => {
                        let _ = half.shutdown().await;
                        break;
                    }
                }
            },
            (half, done) = written => {
                writing = None;
                done?;
                idle = Some(half);
            },
            _ = check.tick(), if busy => {
                if client_left(client) {
                    reset_on_close(app_fd);
                    return Error::e_explain(ErrorType::ConnectionClosed, "client left the tunnel")
                        .map_err(|e| e.into_down());
                }
            },
            _ = stopped(&mut managed), if !closing => closing = true,
            read = within(read_timeout, ErrorType::ReadTimedout, read_some(&mut from_app, &mut buf)) => match read? {
                0 => break,
                _ => {
                    if let Some(m) = &managed {
                        m.touch();
                    }
                    if let Some(frames) = &mut frames {
                        frames.feed(&buf);
                    }
                    let data = Bytes::copy_from_slice(&buf);
                    session.write_response_body(Some(data), false).await?;
                }
            },
        }
    }
    session.write_response_body(None, true).await
}

/// Resolves when the tunnel's app stops; never for a tunnel to an unmanaged app.
async fn stopped(managed: &mut Option<&mut Tunnel>) {
    match managed {
        Some(tunnel) => tunnel.closing().await,
        None => std::future::pending().await,
    }
}

async fn read_some(app: &mut (impl AsyncRead + Unpin), buf: &mut BytesMut) -> Result<usize> {
    app.read_buf(buf)
        .await
        .or_err(
            ErrorType::ReadError,
            "reading from the app's upgraded connection",
        )
        .map_err(|e| e.into_up())
}

async fn write_all(app: &mut (impl AsyncWrite + Unpin), data: &[u8]) -> Result<()> {
    let written = match app.write_all(data).await {
        Ok(()) => app.flush().await,
        Err(e) => Err(e),
    };
    written
        .or_err(
            ErrorType::WriteError,
            "writing to the app's upgraded connection",
        )
        .map_err(|e| e.into_up())
}

/// `io` within `limit`, else the timeout error (`kind`) Pingora's own reads and writes give.
async fn within<T>(
    limit: Option<Duration>,
    kind: ErrorType,
    io: impl Future<Output = Result<T>>,
) -> Result<T> {
    let Some(limit) = limit else {
        return io.await;
    };
    match tokio::time::timeout(limit, io).await {
        Ok(done) => done,
        Err(_) => Error::e_explain(kind, format!("upgraded connection idle for {limit:?}"))
            .map_err(|e| e.into_up()),
    }
}
