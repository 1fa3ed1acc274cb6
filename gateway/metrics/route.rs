//! One route's series, resolved when a configuration is loaded so that recording a
//! request is a few atomic adds: no label lookup, no lock.

use std::sync::OnceLock;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
};

use super::labels::{Reject, UpstreamError};
use super::{Metrics, Register};

/// Request duration buckets, 5 ms to 1 h: AI generation jobs run for minutes.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

/// The families labelled by route.
pub(super) struct TrafficFamilies {
    requests: IntCounterVec,
    duration: HistogramVec,
    request_bytes: IntCounterVec,
    response_bytes: IntCounterVec,
    in_flight: IntGaugeVec,
    websockets: IntGaugeVec,
    rejected: IntCounterVec,
    upstream_errors: IntCounterVec,
    upstream_exposed: IntGaugeVec,
}

impl TrafficFamilies {
    pub(super) fn new(register: &Register) -> Result<TrafficFamilies, prometheus::Error> {
        let route = &["route"];
        let duration = HistogramOpts::new(
            "gateway_request_duration_seconds",
            "Time from request header to the end of the response.",
        )
        .buckets(DURATION_BUCKETS.to_vec());
        Ok(TrafficFamilies {
            requests: register.counters(
                "gateway_requests_total",
                "Requests answered, by route, method and status code.",
                &["route", "method", "code"],
            )?,
            duration: register.add(HistogramVec::new(duration, route)?)?,
            request_bytes: register.counters(
                "gateway_request_body_bytes_total",
                "Request body bytes read from clients.",
                route,
            )?,
            response_bytes: register.counters(
                "gateway_response_body_bytes_total",
                "Response body bytes sent to clients.",
                route,
            )?,
            in_flight: register.gauges("gateway_in_flight_requests", "Requests in progress.", route)?,
            websockets: register.gauges(
                "gateway_websocket_sessions",
                "Open upgraded (WebSocket) connections.",
                route,
            )?,
            rejected: register.counters(
                "gateway_rejected_total",
                "Requests answered by the gateway itself, by reason.",
                &["route", "reason"],
            )?,
            upstream_errors: register.counters(
                "gateway_upstream_errors_total",
                "Failures talking to upstreams, by kind.",
                &["route", "kind"],
            )?,
            upstream_exposed: register.gauges(
                "gateway_upstream_exposed",
                "1 if the route's loopback upstream also accepts connections on a non-loopback address of this host.",
                route,
            )?,
        })
    }
}

impl Metrics {
    /// Replaces `gateway_upstream_exposed`: one series per route, 1 for the exposed ones.
    pub fn set_exposed<'a>(&self, routes: impl Iterator<Item = (&'a str, bool)>) {
        let exposed_family = &self.traffic.upstream_exposed;
        exposed_family.reset();
        for (route, exposed) in routes {
            exposed_family
                .with_label_values(&[route])
                .set(i64::from(exposed));
        }
    }
}

/// The `method` label values; anything else is `OTHER`.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER",
];

/// Status codes 100..=599 get a pre-sized slot each.
const CODES: usize = 500;

/// One route's series, resolved ahead of the request path.
pub struct RouteMetrics {
    name: String,
    requests: IntCounterVec,
    /// `gateway_requests_total` children by method × status, created on first use.
    by_status: Box<[OnceLock<IntCounter>]>,
    duration: Histogram,
    request_bytes: IntCounter,
    response_bytes: IntCounter,
    pub in_flight: IntGauge,
    pub websockets: IntGauge,
    rejected: Vec<IntCounter>,
    upstream_errors: Vec<IntCounter>,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RouteMetrics {
    pub(super) fn new(m: &Metrics, name: &str) -> RouteMetrics {
        let m = &m.traffic;
        let rejected = Reject::ALL
            .iter()
            .map(|r| m.rejected.with_label_values(&[name, r.as_str()]))
            .collect();
        let upstream_errors = UpstreamError::ALL
            .iter()
            .map(|k| m.upstream_errors.with_label_values(&[name, k.as_str()]))
            .collect();
        RouteMetrics {
            name: name.to_string(),
            requests: m.requests.clone(),
            by_status: (0..METHODS.len() * CODES)
                .map(|_| OnceLock::new())
                .collect(),
            duration: m.duration.with_label_values(&[name]),
            request_bytes: m.request_bytes.with_label_values(&[name]),
            response_bytes: m.response_bytes.with_label_values(&[name]),
            in_flight: m.in_flight.with_label_values(&[name]),
            websockets: m.websockets.with_label_values(&[name]),
            rejected,
            upstream_errors,
        }
    }

    /// Records one finished request.
    pub fn request(&self, method: &http::Method, status: u16, seconds: f64, req: u64, resp: u64) {
        let m = METHODS
            .iter()
            .position(|name| *name == method.as_str())
            .unwrap_or(METHODS.len() - 1);
        match usize::from(status).checked_sub(100).filter(|c| *c < CODES) {
            Some(c) => self.by_status[m * CODES + c]
                .get_or_init(|| {
                    self.requests
                        .with_label_values(&[&self.name, METHODS[m], &status.to_string()])
                })
                .inc(),
            None => self
                .requests
                .with_label_values(&[&self.name, METHODS[m], &status.to_string()])
                .inc(),
        }
        self.duration.observe(seconds);
        self.request_bytes.inc_by(req);
        self.response_bytes.inc_by(resp);
    }

    pub fn rejected(&self, reason: Reject) {
        if let Some(c) = Reject::ALL.iter().position(|r| *r == reason) {
            self.rejected[c].inc();
        }
    }

    pub fn upstream_error(&self, kind: UpstreamError) {
        if let Some(c) = UpstreamError::ALL.iter().position(|k| *k == kind) {
            self.upstream_errors[c].inc();
        }
    }
}
