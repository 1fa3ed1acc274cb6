//! One route's series, resolved when a configuration is loaded so that recording a
//! request is a few atomic adds: no label lookup, no lock.

use std::sync::OnceLock;

use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge};

use super::labels::{Reject, UpstreamError};
use super::Metrics;

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
