//! `Step`: what one check of the request phase decided. The phase is a list of checks;
//! the first whose step is `Answered` ends it.

use pingora::Error;

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

/// A check that failed. When it failed writing its answer (the client left), the
/// reason of that answer is still counted: the gateway did reject the request.
pub struct Failed {
    pub reason: Option<Reject>,
    pub error: Box<Error>,
}

impl From<Box<Error>> for Failed {
    fn from(error: Box<Error>) -> Failed {
        Failed {
            reason: None,
            error,
        }
    }
}

/// What a check returns.
pub type Checked = Result<Step, Failed>;

/// `Answered(reason)` once `written` went out, else the write's error with the reason.
pub fn answered(reason: Option<Reject>, written: pingora::Result<()>) -> Checked {
    match written {
        Ok(()) => Ok(Step::Answered(reason)),
        Err(error) => Err(Failed { reason, error }),
    }
}
