//! HTTP/2 streams the client resets before their answer (CVE-2023-44487, "rapid reset",
//! and its paced form that stays under the h2 layer's own counters).
//!
//! - A stream already reset when its request is about to go to the app is dropped there:
//!   no app connection is opened and the app never sees it (`reset_before_app`).
//! - A stream reset while the app works on it is cancelled by Pingora (the app's
//!   connection is closed); the gateway counts it (`counted`).
//! - A connection whose client resets more than `FLOOD` streams within a second, on it
//!   or on all the connections of its address together (an IPv6 client by its prefix),
//!   is sent GOAWAY: each HTTP/2 connection is served under a shutdown signal of its own, which
//!   Pingora answers with a graceful GOAWAY, so streams already open may finish and no
//!   new one is accepted. From then on its reset streams write no access-log line each;
//!   the gateway's log gets one line for the connection when it closes, with the count.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pingora::protocols::http::ServerSession;
use pingora::protocols::SocketDigest;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};
use tokio::sync::{watch, Notify};

use crate::limits::client_bucket;
use crate::metrics::Abuse;

/// Client-reset streams per second above which a connection gets GOAWAY. A browser
/// resets a few streams when a page is left (pending images, a cancelled fetch); nginx
/// and h2o trip their own guards at a comparable count.
pub const FLOOD: u32 = 100;
const WINDOW: Duration = Duration::from_secs(1);
/// How long a flagged connection's streams may finish after its GOAWAY before the
/// connection is closed.
const GOAWAY_GRACE: Duration = Duration::from_secs(5);

/// Ended connections' entries are swept when the table reaches this size, and each
/// doubling after.
const SWEEP_AT: usize = 256;
/// Addresses whose reset counts are kept before the stale ones are swept.
const CLIENTS_KEPT: usize = 4096;

/// The HTTP/2 connections open now, by the identity of their socket digest (shared by
/// every stream of a connection, see `Session::digest`); and the reset counts of the
/// addresses that reset streams lately, so that spreading resets over many connections
/// does not escape the limit.
#[derive(Default)]
pub struct H2Conns {
    by_digest: Mutex<HashMap<usize, Entry>>,
    by_client: Mutex<Clients>,
}

/// The addresses' windows, and when they were last swept (at most once a window).
#[derive(Default)]
struct Clients {
    windows: HashMap<IpAddr, Window>,
    swept: Option<Instant>,
}

/// An entry of `by_digest`: the connection's state and its digest, which its streams'
/// sessions keep alive after the connection itself has ended (their last log lines still
/// find the entry; a later connection cannot have the same digest address until then).
struct Entry {
    conn: Arc<H2Conn>,
    digest: Weak<SocketDigest>,
}

/// Resets counted in the current one-second window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    count: u32,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            start: now,
            count: 0,
        }
    }

    /// Counts one reset at `now`; whether the window now holds more than `FLOOD`.
    fn count(&mut self, now: Instant) -> bool {
        if now.duration_since(self.start) >= WINDOW {
            *self = Window::new(now);
        }
        self.count += 1;
        self.count > FLOOD
    }
}

/// One HTTP/2 connection's reset count and its GOAWAY switch.
pub struct H2Conn {
    /// Pingora's shutdown signal for this connection: `true` sends GOAWAY.
    goaway: watch::Sender<bool>,
    peer: Option<SocketAddr>,
    /// The client's address as limits key it (an IPv6 client by its prefix).
    client: Option<IpAddr>,
    window: Mutex<Window>,
    flagged: AtomicBool,
    /// Woken when the connection is flagged (`Registration::closing`).
    flag: Notify,
    resets: AtomicU64,
    unlogged: AtomicU64,
}

/// Removes its connection from `H2Conns` when the connection ends, and logs the
/// summary of a flagged one.
pub struct Registration {
    conns: Arc<H2Conns>,
    key: usize,
    conn: Arc<H2Conn>,
}

