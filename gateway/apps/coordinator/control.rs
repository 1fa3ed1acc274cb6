//! What comes from outside the apps: an operator's start or stop, a new configuration,
//! what the first look at each app found (adoption), the gateway's own stop, and the
//! state file for the next gateway process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;
use tokio::sync::oneshot;

use super::super::app::{App, State};
use super::super::process::{Identity, Running};
use super::super::tasks;
use super::{Coordinator, Managed, Reason};
use crate::config;

impl Coordinator {
    pub(super) fn operator(&mut self, name: &str, start: bool) -> Result<String, String> {
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

    pub(super) fn configure(
        &mut self,
        apps: Vec<Arc<App>>,
        settings: Arc<config::Apps>,
        upgrade_grace: Duration,
    ) {
        self.upgrade_grace = upgrade_grace;
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
                self.reports.clone(),
            ));
            self.apps.insert(
                name,
                Managed {
                    app: app.clone(),
                    spec: spec.clone(),
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
                    started_with: spec,
                    drained_for: None,
                    protected_until: None,
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
                State::Starting => {
                    info!("event=app_removed app={name} note=\"no longer in the configuration: stopped\"");
                    m.stopping = Some(Reason::Exit);
                    self.stop_now(&name);
                }
                State::Ready | State::Draining => {
                    info!("event=app_removed app={name} note=\"no longer in the configuration: stopped once its requests are done\"");
                    m.app.set(State::Ready, |_| {});
                    self.drain(&name, Reason::Exit);
                }
            }
        }
    }

    /// The first look at an app: adopted when it serves (with its process when the
    /// state file names one still alive), else left stopped.
    pub(super) fn adopted(&mut self, name: &str, known: Option<Identity>, serving: bool) {
        let events = self.reports.clone();
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
        m.started_with = m.spec.clone();
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
            m.wanted = None;
            m.protected_until = Some(now + self.upgrade_grace);
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

    pub(super) fn begin_shutdown(&mut self, done: std::sync::mpsc::Sender<()>) {
        self.shutdown = Some(done);
        let names: Vec<Arc<str>> = self
            .apps
            .iter()
            .filter(|(_, m)| {
                let spec = &m.started_with;
                spec.stop_on_exit && matches!(spec.control, config::Control::Run(_))
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

    pub(super) fn finish_shutdown(&mut self) {
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

    /// Records the processes of `run` apps, for the gateway process that takes over
    /// (nothing once handed over: the new process writes it).
    pub(super) fn save(&self) {
        if self.handed_over {
            return;
        }
        let running = self
            .apps
            .iter()
            .filter_map(|(name, m)| Some((name.to_string(), m.pid?)))
            .collect();
        self.state_file.write(&running);
    }
}
