//! Room on a GPU: whether an app can start now, which apps must stop first, or whether
//! it must wait. Pure: the coordinator gives each app's state and use, this gives the
//! plan.
//!
//! Before app X starts: the other members of X's exclusive groups stop first. Then, when
//! the memory declared by the apps running on X's device plus X's exceeds the device's
//! budget, apps are stopped to make room: those without a request in flight first, the
//! longest unused first; never a `keep_loaded` app. An app that is stopped for room is
//! closed to new requests and stopped once its requests in flight are done, so no
//! request is ever cut. When even that cannot make room, X waits.

use std::time::Duration;

use super::app::State;
use crate::config::GpuNeed;

/// One app as the plan sees it.
#[derive(Debug, Clone)]
pub struct Seen<'a> {
    pub name: &'a str,
    pub gpu: Option<GpuNeed>,
    pub state: State,
    pub in_flight: u32,
    /// Requests held for it (just woken by its start): it is not stopped under them.
    pub waiting: u32,
    pub idle_for: Duration,
    pub keep_loaded: bool,
    /// Not to be stopped at all now (adopted while a previous gateway process may
    /// still serve it, or without a process to stop).
    pub pinned: bool,
    /// The exclusive groups it belongs to.
    pub exclusive: Vec<&'a str>,
}

impl Seen<'_> {
    fn running(&self) -> bool {
        self.state != State::Stopped
    }

    /// On its way out: its memory will be free without stopping anything else.
    fn leaving(&self) -> bool {
        matches!(self.state, State::Draining | State::Stopping)
    }

    fn on(&self, device: u32) -> Option<u64> {
        self.gpu.filter(|g| g.device == device).map(|g| g.memory)
    }
}

