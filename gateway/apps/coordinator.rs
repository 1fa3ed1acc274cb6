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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::app::{App, State};
use super::process::{Identity, Running};
use super::room::{self, Plan, Seen, Why};
use super::state_file::StateFile;
use super::tasks::{self, Events};
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
    /// A new configuration's apps (all of them, as built by `Apps::resolve`).
    Configure {
        apps: Vec<Arc<App>>,
        settings: Arc<config::Apps>,
    },
    /// The gateway stops: stop the `run` apps that ask for it, then answer.
    Shutdown(std::sync::mpsc::Sender<()>),
    /// A binary upgrade: the next process decides from now on.
    HandOver,
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
}

impl Coordinator {
    pub fn new(events: Events, state_file: StateFile) -> Coordinator {
        Coordinator {
            apps: HashMap::new(),
            settings: Arc::default(),
            events,
            state_file,
            shutdown: None,
            handed_over: false,
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
                        self.handed_over = true;
                    }
                    // Only what a process that no longer decides must still do: answer.
                    Some(Event::Operator { reply, .. }) if self.handed_over => {
                        let _ = reply.send(Err("handed over to the new gateway process".to_string()));
                    }
                    Some(Event::Shutdown(done)) if self.handed_over => {
                        let _ = done.send(());
                    }
                    Some(_) if self.handed_over => {}
                    Some(event) => self.handle(event),
                    None => return,
                },
                _ = tick.tick() => if !self.handed_over {
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
            } => self.start_failed(&name, token, reason),
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
            Event::Configure { apps, settings } => self.configure(apps, settings),
            Event::Shutdown(done) => self.begin_shutdown(done),
            Event::HandOver => {}
        }
    }

    fn demand(&mut self, name: &str, operator: bool) {
        let Some(m) = self.apps.get_mut(name) else {
            return;
        };
        let now = Instant::now();
        let status = m.app.current();
        let backing_off = status.retry_at.is_some_and(|at| at > now);
        if backing_off && !operator {
            return;
        }
        let since = m.wanted.map_or(now, |(since, _)| since);
        m.wanted = Some((since, now + m.spec.start_timeout));
    }

    /// Starts the wanted apps that can start, oldest demand first; makes room for those
    /// that cannot yet.
    fn schedule(&mut self) {
        if self.shutdown.is_some() || self.handed_over {
            return;
        }
        let mut wanted: Vec<(Instant, Arc<str>)> = self
            .apps
            .iter()
            .filter(|(_, m)| m.app.state() == State::Stopped && !m.adopting && !m.removed)
            .filter_map(|(name, m)| m.wanted.map(|(since, _)| (since, name.clone())))
            .collect();
        wanted.sort();
        for (_, name) in wanted {
            let decision = self.plan(&name);
            match decision {
                Decided::Start => self.start(&name),
                Decided::Stop(victims) => {
                    for (victim, why) in victims {
                        let reason = match why {
                            Why::Room => Reason::Room,
                            Why::Exclusive => Reason::Exclusive,
                        };
                        self.drain(&victim, reason);
                    }
                }
                Decided::Wait => {}
            }
        }
    }

    fn plan(&self, name: &str) -> Decided {
        let Some(x) = self.apps.get(name) else {
            return Decided::Wait;
        };
        let x = seen(x, &self.settings);
        let others: Vec<Seen> = self
            .apps
            .iter()
            .filter(|(n, _)| &***n != name)
            .map(|(_, m)| seen(m, &self.settings))
            .collect();
        let budget = x
            .gpu
            .and_then(|g| self.settings.gpus.get(&g.device).copied());
        match room::plan(&x, &others, budget) {
            Plan::Start => Decided::Start,
            Plan::Wait => Decided::Wait,
            Plan::Stop(victims) => Decided::Stop(
                victims
                    .into_iter()
                    .map(|(n, why)| (n.to_string(), why))
                    .collect(),
            ),
        }
    }

    fn start(&mut self, name: &str) {
        let events = self.events.clone();
        let Some(m) = self.apps.get_mut(name) else {
            return;
        };
        m.token += 1;
        let token = m.token;
        let now = Instant::now();
        m.started_at = Some(now);
        m.stopping = None;
        let spec = m.spec.clone();
        let name = m.app.name.clone();
        info!("event=app_start app={name}");
        match &spec.control {
            config::Control::Run(run) => {
                let running = match tasks::spawn(&spec, run) {
                    Ok(running) => running,
                    Err(reason) => {
                        m.app.set(State::Starting, |s| s.pid = None);
                        self.start_failed(&name, token, reason);
                        return;
                    }
                };
                let pid = running.identity;
                m.pid = Some(pid);
                m.app.set(State::Starting, |s| s.pid = Some(pid.pid));
                let (stop, told) = oneshot::channel();
                m.stop = Some(stop);
                tokio::spawn(tasks::keep(
                    name.clone(),
                    token,
                    running,
                    told,
                    events.clone(),
                ));
                m.starting = Some(tokio::spawn(tasks::await_ready(
                    name, token, spec, now, events,
                )));
                self.save();
            }
            config::Control::Commands { start, .. } => {
                m.pid = None;
                m.app.set(State::Starting, |s| s.pid = None);
                m.starting = Some(tokio::spawn(tasks::start_command(
                    name,
                    token,
                    spec.clone(),
                    start.clone(),
                    events,
                )));
            }
        }
    }

    fn ready(&mut self, name: &str, token: u64) {
        let Some(m) = self.apps.get_mut(name) else {
            return;
        };
        if m.token != token || m.app.state() != State::Starting {
            return;
        }
        m.starting = None;
        m.backoff = Duration::ZERO;
        m.wanted = None;
        let took = m.started_at.map(|t| t.elapsed());
        let now = Instant::now();
        m.app.set(State::Ready, |s| {
            s.ready_at = Some(now);
            s.failure = None;
            s.retry_at = None;
        });
        if let (Some(series), Some(took)) = (&m.app.metrics, took) {
            series.started(true, Some(took));
        }
        info!(
            "event=app_ready app={name} pid={} start_s={:.3}",
            m.pid.map_or("-".to_string(), |p| p.pid.to_string()),
            took.map_or(0.0, |t| t.as_secs_f64())
        );
    }

    /// A start failed: the app stops (its process, if any), waiting requests get the
    /// reason, and no new start is tried before the backoff.
    fn start_failed(&mut self, name: &str, token: u64, reason: String) {
        let Some(m) = self.apps.get_mut(name) else {
            return;
        };
        if m.token != token || m.app.state() != State::Starting {
            return;
        }
        if let Some(task) = m.starting.take() {
            task.abort();
        }
        let reason = tasks::with_log(reason, &m.spec);
        m.backoff = match m.backoff {
            Duration::ZERO => FIRST_BACKOFF,
            b => (b * 2).min(MAX_BACKOFF),
        };
        let retry_at = Instant::now() + m.backoff;
        m.wanted = None;
        warn!(
            "event=app_failed app={name} reason=\"{}\" retry_in_s={}",
            reason.replace('"', "'"),
            m.backoff.as_secs()
        );
        if let Some(series) = &m.app.metrics {
            series.started(false, None);
        }
        let failure: Arc<str> = reason.into();
        let next = match m.stop.is_some() {
            true => State::Stopping,
            false => State::Stopped,
        };
        m.app.set(next, |s| {
            s.failures += 1;
            s.failure = Some(failure);
            s.retry_at = Some(retry_at);
        });
        if let Some(stop) = m.stop.take() {
            m.stopping = Some(Reason::Failed);
            let _ = stop.send(m.spec.stop_timeout);
        }
    }

    fn exited(&mut self, name: &str, token: u64, status: Option<String>) {
        let Some(m) = self.apps.get_mut(name) else {
            return;
        };
        if m.token != token {
            return;
        }
        m.stop = None;
        let status = status.unwrap_or_else(|| "ended".to_string());
        if m.app.state() == State::Starting {
            let reason = format!("the app {status} while starting");
            self.start_failed(name, token, reason);
            if let Some(m) = self.apps.get_mut(name) {
                m.pid = None;
                m.app.set(State::Stopped, |s| s.pid = None);
            }
            self.save();
            return;
        }
        warn!("event=app_stop app={name} reason=failed detail=\"the app {status}\"");
        if let Some(series) = &m.app.metrics {
            series.stopped(Reason::Failed as usize);
        }
        Self::now_stopped(m);
        self.save();
    }

    fn stopped(&mut self, name: &str, token: u64, how: &str) {
        let Some(m) = self.apps.get_mut(name) else {
            return;
        };
        if m.token != token {
            return;
        }
        info!(
            "event=app_stopped app={name} reason={} how=\"{how}\"",
            m.stopping.map_or("-", Reason::as_str)
        );
        Self::now_stopped(m);
        if m.removed {
            self.apps.remove(name);
        }
        self.save();
    }

    fn now_stopped(m: &mut Managed) {
        m.stop = None;
        m.pid = None;
        m.stopping = None;
        if let Some(task) = m.starting.take() {
            task.abort();
        }
        m.app.close_tunnels();
        m.app.set(State::Stopped, |s| s.pid = None);
    }

    /// Closes a ready app to new requests; it stops when its last request ends.
    fn drain(&mut self, name: &str, reason: Reason) {
        let Some(m) = self.apps.get_mut(name) else {
            return;
        };
        if m.app.state() != State::Ready {
            return;
        }
        m.stopping = Some(reason);
        m.app.set(State::Draining, |_| {});
        if m.app.in_flight() == 0 {
            self.stop_now(name);
        }
    }

    fn drained(&mut self, name: &str) {
        let drained = self
            .apps
            .get(name)
            .is_some_and(|m| m.app.state() == State::Draining && m.app.in_flight() == 0);
        if drained {
            self.stop_now(name);
        }
    }

    /// Stops the app's process (or runs its `stop` command) now.
    fn stop_now(&mut self, name: &str) {
        let events = self.events.clone();
        let Some(m) = self.apps.get_mut(name) else {
            return;
        };
        let reason = m.stopping.unwrap_or(Reason::Operator);
        m.stopping = Some(reason);
        if let Some(task) = m.starting.take() {
            task.abort();
        }
        info!("event=app_stop app={name} reason={}", reason.as_str());
        if let Some(series) = &m.app.metrics {
            series.stopped(reason as usize);
        }
        m.app.set(State::Stopping, |_| {});
        m.app.close_tunnels();
        match &m.spec.control {
            config::Control::Run(_) => match m.stop.take() {
                Some(stop) => {
                    let _ = stop.send(m.spec.stop_timeout);
                }
                None => {
                    // Adopted without a known process: it cannot be signalled.
                    warn!("event=app_stop_unknown_process app={name} note=\"adopted while serving, its process is unknown: left running\"");
                    m.app.set(State::Ready, |_| {});
                    m.stopping = None;
                }
            },
            config::Control::Commands { stop, .. } => {
                tokio::spawn(tasks::stop_command(
                    m.app.name.clone(),
                    m.token,
                    stop.clone(),
                    m.spec.stop_timeout,
                    events,
                ));
            }
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let mut idle = Vec::new();
        for (name, m) in &mut self.apps {
            if m.wanted.is_some_and(|(_, until)| until <= now) {
                m.wanted = None;
            }
            let Some(limit) = m.spec.idle_stop else {
                continue;
            };
            if m.app.state() == State::Ready
                && m.app.in_flight() == 0
                && m.app.idle_for() >= limit
                && m.app.waiting() == 0
            {
                idle.push(name.clone());
            }
        }
        for name in idle {
            let closed = self
                .apps
                .get(&name)
                .is_some_and(|m| m.app.close_if_unused());
            if closed {
                if let Some(m) = self.apps.get_mut(&name) {
                    m.stopping = Some(Reason::Idle);
                    m.app.set(State::Draining, |_| {});
                }
                self.stop_now(&name);
            }
        }
        self.undrain_unneeded();
    }

    /// Apps draining to make room for another that no request wants any more open
    /// again.
    fn undrain_unneeded(&mut self) {
        let someone_waits = self
            .apps
            .values()
            .any(|m| m.wanted.is_some() && m.app.state() == State::Stopped);
        if someone_waits {
            return;
        }
        for m in self.apps.values_mut() {
            let for_room = matches!(m.stopping, Some(Reason::Room | Reason::Exclusive));
            if m.app.state() == State::Draining && for_room {
                m.stopping = None;
                m.app.set(State::Ready, |_| {});
            }
        }
    }

    fn operator(&mut self, name: &str, start: bool) -> Result<String, String> {
        let Some(m) = self.apps.get_mut(name) else {
            return Err(format!("no app {name:?}"));
        };
        let state = m.app.state();
        if start {
            if state != State::Stopped {
                return Ok(format!("{name} is {}", state.as_str()));
            }
            m.app.set(State::Stopped, |s| s.retry_at = None);
            self.demand(name, true);
            return Ok(format!("{name}: starting"));
        }
        m.wanted = None;
        match state {
            State::Stopped | State::Stopping => Ok(format!("{name} is {}", state.as_str())),
            State::Starting => {
                m.stopping = Some(Reason::Operator);
                self.stop_now(name);
                Ok(format!("{name}: stopping"))
            }
            State::Ready | State::Draining => {
                m.stopping = Some(Reason::Operator);
                m.app.set(State::Draining, |_| {});
                if m.app.in_flight() == 0 {
                    self.stop_now(name);
                    return Ok(format!("{name}: stopping"));
                }
                Ok(format!(
                    "{name}: draining ({} requests in flight), then stopping",
                    m.app.in_flight()
                ))
            }
        }
    }

    fn configure(&mut self, apps: Vec<Arc<App>>, settings: Arc<config::Apps>) {
        let first = self.apps.is_empty();
        let known = if first {
            self.state_file.read()
        } else {
            HashMap::new()
        };
        self.settings = settings;
        for app in &apps {
            let spec = app.spec.load_full();
            if let Some(m) = self.apps.get_mut(&app.name) {
                m.spec = spec;
                m.removed = false;
                continue;
            }
            let name = app.name.clone();
            tokio::spawn(tasks::adopt(
                name.clone(),
                spec.clone(),
                known.get(&*name).copied(),
                self.events.clone(),
            ));
            self.apps.insert(
                name,
                Managed {
                    app: app.clone(),
                    spec,
                    token: 0,
                    stop: None,
                    pid: None,
                    starting: None,
                    started_at: None,
                    wanted: None,
                    backoff: Duration::ZERO,
                    stopping: None,
                    adopting: true,
                    removed: false,
                },
            );
        }
        let gone: Vec<Arc<str>> = self
            .apps
            .keys()
            .filter(|n| !apps.iter().any(|a| &a.name == *n))
            .cloned()
            .collect();
        for name in gone {
            let Some(m) = self.apps.get_mut(&name) else {
                continue;
            };
            m.removed = true;
            m.wanted = None;
            match m.app.state() {
                State::Stopped => {
                    self.apps.remove(&name);
                }
                State::Stopping => {}
                _ => {
                    info!("event=app_removed app={name} note=\"no longer in the configuration: stopped\"");
                    m.stopping = Some(Reason::Exit);
                    self.stop_now(&name);
                }
            }
        }
    }

    /// The first look at an app: adopted when it serves (with its process when the
    /// state file names one still alive), else left stopped.
    fn adopted(&mut self, name: &str, known: Option<Identity>, serving: bool) {
        let events = self.events.clone();
        let Some(m) = self.apps.get_mut(name) else {
            return;
        };
        m.adopting = false;
        let run = matches!(m.spec.control, config::Control::Run(_));
        let process = known.filter(|_| run).and_then(Running::adopt);
        if !serving && process.is_none() {
            return;
        }
        m.token += 1;
        let token = m.token;
        let app_name = m.app.name.clone();
        if let Some(running) = process {
            let (stop, told) = oneshot::channel();
            m.stop = Some(stop);
            m.pid = Some(running.identity);
            tokio::spawn(tasks::keep(
                app_name.clone(),
                token,
                running,
                told,
                events.clone(),
            ));
        }
        let pid = m.pid.map(|p| p.pid);
        info!(
            "event=app_adopted app={name} pid={} serving={serving}",
            pid.map_or("unknown".to_string(), |p| p.to_string())
        );
        if serving {
            let now = Instant::now();
            m.app.set(State::Ready, |s| {
                s.pid = pid;
                s.ready_at = Some(now);
            });
            return;
        }
        // Its process runs but does not serve yet: a start under way when the previous
        // gateway process handed over.
        m.started_at = Some(Instant::now());
        m.app.set(State::Starting, |s| s.pid = pid);
        let spec = m.spec.clone();
        let now = Instant::now();
        m.starting = Some(tokio::spawn(tasks::await_ready(
            app_name, token, spec, now, events,
        )));
    }

    fn begin_shutdown(&mut self, done: std::sync::mpsc::Sender<()>) {
        self.shutdown = Some(done);
        let names: Vec<Arc<str>> = self
            .apps
            .iter()
            .filter(|(_, m)| {
                m.spec.stop_on_exit && matches!(m.spec.control, config::Control::Run(_))
            })
            .filter(|(_, m)| !matches!(m.app.state(), State::Stopped | State::Stopping))
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            if let Some(m) = self.apps.get_mut(&name) {
                m.stopping = Some(Reason::Exit);
            }
            self.stop_now(&name);
        }
    }

    fn finish_shutdown(&mut self) {
        if self.shutdown.is_none() {
            return;
        }
        let busy = self.apps.values().any(|m| m.app.state() == State::Stopping);
        if !busy {
            if let Some(done) = self.shutdown.take() {
                self.save();
                let _ = done.send(());
            }
        }
    }

    /// Records the processes of `run` apps, for the gateway process that takes over.
    fn save(&self) {
        let running = self
            .apps
            .iter()
            .filter_map(|(name, m)| Some((name.to_string(), m.pid?)))
            .collect();
        self.state_file.write(&running);
    }
}

/// An app as the room plan sees it.
fn seen<'a>(m: &'a Managed, settings: &'a config::Apps) -> Seen<'a> {
    let in_group = |pick: fn(&config::Group) -> bool| {
        m.spec
            .groups
            .iter()
            .filter(move |g| settings.group(g).is_some_and(pick))
    };
    Seen {
        name: &m.spec.name,
        gpu: m.spec.gpu,
        state: m.app.state(),
        in_flight: m.app.in_flight(),
        idle_for: m.app.idle_for(),
        keep_loaded: in_group(|g| g.keep_loaded).next().is_some(),
        exclusive: in_group(|g| g.exclusive).map(String::as_str).collect(),
    }
}

enum Decided {
    Start,
    Stop(Vec<(String, Why)>),
    Wait,
}
