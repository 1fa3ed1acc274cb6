//! `Step`: what one check of the request phase decided. The phase is a list of checks;
//! the first whose step is `Answered` ends it.

use crate::metrics::Reject;

/// The outcome of one check of the request phase.
#[must_use]
pub enum Step {
    /// Go on to the next check.
    Next,
    /// The client has had its answer (the gateway's page, a redirect, or the app's
    /// through a WebSocket tunnel): nothing more is proxied. The reason is counted in
    /// `gateway_rejected_total` and logged; `None` for an answer that rejects nothing.
    Answered(Option<Reject>),
}
