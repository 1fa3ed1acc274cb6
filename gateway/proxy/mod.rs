//! The HTTPS proxy: Pingora's `ProxyHttp` phases, each handing off to the router or the
//! page writer. Reads the current `Snapshot` once per request; never touches `config`.
//!
//! ```text
//! request_filter ── head: framing, target, size ─────> 400/431 ─┐ (connection closed)
//!        ├── route by host, then path ──────────> 404/400 page ─┤
//!        ├── SNI names another certificate's host ────> 421 ─────┤ (connection closed)
//!        ├── the prefix without its slash (`/voice`) ─> 301 ─────┤
//!        ├── access: allow, failed logins, ─────> 403/429/401 ┤
//!        │   API key (taken out; its limits: 429), Basic,        │
//!        │   sign-on service                   ─> its answer/302/503
//!        ├── declared body > max_body ────────────────> 413 ─────┤
//!        ├── rate limit (client key) ─────────────────> 429 ─────┤
//!        ├── an upgrade with a body ──────────────────> 400 ─────┤ (other than a WebSocket
//!        │                                                       │  GET: `Upgrade` removed)
//!        ├── a managed app not ready (`on_demand`) ──> 503 page ─┤ (navigations; others held
//!        │       failed start 502, start_timeout 504 ───────────┤  until it is ready)
//!        ├── first chunk of a chunked body malformed ─> 400 ─────┤ (before any upstream)
//!        ├── a replica (`upstream::place`; may queue) ─> 503 ─────┤ (down, queue full/timeout)
//!        ├── a WebSocket: `upgrade::tunnel` ─────────────────────┤ (its own connection; the
//!        │                                                       │  fields of `headers`)
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
mod api_keys;
mod context;
mod failure;
mod forwarded;
mod headers;
mod limits;
mod observe;
mod on_demand;
mod page;
mod routing;
mod step;
mod upgrade;
mod upstream;
mod waiting;
mod ws_frames;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};

use crate::access_log::AccessLog;
use crate::compress;
use crate::conn::upload::UploadWatch;
use crate::conn::{self, h2};
use crate::lifecycle::InFlight;
use crate::metrics::Reject;
use crate::state::{Shared, Snapshot};
pub use admission::DOWNSTREAM_KEEPALIVE_SECS;
use context::GaugeGuard;
pub use context::RequestCtx;
use page::Reply;
use routing::Routed;
use step::{Failed, Step};

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

/// Runs one check of the request phase (`step::Checked`): when it answered the client,
/// or failed, the phase ends there, the reason of its answer recorded.
macro_rules! check {
    ($ctx:expr, $step:expr) => {
        match $step {
            Ok(Step::Next) => {}
            Ok(Step::Answered(reason)) => {
                $ctx.reason = reason;
                return Ok(true);
            }
            Err(Failed { reason, error }) => {
                $ctx.reason = reason;
                return Err(error);
            }
        }
    };
}

impl Gateway {
    /// Who the request is from and where it goes: the client's address and scheme, the
    /// request id, the configuration's deadlines, and the route it is counted under.
    fn identify(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        snapshot: &Snapshot,
        request_id: &HeaderValue,
    ) -> Routed {
        let req = session.req_header();
        let peer = forwarded::peer_ip(session);
        ctx.client = Some(peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |peer| {
            forwarded::client_ip(peer, req, &snapshot.trusted_proxies)
        }));
        ctx.request_id = Some(request_id.clone());
        ctx.body_deadline = snapshot.body_deadline;
        ctx.send_timeout = Some(snapshot.send_timeout);
        ctx.https = forwarded::client_https(self.tls, peer, req, &snapshot.trusted_proxies);
        let routed = routing::find(snapshot.routes_for(ctx.https), req);
        ctx.metrics = match routed.route() {
            Some(route) => route.metrics.clone(),
            None => snapshot.unmatched.clone(),
        };
        ctx._in_flight = ctx.metrics.as_ref().map(|m| GaugeGuard::new(&m.in_flight));
        routed
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    /// Response compression (`compress`) in place of Pingora's own module, which would
    /// hold a streamed answer back and ignores the client's weights.
    fn init_downstream_modules(&self, modules: &mut pingora::modules::http::HttpModules) {
        modules.add_module(Box::new(compress::Builder));
    }

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.tls, self.in_flight.enter())
    }

    /// The request's checks, in order (the diagram above); the first that answers the
    /// client ends the phase.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        admission::head_read(session);
        admission::serve_pipelined(session);
        admission::keep_alive(session);
        let snapshot = self.shared.snapshot.load_full();
        let request_id = forwarded::request_id(session.req_header());
        let routed = self.identify(session, ctx, &snapshot, &request_id);
        let route = routed.route().cloned();
        let headers = match &route {
            Some(route) => &route.headers[..],
            None => {
                // For the failure page, should one come (`failure::answer`).
                ctx.unrouted = Some(snapshot.clone());
                snapshot.default_headers(ctx.https)
            }
        };
        let reply = Reply::new(headers, Some(&request_id));
        conn::pace_h2(session, snapshot.send_timeout, 0);
        check!(
            ctx,
            admission::check_head(session, &snapshot.admission, &reply).await
        );
        let underscores = snapshot.admission.underscores_in_headers();
        forwarded::strip_claims(session.req_header_mut(), underscores);
        if !self.tls {
            check!(
                ctx,
                routing::challenge(session, &self.shared, &snapshot, &reply).await
            );
        }
        let Some(route) = &route else {
            check!(ctx, routing::answer(session, &routed, &reply).await); // 404, 400
            return Ok(true);
        };
        ctx.route = Some(route.clone());
        compress::offer(session, route.compress);
        // What the rest needs is the route's: the configuration is let go (a reload frees
        // it while this request, a WebSocket say, lives on).
        let reply = Reply::new(&route.headers, Some(&request_id));
        drop(snapshot);
        check!(
            ctx,
            admission::check_sni(session, &self.shared.certs, &reply).await
        );
        if let Routed::AddSlash(_) = routed {
            check!(ctx, routing::answer(session, &routed, &reply).await); // `/voice`: 301
        }
        check!(
            ctx,
            access::check(session, ctx, route, &self.shared, &reply).await
        );
        limits::body_deadline(session, &ctx.body_deadline);
        check!(ctx, limits::declared_body(session, route, &reply).await);
        check!(ctx, limits::rate(session, ctx, route, &reply).await);
        check!(ctx, upgrade::screen(session, ctx, &reply).await);
        check!(ctx, on_demand::admit(session, ctx, route, &reply).await);
        check!(ctx, admission::read_first_chunk(session, &reply).await);
        check!(ctx, upstream::place(session, ctx, route, &reply).await);
        if ctx.websocket {
            upgrade::tunnel(self.shared.connector(), session, ctx).await?;
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
        headers::upstream_request(session, up, ctx)
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
        if let Some(app) = &ctx.app {
            app.touch();
        }
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
        headers::response(session, resp, ctx)
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
        ctx.timing.header_received();
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
        if let Some(app) = &ctx.app {
            app.touch();
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        failure::answer(session, e, ctx).await
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
