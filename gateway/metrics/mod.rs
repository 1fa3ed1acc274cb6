//! Prometheus metrics: one owned registry, created once and passed around as an `Arc`.
//!
//! The request path never looks a series up by its labels (which takes the vector's
//! lock): each route's series are resolved when a snapshot is built (`RouteMetrics`),
//! and its per-(method, status) counters once each, on first use. Recording is then a
//! few atomic adds. Labels come from the config only (`route` = a route's name or
//! `_unmatched`), never from traffic, so the series count is bounded by the config.

mod abuse;
mod acme;
mod labels;
mod pool;
mod route;
mod store;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub use abuse::Abuse;
pub use labels::{HandshakeFailure, HandshakeFailures, Reject, UpstreamError};
pub use pool::{QueueSeries, ReplicaSeries};
pub use route::RouteMetrics;
pub use store::{StoreError, StoreErrors};

/// The `route` label of requests whose host matches no route.
pub const UNMATCHED: &str = "_unmatched";

/// Request duration buckets, 5 ms to 1 h: AI generation jobs run for minutes.
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

/// Every metric family of the gateway.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    request_bytes: IntCounterVec,
    response_bytes: IntCounterVec,
    in_flight: IntGaugeVec,
    websockets: IntGaugeVec,
    rejected: IntCounterVec,
    upstream_errors: IntCounterVec,
    connections: IntGaugeVec,
    reloads: IntCounterVec,
    last_reload_ok: IntGauge,
    last_reload_time: Gauge,
    cert_expiry: GaugeVec,
    access_log_dropped: IntCounter,
    handshake_failures: IntCounterVec,
    upstream_exposed: IntGaugeVec,
    pool: pool::PoolFamilies,
    acme: acme::AcmeFamilies,
    store_errors: IntCounterVec,
    abuse: Abuse,
    /// Each route's resolved series by route name, reused across reloads.
    routes: Mutex<HashMap<String, Arc<RouteMetrics>>>,
}

