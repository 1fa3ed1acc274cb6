//! Failed logins per client (`auth_failures: { limit, per }`): a client's first failure
//! opens a window of `per`; once `limit` failures fall in it, every request the client
//! makes to the route gets 429 until the window closes, whatever credentials it sends.
//! That bounds password guessing to `limit` tries per `per` per address.
//!
//! Guesses sent together count too: a verification in flight is a failure that may yet
//! happen, so a client never has more verifications running than it has failures left
//! (`reserve`). Its other logins wait for those to end: a right password frees its
//! place, a wrong one uses it up, and once the limit is reached every waiter gets 429.
//! Sixty guesses released together against a limit of 3 are three verifications and
//! fifty-seven 429s; two hundred right passwords from one address are all served.
//!
//! State is bounded: at most `MAX_CLIENTS` addresses per route, in shards of
//! least-recently-used maps (a client forgotten under pressure starts a new window,
//! as it would after waiting).
//!
//! With `limits_store`, the counts live in the store, shared by every replica; each
//! replica still counts its own too, which is what `on_error: local` falls back on.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::config::{FailureLimit, OnStoreError};
use crate::limits::client_bucket;
use crate::limits_store::{self, LimitsStore};

/// Most clients remembered per route.
pub const MAX_CLIENTS: usize = 100_000;
const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Window {
    opened: Instant,
    failures: u32,
    /// Verifications running now (`reserve`); never forgotten while any are.
    in_flight: u32,
    /// Logins waiting in `reserve` for a place.
    waiting: u32,
}

impl Window {
    fn new(failures: u32) -> Window {
        Window {
            opened: Instant::now(),
            failures,
            in_flight: 0,
            waiting: 0,
        }
    }

    /// A new window of `failures`, keeping the logins in progress.
    fn reopened(&self, failures: u32) -> Window {
        Window {
            in_flight: self.in_flight,
            waiting: self.waiting,
            ..Window::new(failures)
        }
    }

    fn busy(&self) -> bool {
        self.in_flight > 0 || self.waiting > 0
    }
}

/// Logins of one client that may wait for a place; more are answered busy (503).
const MAX_WAITING: u32 = 256;

/// A login waiting in `reserve`, counted in its window while it waits.
struct Waiting<'a> {
    failures: &'a Failures,
    client: IpAddr,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(w) = self
            .failures
            .shard(&self.client)
            .lock()
            .peek_mut(&self.client)
        {
            w.waiting = w.waiting.saturating_sub(1);
        }
    }
}

/// A verification counted against its client's remaining failures while it runs.
pub struct Reservation {
    failures: Arc<Failures>,
    client: IpAddr,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut shard = self.failures.shard(&self.client).lock();
        if let Some(w) = shard.peek_mut(&self.client) {
            w.in_flight = w.in_flight.saturating_sub(1);
        }
        drop(shard);
        self.failures.ended.notify_waiters();
    }
}

pub struct Failures {
    settings: FailureLimit,
    /// IPv6 clients are counted by this prefix (`limits.ipv6_prefix`).
    ipv6_prefix: u8,
    shards: Box<[Mutex<LruCache<IpAddr, Window>>]>,
    per_shard: usize,
    /// The shared store and this route's key prefix in it.
    shared: Option<(Arc<LimitsStore>, Vec<u8>)>,
    /// A reserved verification ended: waiters look again.
    ended: Notify,
}

