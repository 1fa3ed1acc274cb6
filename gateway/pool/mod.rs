//! A route's replicas at run time (`Pool`): which one a request goes to, how many
//! requests each may have (`max_concurrent`, with the route's queue), which are healthy.
//! Built with each configuration; a replica's state (`Replica`) and a route's queue
//! (`Queue`) outlive a reload that keeps them (see `Kept`).
//!
//! ```text
//! place: cookie ─┐ (sticky) the pinned replica, while it is up
//!        address ┤ (a client without cookies) the first up replica on the hash ring
//!        balance ┘ least_conn / round_robin over the up replicas
//!   no replica up ─────────────────────────> Down (503)
//!   capped, none with room: the queue ──> a slot handed over | Full | Timeout (503)
//! replace: after a failed connect, another replica with room, at once (one retry)
//! ```

mod choose;
mod health;
mod kept;
mod lease;
mod queue;
mod replica;
mod sticky;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use crate::config::{Balance, HealthCheck, QueueSettings, Route, PASSIVE_RETRY};
use crate::metrics::Metrics;
use choose::Choice;
pub use health::HealthChecks;
use kept::revive;
pub use kept::Kept;
pub use lease::Lease;
use queue::{Handed, Queue};
pub use replica::Replica;
use sticky::Placement;
pub use sticky::Sticky;

/// How long an idle pooled upstream connection is kept.
const UPSTREAM_IDLE: Duration = Duration::from_secs(60);

/// A route's replicas and how they share its requests.
#[derive(Debug)]
pub struct Pool {
    pub route: Arc<str>,
    members: Box<[Member]>,
    balance: Balance,
    /// Where `round_robin` starts next, and where `least_conn` starts breaking ties.
    turn: AtomicUsize,
    sticky: Option<Sticky>,
    cap: Option<u32>,
    queue: Arc<Queue>,
    queue_settings: QueueSettings,
    /// Active checks; `None`: passive only.
    pub health: Option<HealthCheck>,
}

#[derive(Debug)]
struct Member {
    peer: HttpPeer,
    replica: Arc<Replica>,
    /// The managed app that is this replica (`app: [A, B]`): used only while ready.
    app: Option<Arc<crate::apps::App>>,
    /// The sticky cookie's value for this replica.
    token: Box<[u8]>,
    set_cookie: Option<HeaderValue>,
}

/// Why a request got no replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Every replica is down.
    Down,
    /// Every replica is at `max_concurrent` and the queue is full.
    Full,
    /// Waited `queue.timeout` without a free replica.
    Timeout,
}

/// A request that got no replica at once.
pub enum Pending {
    Unavailable(Unavailable),
    /// In the queue: `Pool::wait` for the slot.
    Wait(Waiting),
}

/// A request's place in the queue.
pub struct Waiting {
    ticket: queue::Ticket,
    placement: Placement,
    /// When the request came (the queue's timeout and wait time count from it).
    since: Instant,
}

/// A request's replica.
pub struct Placed {
    pub lease: Lease,
    /// The cookie that pins the client to it, when the request did not carry it.
    pub set_cookie: Option<HeaderValue>,
}

