//! The series of managed apps (issue 29): `gateway_app_state`, `gateway_app_starts_total`,
//! `gateway_app_start_seconds`, `gateway_app_waiting`, `gateway_app_stops_total` and
//! `gateway_gpu_memory_bytes`. Resolved per app when it is first configured; only the
//! coordinator and held requests move them.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Start time buckets: 100 ms to 10 min (model loading is slow).
const START_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

pub(super) struct AppFamilies {
    state: IntGaugeVec,
    starts: IntCounterVec,
    start_seconds: HistogramVec,
    waiting: IntGaugeVec,
    stops: IntCounterVec,
    pub(super) gpu_memory: IntGaugeVec,
}

impl AppFamilies {
    pub(super) fn new(registry: &Registry) -> Result<AppFamilies, prometheus::Error> {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let start_seconds = HistogramVec::new(
            HistogramOpts::new(
                "gateway_app_start_seconds",
                "Time from an app's start to its first good ready check.",
            )
            .buckets(START_BUCKETS.to_vec()),
            &["app"],
        )?;
        registry.register(Box::new(start_seconds.clone()))?;
        Ok(AppFamilies {
            state: gauge(
                "gateway_app_state",
                "1 for the state the app is in (stopped, starting, ready, draining, stopping), 0 for the others.",
                &["app", "state"],
            )?,
            starts: counter(
                "gateway_app_starts_total",
                "Starts of the app by result (ok: it became ready; failed: it exited or timed out).",
                &["app", "result"],
            )?,
            start_seconds,
            waiting: gauge(
                "gateway_app_waiting",
                "Requests held until the app is ready.",
                &["app"],
            )?,
            stops: counter(
                "gateway_app_stops_total",
                "Stops of the app by reason (idle, room, exclusive, failed, operator, exit).",
                &["app", "reason"],
            )?,
            gpu_memory: gauge(
                "gateway_gpu_memory_bytes",
                "GPU memory by device: the budget, the memory declared by the apps running on it, and what the driver measures (with NVML).",
                &["device", "kind"],
            )?,
        })
    }

    /// One app's series: a gauge per state and a counter per stop reason, in the order
    /// given (the first state is the one it starts in).
    pub(super) fn app(&self, app: &str, states: [&str; 5], reasons: [&str; 6]) -> AppSeries {
        let states = states.map(|s| self.state.with_label_values(&[app, s]));
        let stops = reasons.map(|r| self.stops.with_label_values(&[app, r]));
        states[0].set(1);
        AppSeries {
            states,
            ok: self.starts.with_label_values(&[app, "ok"]),
            failed: self.starts.with_label_values(&[app, "failed"]),
            start_seconds: self.start_seconds.with_label_values(&[app]),
            waiting: self.waiting.with_label_values(&[app]),
            stops,
        }
    }
}

/// One app's series.
pub struct AppSeries {
    states: [IntGauge; 5],
    ok: IntCounter,
    failed: IntCounter,
    start_seconds: Histogram,
    pub waiting: IntGauge,
    stops: [IntCounter; 6],
}

impl AppSeries {
    /// The app is in the state at `index` (of the states it was made with).
    pub fn set_state(&self, index: usize) {
        for (i, gauge) in self.states.iter().enumerate() {
            gauge.set(i64::from(i == index));
        }
    }

    pub fn started(&self, ok: bool, took: Option<std::time::Duration>) {
        match ok {
            true => self.ok.inc(),
            false => self.failed.inc(),
        }
        if let Some(took) = took {
            self.start_seconds.observe(took.as_secs_f64());
        }
    }

    /// A stop for the reason at `index`.
    pub fn stopped(&self, index: usize) {
        if let Some(counter) = self.stops.get(index) {
            counter.inc();
        }
    }
}
