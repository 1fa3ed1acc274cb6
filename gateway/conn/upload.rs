//! An upload whose app has stopped reading. Pingora then stops reading the client (its
//! body channel is full), so it sees neither the client leave nor the body stall, and
//! holds both connections until its write and read timeouts (2 h by default). While a
//! request body is still coming, a watch looks every `CHECK`:
//! - at the client's socket: closed or reset by the client, the app's connection is cut
//!   (reset, so the kernel drops what is queued for it) and the request ends;
//! - at the body's progress: no byte passed toward the app for `limits.body_timeout`,
//!   the same. With bytes still queued for the app, the app stopped reading: the client
//!   gets 504, as from nginx's `proxy_send_timeout`. With none, the client stopped
//!   sending: 408, as from `client_body_timeout` (HTTP/1.x is cut by its read timeout
//!   first; HTTP/2 bodies have none in Pingora 0.9, so this is their bound).
//!
//! The watch ends with the body, or with the request (its handle is dropped). It holds a
//! duplicate of the app's socket (`socket::Held`), so what it cuts is that socket even
//! if the proxy has closed its own descriptor meanwhile; the client's socket is known
//! by its cookie.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pingora::protocols::SocketDigest;
use pingora::proxy::Session;
use tokio::time::Instant;

use super::socket::{self, Held, TCP_CLOSE_WAIT, TCP_ESTABLISHED};
use crate::metrics::Abuse;

/// How often a watch looks at the client and the body.
const CHECK: Duration = Duration::from_millis(250);

const RUNNING: u8 = 0;
const CLIENT_GONE: u8 = 1;
const APP_STALLED: u8 = 2;
const CLIENT_STALLED: u8 = 3;

/// The request's handle on its watch; dropping it ends the watch.
pub struct UploadWatch {
    state: Arc<State>,
}

struct State {
    /// Body bytes passed on so far.
    seen: AtomicU64,
    /// The body is complete: nothing left to watch.
    done: AtomicBool,
    /// `RUNNING`, or why the app's connection was cut.
    cut: AtomicU8,
}

/// Why a watch cut an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The client closed or reset its connection.
    ClientGone,
    /// No progress, and bytes wait in the app's socket: the app stopped reading.
    AppStalled,
    /// No progress, and nothing waits for the app: the client stopped sending (an
    /// HTTP/2 stream; HTTP/1.x is cut by its read timeout first).
    ClientStalled,
}

impl Cut {
    /// The status the request is answered and recorded with: none for a client that is
    /// gone, 504 for an app that stopped reading (nginx's `proxy_send_timeout`), 408 for
    /// a client that stopped sending (`client_body_timeout`).
    pub fn status(self) -> u16 {
        match self {
            Cut::ClientGone => 0,
            Cut::AppStalled => 504,
            Cut::ClientStalled => 408,
        }
    }
}

/// The client's connection: its socket digest (shared by the HTTP/2 streams of one
/// connection) and the cookie of the socket it had when the watch began.
struct Client {
    digest: Arc<SocketDigest>,
    cookie: u64,
}

impl Client {
    /// Whether the client reset or closed its connection. A client that only sent FIN
    /// (half-close, CLOSE_WAIT) may still have bytes on the way to the app: the proxy
    /// reads them, and ends the request itself at the end of what was sent if the body
    /// is short; while the app is not reading, the stall rule applies.
    fn gone(&self) -> bool {
        // A closed connection's descriptor may be another socket by now: only the same
        // socket counts, and a socket that is no more is gone.
        match self.digest.socket_cookie() {
            Ok(cookie) if cookie == self.cookie => self
                .digest
                .tcp_info()
                .is_some_and(|i| !matches!(i.tcpi_state, TCP_ESTABLISHED | TCP_CLOSE_WAIT)),
            _ => true,
        }
    }
}

impl UploadWatch {
    /// A watch for the request of `session` if its body is still to come (not for an
    /// upgraded connection), going to the app on `app_fd`.
    pub fn watch(
        session: &mut Session,
        app_fd: i32,
        stall: Duration,
        abuse: &Abuse,
    ) -> Option<UploadWatch> {
        if session.as_downstream_mut().is_body_done() || session.was_upgraded() {
            return None;
        }
        let client = session.digest().and_then(|d| d.socket_digest.as_ref());
        UploadWatch::start(client, app_fd, stall, abuse)
    }

    /// Starts watching an upload to the app on `app_fd`; `None` when a socket cannot be
    /// identified (then Pingora's timeouts are the bound).
    fn start(
        client: Option<&Arc<SocketDigest>>,
        app_fd: i32,
        stall: Duration,
        abuse: &Abuse,
    ) -> Option<UploadWatch> {
        let client = client.and_then(|digest| {
            let cookie = digest.socket_cookie().ok()?;
            Some(Client {
                digest: digest.clone(),
                cookie,
            })
        });
        let app = Held::dup(app_fd)?;
        let state = Arc::new(State {
            seen: AtomicU64::new(0),
            done: AtomicBool::new(false),
            cut: AtomicU8::new(RUNNING),
        });
        tokio::spawn(watch(state.clone(), client, app, stall, abuse.clone()));
        Some(UploadWatch { state })
    }

    /// `total` body bytes have passed toward the app; `end`: the body is complete.
    pub fn progress(&self, total: u64, end: bool) {
        self.state.seen.store(total, Ordering::Relaxed);
        if end {
            self.state.done.store(true, Ordering::Relaxed);
        }
    }

    /// Why the watch cut the app's connection, if it did.
    pub fn cut(&self) -> Option<Cut> {
        match self.state.cut.load(Ordering::Relaxed) {
            CLIENT_GONE => Some(Cut::ClientGone),
            APP_STALLED => Some(Cut::AppStalled),
            CLIENT_STALLED => Some(Cut::ClientStalled),
            _ => None,
        }
    }
}

async fn watch(
    state: Arc<State>,
    client: Option<Client>,
    app: Held,
    stall: Duration,
    abuse: Abuse,
) {
    let mut tick = tokio::time::interval(CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = 0;
    let mut moved = Instant::now();
    loop {
        tick.tick().await;
        // The request is over (its handle dropped) or its body complete.
        if Arc::strong_count(&state) == 1 || state.done.load(Ordering::Relaxed) {
            return;
        }
        let now_seen = state.seen.load(Ordering::Relaxed);
        let progressed = now_seen != seen;
        if progressed {
            seen = now_seen;
            moved = Instant::now();
        }
        let why = if client.as_ref().is_some_and(Client::gone) {
            CLIENT_GONE
        } else if progressed || moved.elapsed() < stall {
            continue;
        } else if socket::unsent(app.fd()) > 0 {
            APP_STALLED
        } else {
            CLIENT_STALLED
        };
        match why {
            CLIENT_GONE => abuse.client_gone.inc(),
            APP_STALLED => abuse.body_stalled.inc(),
            _ => {}
        }
        state.cut.store(why, Ordering::Relaxed);
        socket::cut(app.fd());
        return;
    }
}
