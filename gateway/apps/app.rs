//! `App`: what the request path and the coordinator share about one managed app. The
//! request path reads one atomic (`state`) and moves two counters (`in_flight`, the
//! time of last use); everything else is the coordinator's, published through `status`.
//!
//! A request enters a ready app by counting itself in flight first and reading the state
//! second; the coordinator closes an app (`State::Draining`) by writing the state first
//! and reading the count second. With sequentially consistent atomics one of the two
//! always sees the other: no request slips into an app being stopped unseen.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};

use crate::config;

/// What an app tells the coordinator on behalf of its requests.
pub enum Notice {
    /// A request wants the app.
    Demand(Arc<str>),
    /// A draining app's last request ended.
    Drained(Arc<str>),
}

/// An app's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum State {
    Stopped = 0,
    Starting = 1,
    Ready = 2,
    /// Ready, but closed to new requests: to be stopped once its requests are done.
    Draining = 3,
    Stopping = 4,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Stopped,
        State::Starting,
        State::Ready,
        State::Draining,
        State::Stopping,
    ];

    fn from_u8(v: u8) -> State {
        match v {
            1 => State::Starting,
            2 => State::Ready,
            3 => State::Draining,
            4 => State::Stopping,
            _ => State::Stopped,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Ready => "ready",
            State::Draining => "draining",
            State::Stopping => "stopping",
        }
    }
}

/// What the coordinator publishes after each change, for waiting requests, the waiting
/// page and `/-/apps`.
#[derive(Debug, Clone)]
pub struct Status {
    pub state: State,
    /// When the current state began.
    pub since: Instant,
    /// Failed starts so far: a waiting request that sees this grow gets the reason.
    pub failures: u64,
    /// Why the last start failed.
    pub failure: Option<Arc<str>>,
    /// The last start failed by not being ready within `start_timeout`.
    pub timed_out: bool,
    /// Until when a new start is not tried after a failure.
    pub retry_at: Option<Instant>,
    pub pid: Option<u32>,
    /// When the app last became ready.
    pub ready_at: Option<Instant>,
}

impl Status {
    fn stopped() -> Status {
        Status {
            state: State::Stopped,
            since: Instant::now(),
            failures: 0,
            failure: None,
            timed_out: false,
            retry_at: None,
            pid: None,
            ready_at: None,
        }
    }
}

/// One managed app.
pub struct App {
    pub name: Arc<str>,
    state: AtomicU8,
    in_flight: AtomicU32,
    /// Milliseconds since `epoch` of the last request or byte.
    last_used: AtomicU64,
    epoch: Instant,
    /// Requests held while it starts.
    waiting: AtomicU32,
    status: watch::Sender<Status>,
    /// Bumped when the app stops: its WebSocket tunnels close (1001).
    closing: watch::Sender<u64>,
    /// The app's settings, replaced by a reload.
    pub spec: ArcSwap<config::App>,
    notices: mpsc::UnboundedSender<Notice>,
    pub(super) metrics: Option<crate::metrics::AppSeries>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .field("state", &self.state())
            .finish()
    }
}