impl std::fmt::Debug for Failures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failures")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Failures {
    /// The counter of route `route`; with a `store`, the counts are kept there.
    pub fn new(
        settings: FailureLimit,
        ipv6_prefix: u8,
        route: &str,
        store: Option<&Arc<LimitsStore>>,
    ) -> Failures {
        Failures {
            settings,
            ipv6_prefix,
            // Grown as clients fail, not allocated up front.
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::unbounded()))
                .collect(),
            per_shard: MAX_CLIENTS.div_ceil(SHARDS),
            shared: store.map(|s| {
                let prefix = limits_store::logins_prefix(route, settings.limit, settings.per);
                (s.clone(), prefix)
            }),
            ended: Notify::new(),
        }
    }

    /// A place for one verification of `client`'s credentials, while its failures plus
    /// its verifications in flight stay under the limit; else it waits (until
    /// `deadline`) for one to end. `Err(Some(secs))`: the client is blocked (429);
    /// `Err(None)`: no place came in time.
    pub async fn reserve(
        self: &Arc<Self>,
        client: IpAddr,
        deadline: Instant,
    ) -> Result<Reservation, Option<u64>> {
        let client = client_bucket(client, self.ipv6_prefix);
        let deadline = tokio::time::Instant::from_std(deadline);
        let mut waiting = None;
        loop {
            // Registered before the counts are read, so an end in between wakes it.
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if let Some(left) = self.blocked_local(client) {
                return Err(Some(left));
            }
            {
                let mut shard = self.shard(&client).lock();
                if !shard.contains(&client) {
                    self.make_room(&mut shard);
                }
                let w = shard.get_or_insert_mut(client, || Window::new(0));
                if w.failures.saturating_add(w.in_flight) < self.settings.limit {
                    w.in_flight += 1;
                    return Ok(Reservation {
                        failures: self.clone(),
                        client,
                    });
                }
                if waiting.is_none() {
                    if w.waiting >= MAX_WAITING {
                        return Err(None);
                    }
                    w.waiting += 1;
                    waiting = Some(Waiting {
                        failures: self,
                        client,
                    });
                }
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return Err(None);
            }
        }
    }

    /// Whether this counter is the one `settings` and `store` would build (a reload
    /// keeps it, and its counts, when so).
    pub fn same(
        &self,
        settings: FailureLimit,
        ipv6_prefix: u8,
        store: Option<&Arc<LimitsStore>>,
    ) -> bool {
        let ours = self.shared.as_ref().map(|(s, _)| s);
        self.settings == settings
            && self.ipv6_prefix == ipv6_prefix
            && limits_store::same(ours, store)
    }

    /// Whole seconds until `client` may try again, when it is over the limit now: as the
    /// shared store says, or on its failure as `on_error` says (`local`: this replica's
    /// own count; `deny`: blocked for a second).
    pub async fn blocked(&self, client: IpAddr) -> Option<u64> {
        let client = client_bucket(client, self.ipv6_prefix);
        if let Some((store, prefix)) = &self.shared {
            let key = limits_store::client_key(prefix, client, None);
            match Box::pin(store.logins_blocked(&key, self.settings.limit)).await {
                Ok(left) => return left.map(|d| ceil_secs(d).max(1)),
                Err(_) => match store.on_error() {
                    OnStoreError::Local => {}
                    OnStoreError::Allow => return None,
                    OnStoreError::Deny => return Some(1),
                },
            }
        }
        self.blocked_local(client)
    }

    /// Counts a failed login of `client`, in the shared store when there is one, and
    /// always in this replica's own counts.
    pub async fn failed(&self, client: IpAddr) {
        let client = client_bucket(client, self.ipv6_prefix);
        if let Some((store, prefix)) = &self.shared {
            let key = limits_store::client_key(prefix, client, None);
            // A failure is counted (and logged) by the store; the local count stands.
            let _ = Box::pin(store.login_failed(&key, self.settings.per)).await;
        }
        self.failed_local(client);
    }

    fn shard(&self, client: &IpAddr) -> &Mutex<LruCache<IpAddr, Window>> {
        let h = match client {
            IpAddr::V4(v4) => u32::from(*v4) as usize,
            IpAddr::V6(v6) => (u128::from(*v6) >> 64) as usize ^ (u128::from(*v6) as usize),
        };
        &self.shards[h.wrapping_mul(0x9e37_79b9) % SHARDS]
    }

    /// `blocked`, by this replica's own count.
    pub fn blocked_local(&self, client: IpAddr) -> Option<u64> {
        let mut shard = self.shard(&client).lock();
        let window = *shard.peek(&client)?;
        let left = self.settings.per.checked_sub(window.opened.elapsed());
        match left {
            Some(left) if window.failures >= self.settings.limit => Some(ceil_secs(left).max(1)),
            Some(_) => None,
            None if window.busy() => {
                // The window is over; its logins in progress are still counted.
                if let Some(w) = shard.peek_mut(&client) {
                    *w = w.reopened(0);
                }
                None
            }
            None => {
                shard.pop(&client);
                None
            }
        }
    }

    /// `failed`, in this replica's own count.
    pub fn failed_local(&self, client: IpAddr) {
        let mut shard = self.shard(&client).lock();
        match shard.get_mut(&client) {
            // A window opens with the first failure, not with a login that came before.
            Some(w) if w.failures > 0 && w.opened.elapsed() < self.settings.per => {
                w.failures = w.failures.saturating_add(1);
            }
            Some(w) => *w = w.reopened(1),
            None => {
                self.make_room(&mut shard);
                shard.put(client, Window::new(1));
            }
        }
    }
}

impl Failures {
    /// Forgets the client unseen longest when the shard is full, unless it has logins in
    /// progress (then the shard grows by the few requests in flight).
    fn make_room(&self, shard: &mut LruCache<IpAddr, Window>) {
        if shard.len() >= self.per_shard && shard.peek_lru().is_some_and(|(_, w)| !w.busy()) {
            shard.pop_lru();
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn blocked_after_the_limit_per_client() {
        let f = Failures::new(
            FailureLimit {
                limit: 2,
                per: Duration::from_secs(60),
            },
            64,
            "r",
            None,
        );
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(f.blocked_local(a), None);
        f.failed_local(a);
        assert_eq!(f.blocked_local(a), None, "one failure of two");
        f.failed_local(a);
        let left = f.blocked_local(a).expect("blocked");
        assert!((55..=60).contains(&left), "{left}");
        assert_eq!(f.blocked_local(b), None, "per client");
    }

    #[test]
    fn the_window_closes() {
        let f = Failures::new(
            FailureLimit {
                limit: 1,
                per: Duration::from_millis(100),
            },
            64,
            "r",
            None,
        );
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        f.failed_local(a);
        // Sleeping past the window can only close it.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(f.blocked_local(a), None);
    }
}