fn key(digest: &Arc<SocketDigest>) -> usize {
    Arc::as_ptr(digest) as usize
}

impl H2Conns {
    /// Registers a new connection; `shutdown` is the listener's signal, which the
    /// connection's own signal (returned) follows.
    pub fn open(
        self: &Arc<Self>,
        digest: Option<&Arc<SocketDigest>>,
        shutdown: bool,
        ipv6_prefix: u8,
    ) -> (Option<Registration>, watch::Receiver<bool>) {
        // Made `false` and then set, so that Pingora sees a change even for a connection
        // that arrives while the listener is already shutting down.
        let (goaway, signal) = watch::channel(false);
        if shutdown {
            goaway.send_replace(true);
        }
        let Some(digest) = digest else {
            return (None, signal);
        };
        let peer = digest.peer_addr().and_then(|a| a.as_inet()).copied();
        let conn = Arc::new(H2Conn {
            goaway,
            peer,
            client: peer.map(|p| client_bucket(p.ip(), ipv6_prefix)),
            window: Mutex::new(Window::new(Instant::now())),
            flagged: AtomicBool::new(false),
            flag: Notify::new(),
            resets: AtomicU64::new(0),
            unlogged: AtomicU64::new(0),
        });
        let key = key(digest);
        let entry = Entry {
            conn: conn.clone(),
            digest: Arc::downgrade(digest),
        };
        let mut by_digest = self.by_digest.lock();
        if by_digest.len() >= SWEEP_AT && by_digest.len().is_power_of_two() {
            by_digest.retain(|_, e| e.digest.strong_count() > 0);
        }
        by_digest.insert(key, entry);
        drop(by_digest);
        let registration = Registration {
            conns: self.clone(),
            key,
            conn,
        };
        (Some(registration), signal)
    }

    fn of(&self, session: &Session) -> Option<Arc<H2Conn>> {
        let digest = session.digest()?.socket_digest.as_ref()?;
        let by_digest = self.by_digest.lock();
        by_digest.get(&key(digest)).map(|e| e.conn.clone())
    }

    /// Counts a stream of `session` the client reset; `app`: whether its request had
    /// gone to the app. Returns whether its access-log line is to be left out (the
    /// connection is flagged).
    pub fn counted(&self, session: &Session, app: bool, abuse: &Abuse) -> bool {
        if app {
            abuse.reset_after_app.inc();
        } else {
            abuse.reset_before_app.inc();
        }
        let Some(conn) = self.of(session) else {
            return false;
        };
        conn.resets.fetch_add(1, Ordering::Relaxed);
        if conn.flagged.load(Ordering::Relaxed) {
            conn.unlogged.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        let now = Instant::now();
        let over = conn.window.lock().count(now) | self.client_over(conn.client, now);
        if !over {
            return false;
        }
        conn.unlogged.fetch_add(1, Ordering::Relaxed);
        if !conn.flagged.swap(true, Ordering::Relaxed) {
            abuse.reset_flood.inc();
            conn.goaway.send_replace(true);
            conn.flag.notify_one();
            log::warn!(
                "event=h2_reset_flood client={} resets_per_second>{FLOOD} action=goaway",
                shown(conn.peer),
            );
        }
        true
    }
}

impl H2Conns {
    /// Counts a reset for `client` across its connections; whether it is over `FLOOD`.
    fn client_over(&self, client: Option<IpAddr>, now: Instant) -> bool {
        let Some(client) = client else { return false };
        let mut clients = self.by_client.lock();
        if clients.windows.len() >= CLIENTS_KEPT && !clients.windows.contains_key(&client) {
            if clients
                .swept
                .is_none_or(|at| now.duration_since(at) >= WINDOW)
            {
                clients.swept = Some(now);
                clients
                    .windows
                    .retain(|_, w| now.duration_since(w.start) < WINDOW);
            }
            if clients.windows.len() >= CLIENTS_KEPT {
                // Thousands of addresses resetting at once: the per-connection count
                // still holds.
                return false;
            }
        }
        clients
            .windows
            .entry(client)
            .or_insert_with(|| Window::new(now))
            .count(now)
    }
}

impl Registration {
    /// Ends once the connection has been flagged and given `GOAWAY_GRACE` to close: a
    /// client that ignores the GOAWAY (never acknowledges its PING, so the final GOAWAY
    /// never goes) loses the connection then.
    pub async fn closing(&self) {
        self.conn.flag.notified().await;
        tokio::time::sleep(GOAWAY_GRACE).await;
    }

