//! The counters of the defences against clients that hold the gateway's resources:
//! connections refused over a cap, requests ended because the client stopped reading or
//! left an upload, and HTTP/2 streams the client reset.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// One handle per series, cloned into the listeners and the proxy.
#[derive(Clone)]
pub struct Abuse {
    /// A connection from an address already at `limits.max_connections_per_client`.
    pub refused_per_client: IntCounter,
    /// A connection while `limits.max_connections` were open.
    pub refused_total: IntCounter,
    /// The client accepted no byte of its answer for `limits.send_timeout`.
    pub send_timeout: IntCounter,
    /// An upload whose client left while the app was not reading: the app's connection
    /// was closed.
    pub client_gone: IntCounter,
    /// An upload that made no progress toward the app for `limits.body_timeout` while
    /// bytes waited for the app (it stopped reading).
    pub body_stalled: IntCounter,
    /// HTTP/2 streams the client reset before the answer, the app never asked.
    pub reset_before_app: IntCounter,
    /// The same, after the request had gone to the app (its connection was closed).
    pub reset_after_app: IntCounter,
    /// HTTP/2 connections sent GOAWAY for resetting too many streams.
    pub reset_flood: IntCounter,
}

impl Abuse {
    /// Registers the families in `registry`, every series at 0.
    pub(super) fn new(registry: &Registry) -> Result<Abuse, prometheus::Error> {
        let family = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let refused = family(
            "gateway_connections_refused_total",
            "Client connections closed at once because a cap was reached: per_client (limits.max_connections_per_client) or total (limits.max_connections).",
            "reason",
        )?;
        let aborted = family(
            "gateway_aborted_total",
            "Requests the gateway ended because the client held resources: send_timeout (accepted nothing for limits.send_timeout), client_gone (left an upload the app was not reading), body_stalled (an upload made no progress toward the app for limits.body_timeout).",
            "reason",
        )?;
        let resets = family(
            "gateway_h2_client_resets_total",
            "HTTP/2 streams the client reset before their answer: app=\"no\" when the app was never asked, \"yes\" when its request was cancelled.",
            "app",
        )?;
        let floods = IntCounter::new(
            "gateway_h2_reset_floods_total",
            "HTTP/2 connections sent GOAWAY because their client reset more than 100 streams in a second, on the connection or on all its address's connections together.",
        )?;
        registry.register(Box::new(floods.clone()))?;
        Ok(Abuse {
            refused_per_client: refused.with_label_values(&["per_client"]),
            refused_total: refused.with_label_values(&["total"]),
            send_timeout: aborted.with_label_values(&["send_timeout"]),
            client_gone: aborted.with_label_values(&["client_gone"]),
            body_stalled: aborted.with_label_values(&["body_stalled"]),
            reset_before_app: resets.with_label_values(&["no"]),
            reset_after_app: resets.with_label_values(&["yes"]),
            reset_flood: floods,
        })
    }

    /// Counters that count but are not exported (no metrics listener).
    pub fn unregistered() -> Abuse {
        // A fresh registry per call: nothing reads it.
        match Abuse::new(&Registry::new()) {
            Ok(abuse) => abuse,
            // Fixed names and help texts: registration in an empty registry cannot fail.
            Err(e) => unreachable!("metric definitions are valid: {e}"),
        }
    }
}
