//! Which app starts next, and what stops for it: demands in the order they came, the
//! room plan (`room`), idle stops, and apps drained for room that no one waits for any more.

use std::sync::Arc;
use std::time::Instant;

use super::super::app::State;
use super::super::room::{self, Plan, Seen, Why};
use super::{Coordinator, Managed, Reason};
use crate::config;

impl Coordinator {
    pub(super) fn demand(&mut self, name: &str, operator: bool) {
        let Some(m) = self.apps.get_mut(name) else {
            return;
        };
        let now = Instant::now();
        let status = m.app.current();
        // Ready or starting: nothing to do (a demand that arrives after the start it
        // waited for must not start the app again after its next stop).
        if matches!(status.state, State::Ready | State::Starting) {
            return;
        }
        let backing_off = status.retry_at.is_some_and(|at| at > now);
        if backing_off && !operator {
            return;
        }
        let since = m.wanted.map_or(now, |(since, _)| since);
        m.wanted = Some((since, now + m.spec.start_timeout));
    }

    /// Starts the wanted apps that can start, oldest demand first; makes room for those
    /// that cannot yet.
    pub(super) fn schedule(&mut self) {
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
                Decided::Start if !self.gpu_settled(&name) => {}
                Decided::Start => self.start(&name),
                Decided::Stop(victims) => {
                    for (victim, why) in victims {
                        let reason = match why {
                            Why::Room => Reason::Room,
                            Why::Exclusive => Reason::Exclusive,
                        };
                        self.drain(&victim, reason);
                        if let Some(v) = self.apps.get_mut(victim.as_str()) {
                            v.drained_for = Some(name.clone());
                        }
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
        let now = Instant::now();
        let x = seen(x, &self.settings, now);
        let others: Vec<Seen> = self
            .apps
            .iter()
            .filter(|(n, _)| &***n != name)
            .map(|(_, m)| seen(m, &self.settings, now))
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

    pub(super) fn tick(&mut self) {
        self.watch_gpus();
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
                && !m.kept(now)
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

    /// Apps draining to make room for another that no request wants any more (or that
    /// is gone) open again.
    pub(super) fn undrain_unneeded(&mut self) {
        let waiting: Vec<Arc<str>> = self
            .apps
            .iter()
            .filter(|(_, m)| m.wanted.is_some() && m.app.state() == State::Stopped)
            .map(|(name, _)| name.clone())
            .collect();
        for m in self.apps.values_mut() {
            let for_room = matches!(m.stopping, Some(Reason::Room | Reason::Exclusive));
            let still_needed = m.drained_for.as_ref().is_some_and(|x| waiting.contains(x));
            if m.app.state() == State::Draining && for_room && !still_needed {
                m.stopping = None;
                m.drained_for = None;
                m.app.set(State::Ready, |_| {});
            }
        }
    }
}

/// An app as the room plan sees it: a running app by the settings it was started with
/// (the memory it holds), a stopped one by the configuration's.
fn seen<'a>(m: &'a Managed, settings: &'a config::Apps, now: Instant) -> Seen<'a> {
    let state = m.app.state();
    let spec = match state {
        State::Stopped => &m.spec,
        _ => &m.started_with,
    };
    let in_group = |pick: fn(&config::Group) -> bool| {
        spec.groups
            .iter()
            .filter(move |g| settings.group(g).is_some_and(pick))
    };
    Seen {
        name: &m.spec.name,
        gpu: spec.gpu,
        state,
        in_flight: m.app.in_flight(),
        waiting: m.app.waiting(),
        idle_for: m.app.idle_for(),
        keep_loaded: in_group(|g| g.keep_loaded).next().is_some(),
        pinned: m.kept(now),
        exclusive: in_group(|g| g.exclusive).map(String::as_str).collect(),
    }
}

enum Decided {
    Start,
    Stop(Vec<(String, Why)>),
    Wait,
}