    /// Passes the listener's shutdown on to this connection's signal.
    pub fn follow(&self, shutdown: bool) {
        if shutdown {
            self.conn.goaway.send_replace(true);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        {
            // Streams still finishing keep the entry (swept once their digest is gone).
            let mut by_digest = self.conns.by_digest.lock();
            if by_digest
                .get(&self.key)
                .is_some_and(|e| e.digest.strong_count() == 0)
            {
                by_digest.remove(&self.key);
            }
        }
        let unlogged = self.conn.unlogged.load(Ordering::Relaxed);
        if self.conn.flagged.load(Ordering::Relaxed) {
            log::warn!(
                "event=h2_reset_flood_closed client={} resets={} resets_not_in_access_log={unlogged}",
                shown(self.conn.peer),
                self.conn.resets.load(Ordering::Relaxed),
            );
        }
    }
}

fn shown(peer: Option<SocketAddr>) -> String {
    peer.map_or_else(|| "-".to_string(), |p| p.ip().to_string())
}

/// Whether `session` is an HTTP/2 stream the client has already reset, or whose
/// connection is gone (looked at without waiting).
pub fn reset_already(session: &mut Session) -> bool {
    match session.as_downstream_mut() {
        ServerSession::H2(h2) => {
            let idle = std::pin::pin!(h2.idle());
            idle.poll(&mut Context::from_waker(Waker::noop()))
                .is_ready()
        }
        _ => false,
    }
}

/// Whether `error` ended an HTTP/2 stream because the client reset it (RST_STREAM)
/// before the answer was complete: Pingora's "client closed" while it waited for the
/// app, or the h2 layer's remote reset on a read or a write. A whole connection lost,
/// and timeouts, are not resets.
pub fn reset_error(session: &Session, error: Option<&Error>) -> bool {
    let Some(e) = error else { return false };
    if !matches!(session.as_downstream(), ServerSession::H2(_))
        || e.esource() != &ErrorSource::Downstream
    {
        return false;
    }
    // `HttpSession::read_body_or_idle` (pingora-core, v2/server.rs) saw the stream's
    // reset; the proxy wraps that error in one naming the app.
    let mut cause = Some(e);
    while let Some(err) = cause {
        let idle_reset = err.etype() == &ErrorType::H2Error
            && err
                .context
                .as_ref()
                .is_some_and(|c| c.as_str().starts_with("Client closed H2"));
        if idle_reset {
            return true;
        }
        cause = err
            .cause
            .as_deref()
            .and_then(|c| c.downcast_ref::<Box<Error>>())
            .map(|b| &**b);
    }
    // A read or write of the stream that met the client's RST_STREAM.
    e.root_cause()
        .downcast_ref::<h2::Error>()
        .is_some_and(|h| h.is_reset() && h.is_remote())
}

/// Whether `error` ended an HTTP/2 stream whose client accepted nothing for the time
/// `conn::pace_h2` allowed (`limits.send_timeout`).
pub fn send_timed_out(session: &Session, error: Option<&Error>) -> bool {
    matches!(session.as_downstream(), ServerSession::H2(_))
        && error.is_some_and(|e| {
            e.esource() == &ErrorSource::Downstream && e.etype() == &ErrorType::WriteTimedout
        })
}
