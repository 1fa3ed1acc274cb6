//! The coordinator: one loop that makes every decision about every app, one event at a
//! time, so that no two decisions race (a request arriving while its app stops restarts
//! it after the stop; a start joins the one under way). Long operations run as tasks
//! (`tasks`) that report back; requests wait on each app's published `Status`.
//!
//! ```text
//! stopped ──demand (room: plan)──> starting ──ready──> ready ──idle / room / operator──>
//!    ^  ^                            │ exit, timeout        draining (no new requests)
//!    │  └── backoff 1 s … 30 s <─────┘ (502 with reason)       │ in flight = 0
//!    └──────────────────────────── stopping <──────────────────┘
//! ```
//!
//! `schedule`: which app starts next and what stops for it; `lifecycle`: one app's
//! transitions; `control`: operators, reloads, adoption, the gateway's own stop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

mod control;
mod gpus;
mod lifecycle;
mod schedule;

use super::app::{App, State};
use super::gpu::{Gpus, Measured};
use super::process::Identity;
use super::state_file::StateFile;
use super::tasks::Events;
use crate::config;

/// How often idle apps, expired demands and drained apps are looked at.
const TICK: Duration = Duration::from_millis(200);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub enum Event {
    /// A request wants the app.
    Demand(Arc<str>),
    /// A draining app's last request ended.
    Drained(Arc<str>),
    Ready {
        name: Arc<str>,
        token: u64,
    },
    StartFailed {
        name: Arc<str>,
        token: u64,
        reason: String,
        /// Not ready within `start_timeout` (else it failed outright).
        timed_out: bool,
    },
    /// A `run` app's process ended without being told to.
    Exited {
        name: Arc<str>,
        token: u64,
        status: Option<String>,
    },
    /// A stop is done.
    Stopped {
        name: Arc<str>,
        token: u64,
        how: String,
    },
    /// What `adopt` found.
    Adopted {
        name: Arc<str>,
        known: Option<Identity>,
        serving: bool,
    },
    /// `POST /-/apps/NAME/start|stop`.
    Operator {
        name: String,
        start: bool,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// A new configuration's apps (all of them, as built by `Apps::resolve`), and its
    /// `upgrade_grace` (how long adopted apps may still serve the previous process).
    Configure {
        apps: Vec<Arc<App>>,
        settings: Arc<config::Apps>,
        upgrade_grace: Duration,
    },
    /// The gateway stops: stop the `run` apps that ask for it, then answer.
    Shutdown(std::sync::mpsc::Sender<()>),
    /// A binary upgrade: the next process decides from now on.
    HandOver,
    /// NVML was loaded (or found missing).
    GpusProbed(Arc<Gpus>),
    /// The devices' memory as measured.
    Measured(HashMap<u32, Measured>),
}

/// Why an app stops, as counted in `gateway_app_stops_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Idle,
    Room,
    Exclusive,
    Failed,
    Operator,
    /// The gateway itself stops, or a reload removed the app.
    Exit,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::Idle,
        Reason::Room,
        Reason::Exclusive,
        Reason::Failed,
        Reason::Operator,
        Reason::Exit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Idle => "idle",
            Reason::Room => "room",
            Reason::Exclusive => "exclusive",
            Reason::Failed => "failed",
            Reason::Operator => "operator",
            Reason::Exit => "exit",
        }
    }
}

/// The coordinator's own record of one app.
struct Managed {
    app: Arc<App>,
    spec: Arc<config::App>,
    /// Names this start (and its process); reports of older ones are ignored.
    token: u64,
    /// Tells the process's keeper to stop it.
    stop: Option<oneshot::Sender<Duration>>,
    pid: Option<Identity>,
    /// The ready checks or the start command under way.
    starting: Option<JoinHandle<()>>,
    started_at: Option<Instant>,
    /// A request wants it: since when (the order of starts), until when.
    wanted: Option<(Instant, Instant)>,
    backoff: Duration,
    /// Why it is draining or stopping.
    stopping: Option<Reason>,
    /// The first look (`adopt`) is under way: no start before it answers.
    adopting: bool,
    /// Removed from the configuration: forgotten once stopped.
    removed: bool,
    /// The settings it was started (or adopted) with: it is stopped the way it was
    /// started, whatever a reload changed since.
    started_with: Arc<config::App>,
    /// The app it is draining to make room for (reopened when that one is no longer
    /// wanted).
    drained_for: Option<Arc<str>>,
    /// Adopted while serving: a previous gateway process may still serve its streams
    /// (a binary upgrade's grace period), so it is neither idle- nor room-stopped
    /// before this.
    protected_until: Option<Instant>,
}

