//! The HTTPS proxy: Pingora's `ProxyHttp` phases, each handing off to the router or the
//! page writer. Reads the current `Snapshot` once per request; never touches `config`.
//!
//! ```text
//! request_filter ── head: framing, target, size ─────> 400/431 ─┐ (connection closed)
//!        ├── route by host, then path ──────────> 404/400 page ─┤
//!        ├── SNI names another certificate's host ────> 421 ─────┤ (connection closed)
//!        ├── the prefix without its slash (`/voice`) ─> 301 ─────┤
//!        ├── access: allow, failed logins, Basic, ─> 403/429/401 ┤
//!        │   sign-on service                   ─> its answer/302/503
//!        ├── declared body > max_body ────────────────> 413 ─────┤
//!        ├── rate limit (client key) ─────────────────> 429 ─────┤
//!        ├── an upgrade with a body ──────────────────> 400 ─────┤ (other than a WebSocket
//!        │                                                       │  GET: `Upgrade` removed)
//!        ├── first chunk of a chunked body malformed ─> 400 ─────┤ (before any upstream)
//!        ├── a replica (`upstream::place`; may queue) ─> 503 ─────┤ (down, queue full/timeout)
//!        ├── a WebSocket: `upgrade::tunnel` ─────────────────────┤ (the phases below, its own)
//!        │                                                       │
//! upstream_peer (the replica's prebuilt peer)                    │
//! fail_to_connect (eject it; once: another replica)              │
//! upstream_request_filter (X-Forwarded-*, id, access fields,     │
//!                          prefix stripped)                      │
//! request_body_filter (count; > max_body: 413;                    │
//!                      slower than body_min_rate: 408) ──────────┤
//! response_filter (security, RateLimit, id, prefix put back,     │
//!                  sticky cookie)                                │
//! fail_to_proxy (502/503/504 page) ──────────────────────────────┤
//! logging (the head deadline restarts) <─────────────────────────┘
//! ```

mod access;
mod admission;
mod context;
mod failure;
mod forwarded;
mod limits;
mod observe;
mod page;
mod routing;
mod upgrade;
mod upstream;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use crate::access_log::AccessLog;
use crate::conn::upload::UploadWatch;
use crate::conn::{self, h2};
use crate::lifecycle::InFlight;
use crate::metrics::Reject;
use crate::state::Shared;
use context::poll_once;
pub use context::RequestCtx;
use observe::GaugeGuard;
use routing::Routed;

/// Idle time allowed between requests on a client's keep-alive connection (nginx: 75 s),
/// HTTP/1.1 and HTTP/2. Pingora's default keeps idle connections forever.
pub const DOWNSTREAM_KEEPALIVE_SECS: u64 = 75;

