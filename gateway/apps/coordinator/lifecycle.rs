//! One app's transitions: start, ready, failed start, exit, drain, stop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use tokio::sync::oneshot;

use super::super::app::State;
use super::super::tasks;
use super::{Coordinator, Managed, Reason, FIRST_BACKOFF, MAX_BACKOFF};
use crate::config;

impl Coordinator {
    pub(super) fn start(&mut self, name: &str) {
        let events = self.reports.clone();
        let Some(m) = self.apps.get_mut(name) else {
            return;
        };
        m.token += 1;
        let token = m.token;
        let now = Instant::now();
        m.started_at = Some(now);
        m.stopping = None;
        let spec = m.spec.clone();
        m.started_with = spec.clone();
        m.protected_until = None;
        m.drained_for = None;
        let name = m.app.name.clone();
        info!("event=app_start app={name}");
        match &spec.control {
            config::Control::Run(run) => {
                let running = match tasks::spawn(&spec, run) {
                    Ok(running) => running,
                    Err(reason) => {
                        m.app.set(State::Starting, |s| s.pid = None);
                        self.start_failed(&name, token, reason, false);
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

    pub(super) fn ready(&mut self, name: &str, token: u64) {
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
    pub(super) fn start_failed(&mut self, name: &str, token: u64, reason: String, timed_out: bool) {
        let Some(m) = self.apps.get_mut(name) else {
            return;
        };
        if m.token != token || m.app.state() != State::Starting {
            return;
        }
        if let Some(task) = m.starting.take() {
            task.abort();
        }
        let reason = tasks::with_log(reason, &m.started_with);
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
        // A `start` command may have started something (`docker compose up -d` done, the
        // health URL late): its `stop` command runs as for any stop.
        let stop_command = match &m.started_with.control {
            config::Control::Commands { stop, .. } => Some(stop.clone()),
            config::Control::Run(_) => None,
        };
        let next = match m.stop.is_some() || stop_command.is_some() {
            true => State::Stopping,
            false => State::Stopped,
        };
        m.app.set(next, |s| {
            s.failures += 1;
            s.failure = Some(failure);
            s.timed_out = timed_out;
            s.retry_at = Some(retry_at);
        });
        let grace = m.started_with.stop_timeout;
        if let Some(stop) = m.stop.take() {
            m.stopping = Some(Reason::Failed);
            let _ = stop.send(grace);
        } else if let Some(stop) = stop_command {
            m.stopping = Some(Reason::Failed);
            let events = self.reports.clone();
            let name = m.app.name.clone();
            tokio::spawn(tasks::stop_command(name, token, stop, grace, events));
        }
    }

    pub(super) fn exited(&mut self, name: &str, token: u64, status: Option<String>) {
        let Some(m) = self.apps.get_mut(name) else {
            return;
        };
        if m.token != token {
            return;
        }
        m.stop = None;
        let device = m.started_with.gpu.map(|g| g.device);
        let status = status.unwrap_or_else(|| "ended".to_string());
        if let Some(device) = device {
            self.gpu_released(device);
        }
        let Some(m) = self.apps.get_mut(name) else {
            return;
        };
        if m.app.state() == State::Starting {
            let reason = format!("the app {status} while starting");
            self.start_failed(name, token, reason, false);
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

    pub(super) fn stopped(&mut self, name: &str, token: u64, how: &str) {
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
        let device = m.started_with.gpu.map(|g| g.device);
        if m.removed {
            self.apps.remove(name);
        }
        if let Some(device) = device {
            self.gpu_released(device);
        }
        self.save();
    }

    pub(super) fn now_stopped(m: &mut Managed) {
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
    pub(super) fn drain(&mut self, name: &str, reason: Reason) {
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

    pub(super) fn drained(&mut self, name: &str) {
        let drained = self
            .apps
            .get(name)
            .is_some_and(|m| m.app.state() == State::Draining && m.app.in_flight() == 0);
        if drained {
            self.stop_now(name);
        }
    }

    /// Stops the app's process (or runs its `stop` command) now.
    pub(super) fn stop_now(&mut self, name: &str) {
        let events = self.reports.clone();
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
        let started_with = m.started_with.clone();
        match &started_with.control {
            config::Control::Run(_) => match m.stop.take() {
                Some(stop) => {
                    let _ = stop.send(started_with.stop_timeout);
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
                    started_with.stop_timeout,
                    events,
                ));
            }
        }
    }
}
