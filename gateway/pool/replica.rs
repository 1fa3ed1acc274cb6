//! One replica of a route's app: its health and the requests it is serving. Kept across
//! reloads for as long as the route (by name) lists its address, so that its health,
//! its counts and its in-flight requests are not reset by an unrelated change.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use log::{info, warn};
use parking_lot::Mutex;
use prometheus::IntGauge;

use crate::metrics::{unregistered_gauge as unregistered, Metrics, ReplicaSeries};

/// A replica of an app and its state.
pub struct Replica {
    pub route: Arc<str>,
    pub addr: SocketAddr,
    /// `addr` as text, for the access log.
    pub addr_text: Box<str>,
    /// Taking requests. Read on every request; written on a change of health.
    up: AtomicBool,
    /// Consecutive check results against the current state.
    streak: Mutex<Streak>,
    /// When a replica ejected by failed connects, in a pool without active checks, may
    /// be tried by one request again (ms since `epoch()`); 0: no trial pending.
    retry_at: AtomicU64,
    /// Requests in progress (`gateway_upstream_in_flight`), WebSockets not counted.
    pub in_flight: IntGauge,
    /// Open WebSockets, counted for `least_conn` only.
    pub tunnels: AtomicI64,
    up_gauge: IntGauge,
    /// No longer in the configuration: gets no new requests, its own finish.
    retired: AtomicBool,
    /// An active check of it is running.
    pub(super) checking: AtomicBool,
    series: Option<ReplicaSeries>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("route", &self.route)
            .field("addr", &self.addr)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Streak {
    good: u32,
    bad: u32,
}

/// What a check or a connect said about a replica.
pub enum Observed<'a> {
    Good,
    Bad(&'a str),
}

/// The reference point of `retry_at`.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    // Starts at 1 so that 0 can mean "no trial pending".
    epoch().elapsed().as_millis() as u64 + 1
}

impl Replica {
    pub fn new(route: Arc<str>, addr: SocketAddr, metrics: Option<&Metrics>) -> Arc<Replica> {
        let series = metrics.map(|m| m.replica(&route, addr));
        let (in_flight, up_gauge) = match &series {
            Some(s) => (s.in_flight.clone(), s.up.clone()),
            None => (unregistered("in_flight"), unregistered("up")),
        };
        up_gauge.set(1);
        Arc::new(Replica {
            route,
            addr,
            addr_text: addr.to_string().into(),
            up: AtomicBool::new(true),
            streak: Mutex::new(Streak::default()),
            retry_at: AtomicU64::new(0),
            in_flight,
            tunnels: AtomicI64::new(0),
            up_gauge,
            retired: AtomicBool::new(false),
            checking: AtomicBool::new(false),
            series,
        })
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Up, and still in the configuration.
    pub fn serving(&self) -> bool {
        self.is_up() && !self.retired.load(Ordering::Relaxed)
    }

    /// Requests and WebSockets in progress, for `least_conn`.
    pub fn load(&self) -> i64 {
        self.in_flight.get() + self.tunnels.load(Ordering::Relaxed)
    }

    /// Out of the configuration (a reload removed it).
    pub fn retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Marks it out of the configuration (a reload removed it).
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
    }

    /// Configured again after a reload removed it.
    pub fn unretire(&self) {
        self.retired.store(false, Ordering::Relaxed);
    }

    /// Down with a trial due (passive-only pools): claims the trial, so that one request
    /// at a time tries it, and the next trial is `retry` later.
    pub fn claim_trial(&self, retry: Duration) -> bool {
        let due = self.retry_at.load(Ordering::Relaxed);
        let now = now_ms();
        due != 0
            && due <= now
            && !self.retired.load(Ordering::Relaxed)
            && self
                .retry_at
                .compare_exchange(
                    due,
                    now + retry.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Whether a trial could be claimed now (no side effect).
    pub fn trial_due(&self) -> bool {
        let due = self.retry_at.load(Ordering::Relaxed);
        due != 0 && due <= now_ms() && !self.retired.load(Ordering::Relaxed)
    }

    /// A failed connect: the replica is ejected at once (the app is not listening, or
    /// not answering at all). Without active checks, one request may try it again after
    /// `retry`. Returns true when this changed its state.
    pub fn connect_failed(&self, reason: &str, retry: Option<Duration>) -> bool {
        {
            let mut streak = self.streak.lock();
            streak.good = 0;
        }
        if let Some(retry) = retry {
            self.retry_at
                .store(now_ms() + retry.as_millis() as u64, Ordering::Relaxed);
        }
        self.set_up(false, reason)
    }

    /// A connect that worked, on a pool without active checks: a replica on trial is
    /// back.
    pub fn connected(&self) -> bool {
        if self.is_up() {
            return false;
        }
        self.retry_at.store(0, Ordering::Relaxed);
        self.set_up(true, "a connect succeeded")
    }

    /// An active check's result; a change of state takes `after` results in a row
    /// (`unhealthy_after` bad ones, `healthy_after` good ones). Returns true when this
    /// changed its state.
    pub fn observe(&self, seen: Observed<'_>, unhealthy_after: u32, healthy_after: u32) -> bool {
        let up = self.is_up();
        let (flip, reason) = {
            let mut streak = self.streak.lock();
            match seen {
                Observed::Good => {
                    streak.bad = 0;
                    streak.good = streak.good.saturating_add(1);
                    (!up && streak.good >= healthy_after, "health check passed")
                }
                Observed::Bad(reason) => {
                    streak.good = 0;
                    streak.bad = streak.bad.saturating_add(1);
                    (up && streak.bad >= unhealthy_after, reason)
                }
            }
        };
        if !flip {
            return false;
        }
        let changed = self.set_up(!up, reason);
        if changed {
            *self.streak.lock() = Streak::default();
        }
        changed
    }

    /// Sets the state; logs and exports a change once.
    fn set_up(&self, up: bool, reason: &str) -> bool {
        if self.up.swap(up, Ordering::Relaxed) == up {
            return false;
        }
        self.up_gauge.set(i64::from(up));
        if up {
            info!(
                "event=upstream_up route={} upstream={} reason=\"{reason}\"",
                self.route, self.addr
            );
        } else {
            warn!(
                "event=upstream_down route={} upstream={} reason=\"{reason}\"",
                self.route, self.addr
            );
        }
        true
    }
}

impl Drop for Replica {
    /// The last request of a removed replica is done: its series go.
    fn drop(&mut self) {
        if let Some(series) = &self.series {
            series.remove();
        }
    }
}