/// A gauge that counts but is not exported (no metrics listener).
pub fn unregistered_gauge(name: &str) -> IntGauge {
    match IntGauge::new(name, name) {
        Ok(gauge) => gauge,
        // Callers pass constant names: never an invalid one.
        Err(e) => unreachable!("metric name {name:?}: {e}"),
    }
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    /// Creates and registers every family; `version` labels `gateway_build_info`.
    pub fn new(version: &str) -> Result<Arc<Metrics>, prometheus::Error> {
        let registry = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                let c = IntCounterVec::new(opts(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let gauge =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntGaugeVec, prometheus::Error> {
                let g = IntGaugeVec::new(opts(name, help), labels)?;
                registry.register(Box::new(g.clone()))?;
                Ok(g)
            };
        let requests = counter(
            "gateway_requests_total",
            "Requests answered, by route, method and status code.",
            &["route", "method", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "gateway_request_duration_seconds",
                "Time from request header to the end of the response.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route"],
        )?;
        registry.register(Box::new(duration.clone()))?;
        let request_bytes = counter(
            "gateway_request_body_bytes_total",
            "Request body bytes read from clients.",
            &["route"],
        )?;
        let response_bytes = counter(
            "gateway_response_body_bytes_total",
            "Response body bytes sent to clients.",
            &["route"],
        )?;
        let in_flight = gauge(
            "gateway_in_flight_requests",
            "Requests in progress.",
            &["route"],
        )?;
        let websockets = gauge(
            "gateway_websocket_sessions",
            "Open upgraded (WebSocket) connections.",
            &["route"],
        )?;
        let rejected = counter(
            "gateway_rejected_total",
            "Requests answered by the gateway itself, by reason.",
            &["route", "reason"],
        )?;
        let upstream_errors = counter(
            "gateway_upstream_errors_total",
            "Failures talking to upstreams, by kind.",
            &["route", "kind"],
        )?;
        let connections = gauge(
            "gateway_open_connections",
            "Open client connections, by listener.",
            &["listener"],
        )?;
        for listener in ["http", "https"] {
            connections.with_label_values(&[listener]).set(0);
        }
        let reloads = counter(
            "gateway_config_reloads_total",
            "Configuration reloads, by result.",
            &["result"],
        )?;
        for result in ["success", "failure"] {
            reloads.with_label_values(&[result]).reset();
        }
        let last_reload_ok = IntGauge::new(
            "gateway_config_last_reload_successful",
            "1 if the last configuration load succeeded.",
        )?;
        registry.register(Box::new(last_reload_ok.clone()))?;
        last_reload_ok.set(1);
        let last_reload_time = Gauge::new(
            "gateway_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load.",
        )?;
        registry.register(Box::new(last_reload_time.clone()))?;
        last_reload_time.set(unix_now());
        let cert_expiry = GaugeVec::new(
            opts(
                "gateway_tls_certificate_expiry_timestamp_seconds",
                "notAfter of the certificate served for each host, unix time.",
            ),
            &["host"],
        )?;
        registry.register(Box::new(cert_expiry.clone()))?;
        let access_log_dropped = IntCounter::new(
            "gateway_access_log_dropped_total",
            "Access log lines dropped because the writer could not keep up.",
        )?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        let handshake_failures = counter(
            "gateway_tls_handshake_failures_total",
            "Client TLS handshakes that failed, by reason.",
            &["reason"],
        )?;
        for reason in HandshakeFailure::ALL {
            handshake_failures
                .with_label_values(&[reason.as_str()])
                .reset();
        }
        let upstream_exposed = gauge(
            "gateway_upstream_exposed",
            "1 if the route's loopback upstream also accepts connections on a non-loopback address of this host.",
            &["route"],
        )?;
        let pool = pool::PoolFamilies::new(&registry)?;
        let acme = acme::AcmeFamilies::new(&registry)?;
        let store_errors = store::family(&registry)?;
        let abuse = Abuse::new(&registry)?;
        let build_info = gauge(
            "gateway_build_info",
            "Always 1; labelled with the version.",
            &["version"],
        )?;
        build_info.with_label_values(&[version]).set(1);
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Arc::new(Metrics {
            registry,
            requests,
            duration,
            request_bytes,
            response_bytes,
            in_flight,
            websockets,
            rejected,
            upstream_errors,
            connections,
            reloads,
            last_reload_ok,
            last_reload_time,
            cert_expiry,
            access_log_dropped,
            handshake_failures,
            upstream_exposed,
            pool,
            acme,
            store_errors,
            abuse,
            routes: Mutex::new(HashMap::new()),
        }))
    }

    /// The series of route `name` (created with zeroed counters on first use).
    pub fn route(&self, name: &str) -> Arc<RouteMetrics> {
        let mut routes = self.routes.lock();
        routes
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(RouteMetrics::new(self, name)))
            .clone()
    }

    /// The series of one replica of a route.
    pub fn replica(&self, route: &str, addr: std::net::SocketAddr) -> ReplicaSeries {
        self.pool.replica(route, addr)
    }

    /// The queue series of a route.
    pub fn queue(&self, route: &str) -> QueueSeries {
        QueueSeries {
            depth: self.pool.queue_depth.with_label_values(&[route]),
            wait: self.pool.queue_wait.with_label_values(&[route]),
        }
    }

    /// The open-connections gauge of a listener (`http` or `https`).
    pub fn connections(&self, listener: &str) -> IntGauge {
        self.connections.with_label_values(&[listener])
    }

    /// The counters of the defences against clients that hold resources.
    pub fn abuse(&self) -> Abuse {
        self.abuse.clone()
    }

    /// The counter of access log lines dropped under back-pressure.
    pub fn access_log_dropped(&self) -> IntCounter {
        self.access_log_dropped.clone()
    }

    /// The handshake failure counters of the HTTPS listener.
    pub fn handshake_failures(&self) -> HandshakeFailures {
        HandshakeFailures::new(
            HandshakeFailure::ALL
                .iter()
                .map(|r| self.handshake_failures.with_label_values(&[r.as_str()]))
                .collect(),
        )
    }

    /// Replaces `gateway_upstream_exposed`: one series per route, 1 for the exposed ones.
    pub fn set_exposed<'a>(&self, routes: impl Iterator<Item = (&'a str, bool)>) {
        self.upstream_exposed.reset();
        for (route, exposed) in routes {
            self.upstream_exposed
                .with_label_values(&[route])
                .set(i64::from(exposed));
        }
    }

    /// Records the outcome of a configuration load (startup counts as the first).
    pub fn reload_result(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads.with_label_values(&[result]).inc();
        self.last_reload_ok.set(i64::from(ok));
        if ok {
            self.last_reload_time.set(unix_now());
        }
    }

    /// Replaces the certificate expiry series: one per host, unix seconds.
    pub fn set_cert_expiry(&self, expiries: &[(String, i64)]) {
        self.cert_expiry.reset();
        for (host, not_after) in expiries {
            self.cert_expiry
                .with_label_values(&[host])
                .set(*not_after as f64);
        }
    }

    /// The text exposition (format 0.0.4) of every family.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 << 10);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::warn!("event=metrics_encode_failed error={e}");
        }
        out
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exported_from_the_start() {
        let m = Metrics::new("1.2.3").expect("metrics");
        let r = m.route("voice");
        r.request(&http::Method::POST, 200, 0.2, 10, 20);
        r.request(
            &http::Method::from_bytes(b"PURGE").expect("method"),
            404,
            0.01,
            0,
            5,
        );
        r.rejected(Reject::RateLimit);
        let text = String::from_utf8(m.encode()).expect("utf8");
        for line in [
            "gateway_requests_total{code=\"200\",method=\"POST\",route=\"voice\"} 1",
            "gateway_requests_total{code=\"404\",method=\"OTHER\",route=\"voice\"} 1",
            "gateway_rejected_total{reason=\"rate_limit\",route=\"voice\"} 1",
            "gateway_rejected_total{reason=\"body_too_large\",route=\"voice\"} 0",
            "gateway_upstream_errors_total{kind=\"connect\",route=\"voice\"} 0",
            "gateway_config_reloads_total{result=\"failure\"} 0",
            "gateway_config_last_reload_successful 1",
            "gateway_open_connections{listener=\"https\"} 0",
            "gateway_build_info{version=\"1.2.3\"} 1",
            "gateway_tls_handshake_failures_total{reason=\"certificate_rejected\"} 0",
            "gateway_request_body_bytes_total{route=\"voice\"} 10",
            "gateway_request_duration_seconds_bucket{route=\"voice\",le=\"3600\"} 2",
        ] {
            assert!(text.contains(line), "missing {line}\n{text}");
        }
        assert!(Arc::ptr_eq(&r, &m.route("voice")), "series are reused");
    }

    /// What the request path pays per request: a measurement, not a test (a speed is
    /// measured, never asserted). docs/performance.md quotes the release figure:
    /// `cargo test --release --lib recording_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement; run it explicitly with --ignored"]
    fn recording_cost_per_request() {
        let m = Metrics::new("test").expect("metrics");
        let r = m.route("voice");
        const N: u32 = 1_000_000;
        let started = std::time::Instant::now();
        for i in 0..N {
            r.in_flight.inc();
            let status = if i % 10 == 0 { 404 } else { 200 };
            r.request(&http::Method::GET, status, 0.003, 0, 512);
            r.in_flight.dec();
        }
        let per = started.elapsed() / N;
        eprintln!("metrics recording: {per:?} per request");
    }
}
