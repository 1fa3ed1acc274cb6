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

use super::app::Notice;
use super::app::{App, State};
use super::gpu::{Gpus, Measured};
use super::process::Identity;
use super::state_file::StateFile;
use super::tasks::{Events, Report};
use crate::config;

/// How often idle apps, expired demands and drained apps are looked at.
const TICK: Duration = Duration::from_millis(200);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the gateway (not the app's own tasks, not its requests) asks of the coordinator.
pub enum Event {
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
    /// Its own inbox, for its measurement tasks.
    events: mpsc::UnboundedSender<Event>,
    /// Where the tasks it starts report (`tasks::Report`).
    reports: Events,
    reports_in: Option<mpsc::UnboundedReceiver<Report>>,
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
        events: mpsc::UnboundedSender<Event>,
        state_file: StateFile,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Coordinator {
        let (reports, reports_in) = mpsc::unbounded_channel();
        Coordinator {
            apps: HashMap::new(),
            settings: Arc::default(),
            events,
            reports,
            reports_in: Some(reports_in),
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

    /// Runs until the process ends: `inbox` brings the gateway's requests (`Event`),
    /// `notices` the apps' (`Notice`: a request wants an app, a drained app's last
    /// request ended), and the tasks it starts report on a channel of its own.
    pub async fn run(
        mut self,
        mut inbox: mpsc::UnboundedReceiver<Event>,
        mut notices: mpsc::UnboundedReceiver<Notice>,
    ) {
        let Some(mut reports) = self.reports_in.take() else {
            return;
        };
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
                    Some(Event::Configure { .. }) if self.handed_over => {}
                    Some(event) => self.handle(event),
                    None => return,
                },
                Some(notice) = notices.recv() => match notice {
                    _ if self.handed_over => {}
                    Notice::Demand(name) => self.demand(&name, false),
                    Notice::Drained(name) => self.drained(&name),
                },
                Some(report) = reports.recv() => match report {
                    Report::Adopted { .. } if self.handed_over => {}
                    report => self.report(report),
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

    fn report(&mut self, report: Report) {
        match report {
            Report::Ready { name, token } => self.ready(&name, token),
            Report::StartFailed {
                name,
                token,
                reason,
                timed_out,
            } => self.start_failed(&name, token, reason, timed_out),
            Report::Exited {
                name,
                token,
                status,
            } => self.exited(&name, token, status),
            Report::Stopped { name, token, how } => self.stopped(&name, token, &how),
            Report::Adopted {
                name,
                known,
                serving,
            } => self.adopted(&name, known, serving),
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
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
