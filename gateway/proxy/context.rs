//! `RequestCtx`: what one request carries through the proxy phases, from its route to
//! the guards that count it and its timings; and `poll_once`, for the phases that take
//! what is already read without waiting.

use std::future::Future;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use prometheus::IntGauge;

use super::page::Reply;
use crate::conn::upload::UploadWatch;
use crate::lifecycle::Ticket;
use crate::limits::Verdict;
use crate::metrics::{Reject, RouteMetrics};
use crate::pool::Lease;
use crate::state::{ActiveRoute, BodyDeadline, Snapshot};

/// Per-request state.
pub struct RequestCtx {
    /// The route this request matched, held for its whole life (reload-safe).
    pub(super) route: Option<Arc<ActiveRoute>>,
    /// The configuration a request without a route was answered under: its pages carry
    /// the listener's security headers (`reply`).
    pub(super) unrouted: Option<Arc<Snapshot>>,
    pub(super) request_id: Option<HeaderValue>,
    /// The client's address (see `forwarded::client_ip`).
    pub(super) client: Option<IpAddr>,
    /// Whether the client is on HTTPS (see `forwarded::client_https`).
    pub(super) https: bool,
    /// The rate limiter's answer, for the response's `RateLimit` field.
    pub(super) rate: Option<Verdict>,
    /// Request body bytes seen so far.
    pub(super) body_seen: u64,
    /// When the first byte of the body came (`limits.body_min_rate` is timed from it:
    /// neither a queue nor an app slow to say `100 Continue` counts against the client).
    pub(super) body_started: Option<std::time::Instant>,
    /// `limits.body_timeout` and `body_min_rate`, as the request's configuration says.
    pub(super) body_deadline: BodyDeadline,
    /// `limits.send_timeout`, as the request's configuration says (HTTP/2 answers);
    /// `None` until `request_filter` has read it.
    pub(super) send_timeout: Option<std::time::Duration>,
    /// The watch on the request body while it goes to the app (`conn::upload`).
    pub(super) upload: Option<UploadWatch>,
    /// The request is a WebSocket upgrade, for `upgrade::tunnel` (`upgrade::screen`).
    pub(super) websocket: bool,
    /// The client reset this HTTP/2 stream before the request went to the app.
    pub(super) reset_early: bool,
    /// The series this request is counted in (its route's, or `_unmatched`).
    pub(super) metrics: Option<Arc<RouteMetrics>>,
    /// Why the gateway answered itself, if it did.
    pub(super) reason: Option<Reject>,
    /// Who a login or the sign-on service vouched for.
    pub(super) user: Option<Arc<str>>,
    /// The API key the request was verified with (`api_keys`).
    pub(super) key: Option<Arc<crate::keys::Key>>,
    /// Its place among the key's `max_concurrent` requests, given back when the request ends.
    pub(super) key_slot: Option<crate::keys::Slot>,
    /// The key's rate limiter's answer, for the `RateLimit` field of a route without its own.
    pub(super) key_rate: Option<Verdict>,
    /// Fields the sign-on service vouched with, for the upstream request.
    pub(super) auth_fields: Vec<(HeaderName, HeaderValue)>,
    pub(super) upstream_error: Option<crate::metrics::UpstreamError>,
    /// The replica this request holds (counted in its in-flight requests).
    pub(super) lease: Option<Lease>,
    /// The managed app this request is in flight on (`app:` routes).
    pub(super) app: Option<crate::apps::InFlight>,
    /// The last replica tried, when its connect failed and none was left (for the log).
    pub(super) failed: Option<Arc<crate::pool::Replica>>,
    /// The sticky cookie for the response, when the request lacked it.
    pub(super) set_cookie: Option<HeaderValue>,
    /// A failed connect was retried on another replica (once only).
    pub(super) retried: bool,
    /// A connect failed and no replica is up: the answer is 503, not 502.
    pub(super) all_down: bool,
    pub(super) timing: Timing,
    pub(super) _in_flight: Option<GaugeGuard>,
    pub(super) _websocket: Option<GaugeGuard>,
    pub(super) _ticket: Ticket,
}

impl RequestCtx {
    /// A request before any phase has run: `https` is the listener's, `ticket` counts it
    /// among the requests in flight (for a graceful shutdown).
    pub(super) fn new(https: bool, ticket: Ticket) -> RequestCtx {
        RequestCtx {
            route: None,
            unrouted: None,
            request_id: None,
            client: None,
            https,
            rate: None,
            body_seen: 0,
            body_started: None,
            body_deadline: BodyDeadline::default(),
            send_timeout: None,
            upload: None,
            websocket: false,
            reset_early: false,
            metrics: None,
            reason: None,
            user: None,
            key: None,
            key_slot: None,
            key_rate: None,
            auth_fields: Vec::new(),
            upstream_error: None,
            lease: None,
            app: None,
            failed: None,
            set_cookie: None,
            retried: false,
            all_down: false,
            timing: Timing::new(),
            _in_flight: None,
            _websocket: None,
            _ticket: ticket,
        }
    }

    /// How the gateway answers this request itself: with its route's security headers,
    /// or the listener's when it has no route.
    pub(super) fn reply(&self) -> Reply<'_> {
        let headers = match (&self.route, &self.unrouted) {
            (Some(route), _) => &route.headers[..],
            (None, Some(snapshot)) => snapshot.default_headers(self.https),
            (None, None) => &[],
        };
        Reply::new(headers, self.request_id.as_ref())
    }

    /// The replica the request went to, or last tried.
    pub(super) fn replica(&self) -> Option<&Arc<crate::pool::Replica>> {
        self.lease
            .as_ref()
            .map(Lease::replica)
            .or(self.failed.as_ref())
    }
}

/// Holds a gauge up for as long as it lives.
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub fn new(gauge: &IntGauge) -> GaugeGuard {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Timings of one request.
pub struct Timing {
    pub started: Instant,
    pub upstream_connected: Option<Instant>,
    pub upstream_header: Option<Instant>,
}

impl Timing {
    pub fn new() -> Timing {
        Timing {
            started: Instant::now(),
            upstream_connected: None,
            upstream_header: None,
        }
    }

    /// The app's answer head has come (its first one, when it sent a `100` first).
    pub fn header_received(&mut self) {
        self.upstream_header.get_or_insert_with(Instant::now);
    }

    /// Time from the request to `at`.
    pub(super) fn since_start(&self, at: Option<Instant>) -> Option<Duration> {
        at.map(|t| t.duration_since(self.started))
    }
}

/// Polls `fut` once: its output if it is ready now, `None` (and `fut` dropped) if not.
pub(super) fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}
