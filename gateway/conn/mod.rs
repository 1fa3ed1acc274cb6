//! Client connections as a whole, beside the requests on them: the caps on how many one
//! address and all clients may hold (`caps`), HTTP/2 streams the client resets
//! (`h2`), uploads whose app stopped reading (`upload`), and what the kernel says
//! about a socket (`socket`). The listeners' wrappers that apply them are in
//! `listener.rs`; the send deadline of HTTP/1.x in `deadline.rs`.

pub mod caps;
pub mod h2;
pub mod socket;
pub mod upload;

use std::sync::Arc;
use std::time::Duration;

use pingora::protocols::http::ServerSession;
use pingora::proxy::Session;

use crate::metrics::Abuse;

/// The connection state shared by every configuration (counts survive a reload).
pub struct Connections {
    pub open: Arc<caps::Open>,
    pub h2: Arc<h2::H2Conns>,
    pub abuse: Abuse,
}

impl Connections {
    pub fn new(abuse: Abuse) -> Connections {
        Connections {
            open: Arc::default(),
            h2: Arc::default(),
            abuse,
        }
    }

    /// Counts what ended the request of `session` on its connection's side: an HTTP/2
    /// stream the client reset (`reset_early`: before the app was asked; `asked`: the
    /// app was connected), or a send timeout. Returns whether the request gets its
    /// access-log line (not a reset stream of a flooding connection).
    pub fn ended(
        &self,
        session: &Session,
        error: Option<&pingora::Error>,
        reset_early: bool,
        asked: bool,
    ) -> bool {
        if h2::send_timed_out(session, error) {
            self.abuse.send_timeout.inc();
        }
        let reset = reset_early || h2::reset_error(session, error);
        !(reset && self.h2.counted(session, asked, &self.abuse))
    }
}

/// HTTP/2 has no per-write progress to time (Pingora times each piece of an answer as a
/// whole, waiting for the stream's window included): the pieces of an answer get
/// `send_timeout` plus the time its largest piece so far takes at `SLOW_READER` bytes a
/// second, so a client reading that fast is never cut and a stream whose window stays
/// shut is cut after `send_timeout` plus at most 66 s (Pingora's pieces are at most
/// 64 KiB).
pub const SLOW_READER: u64 = 1000;

/// Makes the time an HTTP/2 answer's pieces may take at least enough for one of `len`
/// bytes (no-op on HTTP/1.x, whose stream holds the deadline itself). It only grows
/// within a stream: Pingora may run the filter on several queued pieces before writing
/// them, each with the timeout set last.
pub fn pace_h2(session: &mut Session, send_timeout: Duration, len: usize) {
    if let ServerSession::H2(h2) = session.as_downstream_mut() {
        let allowed = send_timeout + Duration::from_millis(len as u64 * 1000 / SLOW_READER);
        if h2.write_timeout.is_none_or(|now| now < allowed) {
            h2.set_write_timeout(Some(allowed));
        }
    }
}