impl Managed {
    /// A `run` app adopted without its process: nothing can stop it.
    fn unstoppable(&self) -> bool {
        matches!(self.started_with.control, config::Control::Run(_))
            && self.stop.is_none()
            && matches!(self.app.state(), State::Ready | State::Draining)
    }

    /// Not to be stopped to make room or for being idle now.
    fn kept(&self, now: Instant) -> bool {
        self.unstoppable() || self.protected_until.is_some_and(|t| t > now)
    }
}

pub struct Coordinator {
    apps: HashMap<Arc<str>, Managed>,
    settings: Arc<config::Apps>,
    events: Events,
    state_file: StateFile,
    shutdown: Option<std::sync::mpsc::Sender<()>>,
    /// Handed over to the next process (binary upgrade): no more starts, stops or
    /// state-file writes.
    handed_over: bool,
    /// The driver's view (`None` until probed, on the first app that declares a GPU).
    gpus: Option<Arc<Gpus>>,
    probing: bool,
    /// Each device's last measurement, and when an app on it last stopped.
    measured: HashMap<u32, Measured>,
    last_stop: HashMap<u32, Instant>,
    /// When the devices were last measured (or a measurement was asked for).
    measuring_since: Option<Instant>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The configuration's `upgrade_grace` (see `Managed::protected_until`).
    upgrade_grace: Duration,
}

impl Coordinator {
    pub fn new(
        events: Events,
        state_file: StateFile,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Coordinator {
        Coordinator {
            apps: HashMap::new(),
            settings: Arc::default(),
            events,
            state_file,
            shutdown: None,
            handed_over: false,
            gpus: None,
            probing: false,
            measured: HashMap::new(),
            last_stop: HashMap::new(),
            measuring_since: None,
            metrics,
            upgrade_grace: Duration::ZERO,
        }
    }

    pub async fn run(mut self, mut inbox: mpsc::UnboundedReceiver<Event>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = inbox.recv() => match event {
                    Some(Event::HandOver) => {
                        info!("event=apps_handed_over note=\"the new process adopts the running apps\"");
                        // What runs now, for the new process to adopt.
                        self.save();
                        self.handed_over = true;
                    }
                    // A process that no longer decides still answers, and still follows
                    // its starts and stops, so that its held requests see them.
                    Some(Event::Operator { reply, .. }) if self.handed_over => {
                        let _ = reply.send(Err("handed over to the new gateway process".to_string()));
                    }
                    Some(Event::Shutdown(done)) if self.handed_over => {
                        let _ = done.send(());
                    }
                    Some(Event::Demand(_) | Event::Drained(_) | Event::Configure { .. } | Event::Adopted { .. }) if self.handed_over => {}
                    Some(event) => self.handle(event),
                    None => return,
                },
                // No apps, no wake-ups: a gateway without `apps` never runs this loop.
                _ = tick.tick(), if !self.apps.is_empty() => if !self.handed_over {
                    self.tick();
                },
            }
            self.schedule();
            self.finish_shutdown();
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Demand(name) => self.demand(&name, false),
            Event::Drained(name) => self.drained(&name),
            Event::Ready { name, token } => self.ready(&name, token),
            Event::StartFailed {
                name,
                token,
                reason,
                timed_out,
            } => self.start_failed(&name, token, reason, timed_out),
            Event::Exited {
                name,
                token,
                status,
            } => self.exited(&name, token, status),
            Event::Stopped { name, token, how } => self.stopped(&name, token, &how),
            Event::Adopted {
                name,
                known,
                serving,
            } => self.adopted(&name, known, serving),
            Event::Operator { name, start, reply } => {
                let _ = reply.send(self.operator(&name, start));
            }
            Event::Configure {
                apps,
                settings,
                upgrade_grace,
            } => self.configure(apps, settings, upgrade_grace),
            Event::Shutdown(done) => self.begin_shutdown(done),
            Event::HandOver => {}
            Event::GpusProbed(gpus) => {
                self.probing = false;
                self.gpus = Some(gpus);
            }
            Event::Measured(measured) => self.measured(measured),
        }
    }
}