/// Why an app is stopped to let another start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Exclusive,
    Room,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Plan<'a> {
    /// Start it now.
    Start,
    /// Stop these first (each when its requests are done), then plan again.
    Stop(Vec<(&'a str, Why)>),
    /// Apps are already on their way out, or no room can be made yet: plan again when
    /// one stops or becomes idle.
    Wait,
}

/// The plan for starting `x` among `others`, with `budget` the memory of `x`'s device.
pub fn plan<'a>(x: &Seen<'a>, others: &[Seen<'a>], budget: Option<u64>) -> Plan<'a> {
    let rivals: Vec<&Seen> = others
        .iter()
        .filter(|o| o.running() && o.exclusive.iter().any(|g| x.exclusive.contains(g)))
        .collect();
    if !rivals.is_empty() {
        let staying: Vec<&&Seen> = rivals.iter().filter(|o| !o.leaving()).collect();
        // A rival with requests held for it serves them first (else two apps that
        // cannot run together would stop each other the moment each is ready).
        if staying.iter().any(|o| o.waiting > 0 || o.pinned) {
            return Plan::Wait;
        }
        let to_stop: Vec<_> = staying.iter().map(|o| (o.name, Why::Exclusive)).collect();
        return match to_stop.is_empty() {
            true => Plan::Wait,
            false => Plan::Stop(to_stop),
        };
    }
    let (Some(need), Some(budget)) = (x.gpu, budget) else {
        return Plan::Start;
    };
    let device = need.device;
    let used: u64 = others
        .iter()
        .filter(|o| o.running())
        .filter_map(|o| o.on(device))
        .sum();
    if used + need.memory <= budget {
        return Plan::Start;
    }
    let leaving: u64 = others
        .iter()
        .filter(|o| o.leaving())
        .filter_map(|o| o.on(device))
        .sum();
    if used - leaving + need.memory <= budget {
        return Plan::Wait;
    }
    let mut candidates: Vec<&Seen> = others
        .iter()
        .filter(|o| o.state == State::Ready && !o.keep_loaded && !o.pinned && o.waiting == 0)
        .filter(|o| o.on(device).is_some())
        .collect();
    // Unused first, then the longest unused.
    candidates.sort_by_key(|o| (o.in_flight > 0, std::cmp::Reverse(o.idle_for)));
    let mut remaining = used - leaving;
    let mut victims = Vec::new();
    for o in candidates {
        if remaining + need.memory <= budget {
            break;
        }
        remaining -= o.on(device).unwrap_or(0);
        victims.push((o.name, Why::Room));
    }
    match remaining + need.memory <= budget {
        true => Plan::Stop(victims),
        false => Plan::Wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn app(name: &str, memory: u64, state: State) -> Seen<'_> {
        Seen {
            name,
            gpu: Some(GpuNeed {
                device: 0,
                memory: memory * GIB,
            }),
            state,
            in_flight: 0,
            waiting: 0,
            idle_for: Duration::ZERO,
            keep_loaded: false,
            pinned: false,
            exclusive: Vec::new(),
        }
    }

    #[test]
    fn starts_when_it_fits() {
        let x = app("x", 12, State::Stopped);
        let others = [app("a", 10, State::Ready), app("b", 6, State::Stopped)];
        assert_eq!(plan(&x, &others, Some(24 * GIB)), Plan::Start);
        // No GPU, or no budget for its device: nothing to make room for.
        let mut cpu = x.clone();
        cpu.gpu = None;
        assert_eq!(plan(&cpu, &others, Some(24 * GIB)), Plan::Start);
    }

    #[test]
    fn stops_the_unused_then_the_longest_unused_never_a_kept_one() {
        let x = app("x", 12, State::Stopped);
        let mut busy = app("busy", 10, State::Ready);
        busy.in_flight = 1;
        busy.idle_for = Duration::from_secs(100);
        let mut old = app("old", 6, State::Ready);
        old.idle_for = Duration::from_secs(50);
        let mut recent = app("recent", 6, State::Ready);
        recent.idle_for = Duration::from_secs(1);
        let mut kept = app("kept", 2, State::Ready);
        kept.keep_loaded = true;
        kept.idle_for = Duration::from_secs(1000);
        let others = [busy.clone(), old, recent, kept];
        // 24 used of 32: 4 more needed; the longest-unused idle app is enough.
        assert_eq!(
            plan(&x, &others, Some(32 * GIB)),
            Plan::Stop(vec![("old", Why::Room)])
        );
        // 24 used of 24: both idle apps go.
        assert_eq!(
            plan(&x, &others, Some(24 * GIB)),
            Plan::Stop(vec![("old", Why::Room), ("recent", Why::Room)])
        );
        // 24 used of 20: then the busy one too (drained, not cut).
        assert_eq!(
            plan(&x, &others, Some(20 * GIB)),
            Plan::Stop(vec![
                ("old", Why::Room),
                ("recent", Why::Room),
                ("busy", Why::Room)
            ])
        );
        // Only the kept app would free enough: wait.
        let only_kept = [app("x2", 10, State::Starting), others[3].clone()];
        assert_eq!(plan(&x, &only_kept, Some(22 * GIB)), Plan::Wait);
    }

    #[test]
    fn never_stops_an_app_under_its_held_requests_nor_a_pinned_one() {
        let x = app("x", 12, State::Stopped);
        let mut woken = app("woken", 12, State::Ready);
        woken.waiting = 3;
        let mut pinned = app("pinned", 12, State::Ready);
        pinned.pinned = true;
        assert_eq!(plan(&x, &[woken.clone()], Some(20 * GIB)), Plan::Wait);
        assert_eq!(plan(&x, &[pinned], Some(20 * GIB)), Plan::Wait);
        let (mut xe, mut we) = (x.clone(), woken.clone());
        xe.exclusive = vec!["g"];
        we.exclusive = vec!["g"];
        we.gpu = None;
        assert_eq!(plan(&xe, &[we.clone()], None), Plan::Wait);
        we.waiting = 0;
        assert_eq!(
            plan(&xe, &[we], None),
            Plan::Stop(vec![("woken", Why::Exclusive)])
        );
    }

    #[test]
    fn waits_for_apps_already_leaving() {
        let x = app("x", 12, State::Stopped);
        let others = [app("a", 12, State::Stopping), app("b", 6, State::Ready)];
        assert_eq!(plan(&x, &others, Some(20 * GIB)), Plan::Wait);
    }

    #[test]
    fn exclusive_members_stop_first_whatever_the_memory() {
        let mut x = app("x", 1, State::Stopped);
        x.exclusive = vec!["studio"];
        let mut a = app("a", 1, State::Ready);
        a.exclusive = vec!["studio"];
        a.in_flight = 3;
        let mut b = app("b", 1, State::Stopping);
        b.exclusive = vec!["studio"];
        let c = app("c", 1, State::Ready);
        assert_eq!(
            plan(&x, &[a.clone(), c.clone()], Some(100 * GIB)),
            Plan::Stop(vec![("a", Why::Exclusive)])
        );
        assert_eq!(plan(&x, &[b, c.clone()], Some(100 * GIB)), Plan::Wait);
        a.state = State::Stopped;
        assert_eq!(plan(&x, &[a, c], Some(100 * GIB)), Plan::Start);
    }
}
