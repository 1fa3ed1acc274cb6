//! The gateway's own series: open connections by listener, configuration reloads,
//! certificates and TLS handshakes, dropped access log lines, and the build.

use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};

use super::labels::{HandshakeFailure, HandshakeFailures};
use super::{Metrics, Register};

pub(super) struct ServerFamilies {
    connections: IntGaugeVec,
    reloads: IntCounterVec,
    last_reload_ok: IntGauge,
    last_reload_time: Gauge,
    cert_expiry: GaugeVec,
    handshake_failures: IntCounterVec,
    access_log_dropped: IntCounter,
    access_log_unwritten: IntCounter,
}

impl ServerFamilies {
    /// Every series that has a known set of labels starts at 0 (or, for the reload
    /// gauges, as the first load's success); `version` labels `gateway_build_info`.
    pub(super) fn new(
        register: &Register,
        version: &str,
    ) -> Result<ServerFamilies, prometheus::Error> {
        let connections = register.gauges(
            "gateway_open_connections",
            "Open client connections, by listener.",
            &["listener"],
        )?;
        for listener in ["http", "https"] {
            connections.with_label_values(&[listener]).set(0);
        }
        let reloads = register.counters(
            "gateway_config_reloads_total",
            "Configuration reloads, by result.",
            &["result"],
        )?;
        for result in ["success", "failure"] {
            reloads.with_label_values(&[result]).reset();
        }
        let last_reload_ok = register.add(IntGauge::new(
            "gateway_config_last_reload_successful",
            "1 if the last configuration load succeeded.",
        )?)?;
        last_reload_ok.set(1);
        let last_reload_time = register.add(Gauge::new(
            "gateway_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load.",
        )?)?;
        last_reload_time.set(unix_now());
        let handshake_failures = register.counters(
            "gateway_tls_handshake_failures_total",
            "Client TLS handshakes that failed, by reason.",
            &["reason"],
        )?;
        for reason in HandshakeFailure::ALL {
            let failures = handshake_failures.with_label_values(&[reason.as_str()]);
            failures.reset();
        }
        let build_info = register.gauges(
            "gateway_build_info",
            "Always 1; labelled with the version.",
            &["version"],
        )?;
        build_info.with_label_values(&[version]).set(1);
        Ok(ServerFamilies {
            connections,
            reloads,
            last_reload_ok,
            last_reload_time,
            cert_expiry: register.add(GaugeVec::new(
                Opts::new(
                    "gateway_tls_certificate_expiry_timestamp_seconds",
                    "notAfter of the certificate served for each host, unix time.",
                ),
                &["host"],
            )?)?,
            handshake_failures,
            access_log_dropped: register.add(IntCounter::new(
                "gateway_access_log_dropped_total",
                "Access log lines dropped because the writer could not keep up.",
            )?)?,
            access_log_unwritten: register.add(IntCounter::new(
                "gateway_access_log_unwritten_total",
                "Access log lines lost because the file refused them (a full disk, an I/O error).",
            )?)?,
        })
    }
}

impl Metrics {
    /// The open-connections gauge of a listener (`http` or `https`).
    pub fn connections(&self, listener: &str) -> IntGauge {
        self.server.connections.with_label_values(&[listener])
    }

    /// The counter of access log lines dropped under back-pressure.
    pub fn access_log_dropped(&self) -> IntCounter {
        self.server.access_log_dropped.clone()
    }

    /// The counter of access log lines the file refused.
    pub fn access_log_unwritten(&self) -> IntCounter {
        self.server.access_log_unwritten.clone()
    }

    /// The handshake failure counters of the HTTPS listener.
    pub fn handshake_failures(&self) -> HandshakeFailures {
        HandshakeFailures::new(
            HandshakeFailure::ALL
                .iter()
                .map(|r| {
                    self.server
                        .handshake_failures
                        .with_label_values(&[r.as_str()])
                })
                .collect(),
        )
    }

    /// Counts a reload's outcome; `healthy`: no failure is pending (the gauge
    /// `gateway_config_last_reload_successful`).
    pub fn reload_result(&self, ok: bool, healthy: bool) {
        let result = if ok { "success" } else { "failure" };
        self.server.last_reload_ok.set(i64::from(healthy));
        if ok {
            self.server.last_reload_time.set(unix_now());
        }
        self.server.reloads.with_label_values(&[result]).inc();
    }

    /// Replaces the certificate expiry series: one per host, unix seconds.
    pub fn set_cert_expiry(&self, expiries: &[(String, i64)]) {
        let family = &self.server.cert_expiry;
        family.reset();
        for (host, not_after) in expiries {
            family.with_label_values(&[host]).set(*not_after as f64);
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
