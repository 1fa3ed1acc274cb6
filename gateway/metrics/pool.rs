//! The series of replicas and queues: `gateway_upstream_up`, `gateway_upstream_in_flight`
//! (per route and replica), `gateway_queue_depth` and `gateway_queue_wait_seconds` (per
//! route). Resolved when a replica or a route is first built; the request path only
//! moves the gauges.

use std::net::SocketAddr;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Queue wait buckets, 10 ms to 5 min (`queue.timeout` is 30 s by default).
const WAIT_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

pub(super) struct PoolFamilies {
    up: IntGaugeVec,
    in_flight: IntGaugeVec,
    pub(super) queue_depth: IntGaugeVec,
    pub(super) queue_wait: HistogramVec,
}

impl PoolFamilies {
    pub(super) fn new(registry: &Registry) -> Result<PoolFamilies, prometheus::Error> {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        let up = gauge(
            "gateway_upstream_up",
            "1 when the replica takes requests, 0 when health checks or failed connects ejected it.",
            &["route", "upstream"],
        )?;
        let in_flight = gauge(
            "gateway_upstream_in_flight",
            "Requests in progress on the replica (WebSockets not counted).",
            &["route", "upstream"],
        )?;
        let queue_depth = gauge(
            "gateway_queue_depth",
            "Requests waiting for a replica under max_concurrent.",
            &["route"],
        )?;
        let queue_wait = HistogramVec::new(
            HistogramOpts::new(
                "gateway_queue_wait_seconds",
                "Time a request of a route with max_concurrent waited for a replica (0: none).",
            )
            .buckets(WAIT_BUCKETS.to_vec()),
            &["route"],
        )?;
        registry.register(Box::new(queue_wait.clone()))?;
        Ok(PoolFamilies {
            up,
            in_flight,
            queue_depth,
            queue_wait,
        })
    }

    pub(super) fn replica(&self, route: &str, addr: SocketAddr) -> ReplicaSeries {
        let upstream = addr.to_string();
        ReplicaSeries {
            up: self.up.with_label_values(&[route, &upstream]),
            in_flight: self.in_flight.with_label_values(&[route, &upstream]),
            families: (self.up.clone(), self.in_flight.clone()),
            labels: [route.to_string(), upstream],
        }
    }
}

/// One replica's two series.
pub struct ReplicaSeries {
    pub up: IntGauge,
    pub in_flight: IntGauge,
    families: (IntGaugeVec, IntGaugeVec),
    labels: [String; 2],
}

impl ReplicaSeries {
    /// Removes both series (the replica left the configuration and finished).
    pub fn remove(&self) {
        let labels = [self.labels[0].as_str(), self.labels[1].as_str()];
        let _ = self.families.0.remove_label_values(&labels);
        let _ = self.families.1.remove_label_values(&labels);
    }
}

/// A route's queue series.
pub struct QueueSeries {
    pub depth: IntGauge,
    pub wait: Histogram,
}
