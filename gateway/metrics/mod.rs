//! Prometheus metrics: one owned registry, created once and passed around as an `Arc`.
//!
//! The request path never looks a series up by its labels (which takes the vector's
//! lock): each route's series are resolved when a snapshot is built (`RouteMetrics`),
//! and its per-(method, status) counters once each, on first use. Recording is then a
//! few atomic adds. Labels come from the config only (`route` = a route's name or
//! `_unmatched`), never from traffic, so the series count is bounded by the config.

mod abuse;
mod acme;
mod apps;
mod keys;
mod labels;
mod pool;
mod route;
mod server;
mod store;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use prometheus::core::Collector;
use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

pub use abuse::Abuse;
pub use apps::AppSeries;
pub use keys::KeyCounts;
pub use labels::{HandshakeFailure, HandshakeFailures, Reject, UpstreamError};
pub use pool::{QueueSeries, ReplicaSeries};
pub use route::RouteMetrics;
pub use store::{StoreError, StoreErrors};

/// The `route` label of requests whose host matches no route.
pub const UNMATCHED: &str = "_unmatched";

/// Every metric family of the gateway.
pub struct Metrics {
    registry: Registry,
    traffic: route::TrafficFamilies,
    server: server::ServerFamilies,
    pool: pool::PoolFamilies,
    acme: acme::AcmeFamilies,
    apps: apps::AppFamilies,
    /// `gateway_api_key_requests_total{key, route, code}`.
    key_requests: IntCounterVec,
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

/// Creates families in one registry.
struct Register<'r>(&'r Registry);

impl Register<'_> {
    /// Registers `family` and hands it back.
    fn add<F: Collector + Clone + 'static>(&self, family: F) -> Result<F, prometheus::Error> {
        self.0.register(Box::new(family.clone()))?;
        Ok(family)
    }

    fn counters(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, prometheus::Error> {
        self.add(IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    fn gauges(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, prometheus::Error> {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }
}

impl Metrics {
    /// Creates and registers every family; `version` labels `gateway_build_info`.
    pub fn new(version: &str) -> Result<Arc<Metrics>, prometheus::Error> {
        let registry = Registry::new();
        let register = Register(&registry);
        let traffic = route::TrafficFamilies::new(&register)?;
        let server = server::ServerFamilies::new(&register, version)?;
        let pool = pool::PoolFamilies::new(&registry)?;
        let acme = acme::AcmeFamilies::new(&registry)?;
        let apps = apps::AppFamilies::new(&registry)?;
        let key_requests = keys::family(&register)?;
        let store_errors = store::family(&registry)?;
        let abuse = Abuse::new(&registry)?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Arc::new(Metrics {
            registry,
            traffic,
            server,
            pool,
            acme,
            apps,
            key_requests,
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

    /// The API-key counts of route `route`, for `keys` keys (each key's series created
    /// on its first request there).
    pub fn key_counts(&self, route: &str, keys: usize) -> KeyCounts {
        KeyCounts::new(self.key_requests.clone(), route, keys)
    }

    /// The series of a managed app, with its state and stop-reason labels in order.
    pub fn app(&self, app: &str, states: [&str; 5], reasons: [&str; 6]) -> AppSeries {
        self.apps.app(app, states, reasons)
    }

    /// `gateway_gpu_memory_bytes{device, kind}`.
    pub fn set_gpu_memory(&self, device: u32, kind: &str, bytes: u64) {
        let device = device.to_string();
        let gauge = self
            .apps
            .gpu_memory
            .with_label_values(&[device.as_str(), kind]);
        gauge.set(i64::try_from(bytes).unwrap_or(i64::MAX));
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

    /// The counters of the defences against clients that hold resources.
    pub fn abuse(&self) -> Abuse {
        self.abuse.clone()
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
