//! Which replica a request gets: the one it is pinned to (cookie or address) while it
//! is usable, else by `balance` among the usable ones with room.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::replica::Replica;
use super::sticky::Placement;
use super::Pool;
use crate::config::Balance;

pub(super) enum Choice {
    Use(usize),
    /// Every replica it may use is at the cap: wait for this one, or for any (`None`).
    Wait(Option<usize>),
    Down,
}

/// Which replicas a request may use now, and the claim on a down one due a trial.
struct Usable<'a> {
    pool: &'a Pool,
    exclude: Option<&'a Arc<Replica>>,
    retry: Option<Duration>,
    /// The only replica of a pool without active checks is always tried (nginx does the
    /// same): one failed connect must not turn the next seconds into 503s for a route
    /// with nowhere else to go. Its state is still logged and exported.
    always: bool,
}

impl Usable<'_> {
    fn replica(&self, i: usize) -> &Arc<Replica> {
        &self.pool.members[i].replica
    }

    /// Up (or due a trial, or the pool's only one), not the one excluded, and, for a
    /// replica that is a managed app, ready.
    fn usable(&self, i: usize) -> bool {
        let r = self.replica(i);
        let app_ready = self.pool.members[i]
            .app
            .as_ref()
            .is_none_or(|a| a.state() == crate::apps::State::Ready);
        app_ready
            && self.exclude.is_none_or(|x| !Arc::ptr_eq(x, r))
            && (r.serving()
                || (self.always && !r.retired())
                || (self.retry.is_some() && r.trial_due()))
    }

    /// A down replica due a trial is used by one request only: claim it, or look again
    /// without it.
    fn claim(&self, i: usize) -> bool {
        let r = self.replica(i);
        r.serving() || self.always || self.retry.is_some_and(|retry| r.claim_trial(retry))
    }
}

impl Pool {
    /// The replica for `placement` among those up (or due a trial), other than
    /// `exclude`, with `room`.
    pub(super) fn choose(
        &self,
        placement: &Placement,
        exclude: Option<&Arc<Replica>>,
        room: impl Fn(&Replica) -> bool,
    ) -> Choice {
        let retry = self.passive_retry();
        let can = Usable {
            pool: self,
            exclude,
            retry,
            always: retry.is_some() && self.members.len() == 1,
        };
        let pinned = match placement {
            Placement::Cookie(i) => Some(*i).filter(|&i| can.usable(i)),
            Placement::Address(ip) => self
                .sticky
                .as_ref()
                .and_then(|s| s.by_address(*ip).find(|&i| can.usable(i))),
            Placement::Balance => None,
        };
        if let Some(i) = pinned {
            if !room(&self.members[i].replica) {
                return Choice::Wait(Some(i));
            }
            if can.claim(i) {
                return Choice::Use(i);
            }
        }
        if self.members.len() == 1 {
            // A pool of one (most routes): no turn to take.
            return match (can.usable(0), room(&self.members[0].replica)) {
                (false, _) => Choice::Down,
                (true, false) => Choice::Wait(None),
                (true, true) if can.claim(0) => Choice::Use(0),
                (true, true) => Choice::Down,
            };
        }
        self.by_balance(&can, room)
    }

    /// By `balance`, from the next replica's turn on.
    fn by_balance(&self, can: &Usable, room: impl Fn(&Replica) -> bool) -> Choice {
        let n = self.members.len();
        let start = self.turn.fetch_add(1, Ordering::Relaxed);
        // Each failed claim moves that replica's trial on, so it is not chosen again.
        for _ in 0..=n {
            let mut any_usable = false;
            let mut best: Option<(usize, i64)> = None;
            for i in (0..n).map(|k| (start + k) % n) {
                if !can.usable(i) {
                    continue;
                }
                any_usable = true;
                let r = &self.members[i].replica;
                if !room(r) {
                    continue;
                }
                let load = match self.balance {
                    Balance::LeastConn => r.load(),
                    Balance::RoundRobin => 0,
                };
                if best.is_none_or(|(_, b)| load < b) {
                    best = Some((i, load));
                    if self.balance == Balance::RoundRobin {
                        break;
                    }
                }
            }
            match best {
                Some((i, _)) if can.claim(i) => return Choice::Use(i),
                Some(_) => continue,
                None if any_usable => return Choice::Wait(None),
                None => return Choice::Down,
            }
        }
        Choice::Down
    }
}