impl Pool {
    /// The pool of `route`: each replica taken from `old` (what the previous
    /// configuration left) when it is listed again, else new; recorded in `kept` for the
    /// next configuration.
    pub fn build(
        route: &Route,
        kept: &mut Kept,
        old: &mut Kept,
        metrics: Option<&Metrics>,
        apps: &HashMap<String, Arc<crate::apps::App>>,
    ) -> Pool {
        let name: Arc<str> = route.name.as_str().into();
        let settings = &route.pool;
        let sticky = (settings.sticky && route.upstreams.len() > 1)
            .then(|| Sticky::new(&name, &route.upstreams));
        let members = route
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, &addr)| {
                let key = (name.clone(), addr);
                let replica = old
                    .replicas
                    .remove(&key)
                    .or_else(|| revive(&old.retired, &key))
                    .unwrap_or_else(|| Replica::new(name.clone(), addr, metrics));
                kept.replicas.insert(key, replica.clone());
                let mut peer = HttpPeer::new(addr, false, String::new());
                peer.options.connection_timeout = route.connect_timeout;
                peer.options.read_timeout = route.read_timeout;
                peer.options.write_timeout = route.write_timeout;
                peer.options.idle_timeout = Some(UPSTREAM_IDLE);
                let token = Sticky::token(&name, addr);
                let set_cookie = sticky.as_ref().and_then(|s| s.set_cookie(&token));
                let app = route.replica_apps.get(i).and_then(|a| apps.get(a)).cloned();
                Member {
                    peer,
                    replica,
                    app,
                    token,
                    set_cookie,
                }
            })
            .collect();
        let queue = old
            .queues
            .remove(&name)
            .unwrap_or_else(|| Queue::new(&name, metrics));
        kept.queues.insert(name.clone(), queue.clone());
        let pool = Pool {
            route: name,
            members,
            balance: settings.balance,
            turn: AtomicUsize::new(0),
            sticky,
            cap: settings.max_concurrent,
            queue,
            queue_settings: settings.queue,
            health: settings.health.clone(),
        };
        // A cap this configuration raised (or removed) lets waiters in now.
        let cap = pool.cap.unwrap_or(u32::MAX);
        for m in pool.members.iter() {
            pool.queue.refill(&m.replica, cap);
        }
        pool
    }

    /// The managed app that is `replica` (`app: [A, B]`), if any.
    pub fn app_of(&self, replica: &Arc<Replica>) -> Option<&Arc<crate::apps::App>> {
        let member = self
            .members
            .iter()
            .find(|m| Arc::ptr_eq(&m.replica, replica))?;
        member.app.as_ref()
    }

    /// The replicas, for the health checks and the exposed-upstream check.
    pub fn replicas(&self) -> impl Iterator<Item = &Arc<Replica>> {
        self.members.iter().map(|m| &m.replica)
    }

    /// The connection settings for `replica`.
    pub fn peer(&self, replica: &Arc<Replica>) -> HttpPeer {
        match self
            .members
            .iter()
            .find(|m| Arc::ptr_eq(&m.replica, replica))
        {
            Some(m) => m.peer.clone(),
            None => {
                // A slot of a replica this configuration dropped, handed to a request
                // that was queued before the reload: same settings, its address.
                let mut peer = self.members[0].peer.clone();
                peer._address = pingora::protocols::l4::socket::SocketAddr::Inet(replica.addr);
                peer
            }
        }
    }

    /// Seconds a client is told to wait (`Retry-After`) when a request got no replica (`why`).
    pub fn retry_after(&self, why: Unavailable) -> u64 {
        let wait = match why {
            Unavailable::Down => self.health.as_ref().map_or(PASSIVE_RETRY, |h| h.interval),
            Unavailable::Full | Unavailable::Timeout => self.queue_settings.timeout,
        };
        wait.as_secs().clamp(1, 60)
    }

    /// A replica for `req` from `client`, at once; or a place in the queue, when every
    /// replica it may use is at the cap (`wait`). An upgrade request is placed like any
    /// other: it holds a slot until the app answers (see `Lease::into_tunnel`).
    pub fn place(&self, req: &RequestHeader, client: IpAddr) -> Result<Placed, Pending> {
        let placement = match &self.sticky {
            Some(s) => s.placement(req, client, |v| {
                self.members.iter().position(|m| &*m.token == v)
            }),
            None => Placement::Balance,
        };
        match self.cap {
            Some(cap) => self.try_capped(placement, cap, Instant::now()),
            None => match self.choose(&placement, None, |_| true) {
                Choice::Use(i) | Choice::Wait(Some(i)) => {
                    let lease = Lease::request(self.members[i].replica.clone(), None);
                    Ok(self.placed(lease, &placement))
                }
                Choice::Wait(None) | Choice::Down => Err(Pending::Unavailable(Unavailable::Down)),
            },
        }
    }

    /// Waits in the queue for a slot, until `queue.timeout` after the request came.
    pub async fn wait(&self, mut waiting: Waiting) -> Result<Placed, Unavailable> {
        let Some(cap) = self.cap else {
            return Err(Unavailable::Down);
        };
        let deadline = waiting.since + self.queue_settings.timeout;
        // A waiter whose pinned replica goes down chooses again; each round has one
        // replica fewer, so few rounds are needed.
        for _ in 0..=self.members.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match Queue::wait(&mut waiting.ticket, left).await {
                Some(Handed::Slot(lease)) => {
                    self.queue.waited(waiting.since);
                    return Ok(self.placed(lease, &waiting.placement));
                }
                Some(Handed::Replace) => {
                    match self.try_capped(Placement::Balance, cap, waiting.since) {
                        Ok(placed) => return Ok(placed),
                        Err(Pending::Unavailable(why)) => return Err(why),
                        Err(Pending::Wait(again)) => waiting = again,
                    }
                }
                None => break,
            }
        }
        self.queue.waited(waiting.since);
        Err(Unavailable::Timeout)
    }

    /// A slot under `cap` now, or a place in the queue, under the queue's lock.
    fn try_capped(
        &self,
        placement: Placement,
        cap: u32,
        since: Instant,
    ) -> Result<Placed, Pending> {
        let mut waiters = self.queue.lock();
        let room = |r: &Replica| r.in_flight.get() < i64::from(cap);
        let pin = match self.choose(&placement, None, room) {
            Choice::Use(i) => {
                let replica = self.members[i].replica.clone();
                let lease = Lease::request(replica, Some(self.queue.clone()));
                drop(waiters);
                self.queue.waited(since);
                return Ok(self.placed(lease, &placement));
            }
            Choice::Down => return Err(Pending::Unavailable(Unavailable::Down)),
            Choice::Wait(pin) => pin.map(|i| self.members[i].replica.clone()),
        };
        match self.queue.join(&mut waiters, pin, self.queue_settings.size) {
            Some(ticket) => Err(Pending::Wait(Waiting {
                ticket,
                placement,
                since,
            })),
            None => Err(Pending::Unavailable(Unavailable::Full)),
        }
    }

    /// Another replica than `failed` (whose connect failed), at once: no waiting.
    pub fn replace(&self, failed: &Arc<Replica>) -> Option<Placed> {
        let cap = self.cap;
        let guard = cap.map(|_| self.queue.lock());
        let room = |r: &Replica| cap.is_none_or(|cap| r.in_flight.get() < i64::from(cap));
        let Choice::Use(i) = self.choose(&Placement::Balance, Some(failed), room) else {
            return None;
        };
        let replica = self.members[i].replica.clone();
        let lease = Lease::request(replica, cap.map(|_| self.queue.clone()));
        drop(guard);
        Some(self.placed(lease, &Placement::Balance))
    }

    /// A change of `replica`'s health: waiters pinned to a replica gone down choose
    /// again; one back up takes waiters.
    pub fn health_changed(&self, replica: &Arc<Replica>) {
        if replica.is_up() {
            if let Some(cap) = self.cap {
                self.queue.refill(replica, cap);
            }
        } else {
            self.queue.unpin(replica);
        }
    }

    /// How long a replica ejected by a failed connect waits for its trial: `None` when
    /// active checks bring it back.
    pub fn passive_retry(&self) -> Option<Duration> {
        self.health.is_none().then_some(PASSIVE_RETRY)
    }

    fn placed(&self, lease: Lease, placement: &Placement) -> Placed {
        let member = self
            .members
            .iter()
            .position(|m| Arc::ptr_eq(&m.replica, lease.replica()));
        let set_cookie = match (placement, member) {
            (Placement::Cookie(pinned), Some(i)) if *pinned == i => None,
            (_, Some(i)) => self.members[i].set_cookie.clone(),
            (_, None) => None,
        };
        Placed { lease, set_cookie }
    }
}