/// The proxy service: of the HTTPS listener, and of the plain-HTTP one in `http_mode:
/// proxy`.
pub struct Gateway {
    pub shared: Arc<Shared>,
    /// Whether this proxy serves the HTTPS listener (else the plain-HTTP one).
    pub tls: bool,
    pub in_flight: InFlight,
    /// `None` when `access_log: off`.
    pub access_log: Option<Arc<AccessLog>>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.tls, self.in_flight.enter())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        admission::head_read(session);
        admission::serve_pipelined(session);
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(DOWNSTREAM_KEEPALIVE_SECS));
        }
        let req = session.req_header();
        let request_id = forwarded::request_id(req);
        let snapshot = self.shared.snapshot.load();
        let peer = forwarded::peer_ip(session);
        let client = peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| {
            forwarded::client_ip(peer, req, &snapshot.trusted_proxies)
        });
        ctx.client = Some(client);
        ctx.request_id = Some(request_id.clone());
        ctx.body_deadline = snapshot.body_deadline;
        ctx.send_timeout = Some(snapshot.send_timeout);
        ctx.https = forwarded::client_https(self.tls, peer, req, &snapshot.trusted_proxies);
        let routed = routing::find(snapshot.routes_for(ctx.https), req);
        let route = routed.route().cloned();
        ctx.metrics = match &route {
            Some(route) => route.metrics.clone(),
            None => snapshot.unmatched.clone(),
        };
        ctx._in_flight = ctx.metrics.as_ref().map(|m| GaugeGuard::new(&m.in_flight));
        // An owned handle (no copy of the headers) to hold across the writes below.
        let snapshot = arc_swap::Guard::into_inner(snapshot);
        let headers = route
            .as_ref()
            .map_or(snapshot.default_headers(ctx.https), |r| &r.headers);
        conn::pace_h2(session, snapshot.send_timeout, 0);
        if let Err(refusal) = admission::check_head(session, &snapshot.admission) {
            ctx.reason = Some(refusal.reason());
            admission::refuse(session, refusal, headers, &request_id).await?;
            return Ok(true);
        }
        let underscores = snapshot.admission.underscores_in_headers();
        forwarded::strip_claims(session.req_header_mut(), underscores);
        if !self.tls && routing::challenge(session, &self.shared, &snapshot, &request_id).await? {
            return Ok(true);
        }
        let Some(route) = route else {
            ctx.reason = routing::answer(session, &routed, headers, &request_id).await?;
            return Ok(true);
        };
        drop(snapshot);
        ctx.route = Some(route.clone());
        let host = forwarded::client_host(session.req_header()).unwrap_or_default();
        let sni = admission::check_sni(session, host, &self.shared.certs.load());
        if let Err(refusal) = sni {
            ctx.reason = Some(refusal.reason());
            admission::refuse(session, refusal, &route.headers, &request_id).await?;
            return Ok(true);
        }
        if let Routed::AddSlash(_) = routed {
            routing::answer(session, &routed, &route.headers, &request_id).await?;
            return Ok(true);
        }
        if route.access.is_some() {
            // Boxed: the checks' state (a sign-on request in flight) stays out of every
            // public route's request future.
            let checked = Box::pin(access::check(
                session,
                &route,
                client,
                ctx.https,
                &self.shared,
                &request_id,
            ));
            match checked.await? {
                access::Access::Answered(reason) => {
                    ctx.reason = Some(reason);
                    limits::discard_body(session).await;
                    return Ok(true);
                }
                access::Access::Pass { user, fields } => {
                    ctx.user = user;
                    ctx.auth_fields = fields;
                }
            }
        }
        limits::body_deadline(session, &ctx.body_deadline);
        if limits::declared_body(session, &route, &request_id).await? {
            ctx.reason = Some(Reject::BodyTooLarge);
            return Ok(true);
        }
        match limits::rate(session, &route, client, &request_id).await? {
            limits::Rate::Answered => {
                ctx.reason = Some(Reject::RateLimit);
                return Ok(true);
            }
            limits::Rate::Pass(state) => ctx.rate = state,
        }
        let upgrading = upgrade::screen(session);
        let first_chunk = match upgrading {
            Ok(_) => admission::read_first_chunk(session).await,
            Err(refusal) => Err(refusal),
        };
        if let Err(refusal) = first_chunk {
            ctx.reason = Some(refusal.reason());
            admission::refuse(session, refusal, &route.headers, &request_id).await?;
            return Ok(true);
        }
        if upstream::place(session, ctx, &route).await? {
            return Ok(true);
        }
        if upgrading == Ok(true) {
            upgrade::tunnel(self, session, ctx).await?;
            return Ok(true);
        }
        // An HTTP/2 stream the client already reset is not sent to the app.
        ctx.reset_early = h2::reset_already(session);
        Ok(ctx.reset_early)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        upstream::peer(ctx)
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let peer = forwarded::peer_ip(session);
        let host = forwarded::client_host_value(session.req_header());
        if let Some(id) = &ctx.request_id {
            forwarded::apply(up, peer, ctx.client, ctx.https, host, id)?;
        }
        if let Some(route) = &ctx.route {
            access::upstream_fields(up, route, &ctx.auth_fields)?;
            if let Some(prefix) = &route.prefix {
                prefix.upstream_request(up)?;
            }
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(route) = &ctx.route else {
            return Ok(());
        };
        let counted = limits::count_body(session, route, &mut ctx.body_seen, body.as_ref());
        if let Some(upload) = &ctx.upload {
            upload.progress(ctx.body_seen, end_of_stream);
        }
        if counted.is_err() {
            ctx.reason = Some(Reject::BodyTooLarge);
            return counted;
        }
        let since = *ctx.body_started.get_or_insert_with(std::time::Instant::now);
        let paced = limits::check_pace(&ctx.body_deadline, since, ctx.body_seen);
        if paced.is_err() {
            ctx.reason = Some(Reject::BodyTimeout);
        }
        paced
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
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
            limits::response_headers(resp, route, &ctx.rate)?;
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

    /// Pingora logs every failed request at error level; the gateway logs its own line in
    /// `logging` instead, at warn for upstream failures (the client side is debug).
    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, _error: &Error) -> bool {
        true
    }

    async fn connected_to_upstream(
        &self,
        session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.timing.upstream_connected = Some(std::time::Instant::now());
        upstream::connected(ctx);
        let stall = ctx.body_deadline.timeout;
        ctx.upload = UploadWatch::watch(session, fd, stall, &self.shared.conns.abuse);
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.timing
            .upstream_header
            .get_or_insert_with(std::time::Instant::now);
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        admission::request_over(session);
        let asked = ctx.timing.upstream_connected.is_some();
        let logged = self.shared.conns.ended(session, e, ctx.reset_early, asked);
        let access_log = self.access_log.as_deref().filter(|_| logged);
        observe::finish(access_log, session, e, ctx);
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if let (Some(body), Some(timeout)) = (body, ctx.send_timeout) {
            conn::pace_h2(session, timeout, body.len());
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        failure::answer(self, session, e, ctx).await
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        e: Box<Error>,
    ) -> Box<Error> {
        upstream::connect_failed(ctx, e)
    }

    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
        _error: &Error,
        _context: pingora::proxy::ProxyWarnLogContext,
    ) -> bool {
        // A retry is logged by `upstream::connect_failed`, the final error by `logging`.
        true
    }
}
