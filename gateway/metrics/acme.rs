//! `gateway_acme_orders_total{result}` and
//! `gateway_acme_next_renewal_timestamp_seconds{host}`: set by the ACME service only.

use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};

/// Results of `gateway_acme_orders_total`.
pub const ORDER_RESULTS: [&str; 3] = ["issued", "failed", "rate_limited"];

pub(super) struct AcmeFamilies {
    orders: IntCounterVec,
    next_renewal: GaugeVec,
}

impl AcmeFamilies {
    pub(super) fn new(registry: &Registry) -> Result<AcmeFamilies, prometheus::Error> {
        let orders = IntCounterVec::new(
            Opts::new(
                "gateway_acme_orders_total",
                "ACME certificate orders, by result (issued, failed, rate_limited).",
            ),
            &["result"],
        )?;
        registry.register(Box::new(orders.clone()))?;
        let next_renewal = GaugeVec::new(
            Opts::new(
                "gateway_acme_next_renewal_timestamp_seconds",
                "When the gateway next orders the host's certificate (renewal, or retry after a failure), unix time.",
            ),
            &["host"],
        )?;
        registry.register(Box::new(next_renewal.clone()))?;
        Ok(AcmeFamilies {
            orders,
            next_renewal,
        })
    }
}

impl super::Metrics {
    /// Counts one finished order; `result` is one of `ORDER_RESULTS`.
    pub fn acme_order(&self, result: &str) {
        self.acme.orders.with_label_values(&[result]).inc();
    }

    /// Shows the three results at 0 once ACME is in use.
    pub fn acme_in_use(&self) {
        for result in ORDER_RESULTS {
            self.acme.orders.with_label_values(&[result]).inc_by(0);
        }
    }

    pub fn acme_next_renewal(&self, host: &str, unix_seconds: f64) {
        self.acme
            .next_renewal
            .with_label_values(&[host])
            .set(unix_seconds);
    }

    /// Drops the series of a host no longer ordered.
    pub fn acme_forget(&self, host: &str) {
        let _ = self.acme.next_renewal.remove_label_values(&[host]);
    }
}