impl App {
    pub(super) fn new(
        spec: config::App,
        notices: mpsc::UnboundedSender<Notice>,
        metrics: Option<crate::metrics::AppSeries>,
    ) -> App {
        App {
            name: spec.name.as_str().into(),
            state: AtomicU8::new(State::Stopped as u8),
            in_flight: AtomicU32::new(0),
            last_used: AtomicU64::new(0),
            epoch: Instant::now(),
            waiting: AtomicU32::new(0),
            status: watch::channel(Status::stopped()).0,
            closing: watch::channel(0).0,
            spec: ArcSwap::from_pointee(spec),
            notices,
            metrics,
        }
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(SeqCst))
    }

    /// Counts a request in flight if the app is ready (see the module's note). A
    /// `quiet` request (`wake` lists it) does not count as the app's use.
    pub fn enter(self: &Arc<App>, quiet: bool) -> Option<InFlight> {
        self.in_flight.fetch_add(1, SeqCst);
        if self.state.load(SeqCst) == State::Ready as u8 {
            if !quiet {
                self.touch();
            }
            return Some(InFlight {
                app: self.clone(),
                quiet,
            });
        }
        self.leave();
        None
    }

    fn leave(&self) {
        let before = self.in_flight.fetch_sub(1, SeqCst);
        if before == 1 && self.state.load(SeqCst) == State::Draining as u8 {
            self.send(Notice::Drained(self.name.clone()));
        }
    }

    /// The app is in use now (a request, a byte either way).
    pub fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        // Written only when it moved: hot apps do not bounce the line on every chunk.
        if self.last_used.load(std::sync::atomic::Ordering::Relaxed) != now {
            self.last_used
                .store(now, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// How long since its last use.
    pub fn idle_for(&self) -> Duration {
        let last = self.last_used.load(std::sync::atomic::Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(last))
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(SeqCst)
    }

    /// A request wants the app: the coordinator starts it unless it runs (or restarts it
    /// after a stop under way).
    pub fn demand(&self) {
        self.send(Notice::Demand(self.name.clone()));
    }

    fn send(&self, notice: Notice) {
        // The coordinator lives as long as the process; a send fails only at exit.
        let _ = self.notices.send(notice);
    }

    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    pub fn current(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A WebSocket tunnel's signal to close (see `closing`).
    pub fn closing(&self) -> watch::Receiver<u64> {
        self.closing.subscribe()
    }

    /// Counts a held request; `None` when `max_waiting` are already held.
    pub fn hold(self: &Arc<App>) -> Option<Held> {
        let max = self.spec.load().max_waiting;
        let before = self.waiting.fetch_add(1, SeqCst);
        if before >= max {
            self.waiting.fetch_sub(1, SeqCst);
            return None;
        }
        if let Some(m) = &self.metrics {
            m.waiting.inc();
        }
        Some(Held(self.clone()))
    }

    pub fn waiting(&self) -> u32 {
        self.waiting.load(SeqCst)
    }

    // The coordinator's side.

    /// Sets the state and publishes `change` with it.
    pub(super) fn set(&self, state: State, change: impl FnOnce(&mut Status)) {
        self.state.store(state as u8, SeqCst);
        self.status.send_modify(|s| {
            if s.state != state {
                s.since = Instant::now();
            }
            s.state = state;
            change(s);
        });
        if state == State::Ready {
            self.touch();
        }
        if let Some(m) = &self.metrics {
            m.set_state(state as usize);
        }
    }

    /// Closes the app to new requests; false (and ready again) when a request is in
    /// flight.
    pub(super) fn close_if_unused(&self) -> bool {
        self.state.store(State::Draining as u8, SeqCst);
        if self.in_flight.load(SeqCst) == 0 {
            return true;
        }
        self.state.store(State::Ready as u8, SeqCst);
        // A request that saw it closed meanwhile waits on the status: wake it.
        self.status.send_modify(|_| {});
        false
    }

    /// Tells its WebSocket tunnels to close.
    pub(super) fn close_tunnels(&self) {
        self.closing.send_modify(|generation| *generation += 1);
    }
}

/// A request in flight on a ready app; counted until dropped.
pub struct InFlight {
    app: Arc<App>,
    quiet: bool,
}

impl InFlight {
    /// Bytes of the request or its answer went through.
    pub fn touch(&self) {
        if !self.quiet {
            self.app.touch();
        }
    }

    /// The request became a WebSocket: no longer in flight (a tab left open on a silent
    /// WebSocket lets its app go idle), but its bytes count as use, and it closes when
    /// the app stops.
    pub fn into_tunnel(self) -> Tunnel {
        Tunnel {
            app: self.app.clone(),
            closing: self.app.closing(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.touch();
        self.app.leave();
    }
}

/// A WebSocket tunnel to an app.
pub struct Tunnel {
    app: Arc<App>,
    closing: watch::Receiver<u64>,
}

impl Tunnel {
    pub fn touch(&self) {
        self.app.touch();
    }

    /// Resolves when the app stops.
    pub async fn closing(&mut self) {
        let _ = self.closing.changed().await;
    }
}

/// A request held while its app starts; counted until dropped.
pub struct Held(Arc<App>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, SeqCst);
        if let Some(m) = &self.0.metrics {
            m.waiting.dec();
        }
    }
}
