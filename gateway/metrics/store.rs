//! `gateway_limits_store_errors_total{kind}`: limited requests decided without the
//! shared store (by `limits_store.on_error`), by why.

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// Why a call to the shared store gave no answer: the error of `limits_store`'s calls,
/// and the `kind` label it is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No answer within `limits_store.timeout`.
    #[error("no answer within limits_store.timeout")]
    Timeout,
    /// The server could not be reached, or the connection was lost.
    #[error("the store could not be reached")]
    Connection,
    /// The server answered with an error (out of memory, wrong password, ...).
    #[error("the store answered with an error")]
    Response,
    /// Not asked: the server failed moments ago and is being retried by one request
    /// at a time (see `limits_store::breaker`).
    #[error("the store is in backoff after a failure")]
    Backoff,
}

impl StoreError {
    pub const ALL: [StoreError; 4] = [
        StoreError::Timeout,
        StoreError::Connection,
        StoreError::Response,
        StoreError::Backoff,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StoreError::Timeout => "timeout",
            StoreError::Connection => "connection",
            StoreError::Response => "response",
            StoreError::Backoff => "backoff",
        }
    }
}

/// The counter of each kind, resolved once.
#[derive(Clone)]
pub struct StoreErrors([IntCounter; 4]);

impl StoreErrors {
    pub fn inc(&self, kind: StoreError) {
        self.0[kind as usize].inc();
    }
}

pub(super) fn family(registry: &Registry) -> Result<IntCounterVec, prometheus::Error> {
    let errors = IntCounterVec::new(
        Opts::new(
            "gateway_limits_store_errors_total",
            "Limited requests decided without the shared limits store (by limits_store.on_error), by kind (timeout, connection, response, backoff).",
        ),
        &["kind"],
    )?;
    registry.register(Box::new(errors.clone()))?;
    // Shown at 0 from the start, with or without a store: alerts and dashboards need the
    // series to exist before the first failure.
    for kind in StoreError::ALL {
        errors.with_label_values(&[kind.as_str()]).inc_by(0);
    }
    Ok(errors)
}

impl super::Metrics {
    /// The store's counters, resolved once.
    pub fn store_errors(&self) -> StoreErrors {
        StoreErrors(StoreError::ALL.map(|k| self.store_errors.with_label_values(&[k.as_str()])))
    }
}
