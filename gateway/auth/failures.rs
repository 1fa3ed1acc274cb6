//! Failed logins per client (`auth_failures: { limit, per }`): a client's first failure
//! opens a window of `per`; once `limit` failures fall in it, every request the client
//! makes to the route gets 429 until the window closes, whatever credentials it sends.
//! That bounds password guessing to `limit` tries per `per` per address.
//!
//! State is bounded: at most `MAX_CLIENTS` addresses per route, in shards of
//! least-recently-used maps (a client forgotten under pressure starts a new window,
//! as it would after waiting).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::Mutex;

use crate::config::FailureLimit;

/// Most clients remembered per route.
pub const MAX_CLIENTS: usize = 100_000;
const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Window {
    opened: Instant,
    failures: u32,
}

pub struct Failures {
    settings: FailureLimit,
    shards: Box<[Mutex<LruCache<IpAddr, Window>>]>,
    per_shard: usize,
}

impl std::fmt::Debug for Failures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Failures")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Failures {
    pub fn new(settings: FailureLimit) -> Failures {
        Failures {
            settings,
            // Grown as clients fail, not allocated up front.
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::unbounded()))
                .collect(),
            per_shard: MAX_CLIENTS.div_ceil(SHARDS),
        }
    }

    /// What it was built from (a reload keeps it, and its counts, while unchanged).
    pub fn settings(&self) -> FailureLimit {
        self.settings
    }

    fn shard(&self, client: &IpAddr) -> &Mutex<LruCache<IpAddr, Window>> {
        let h = match client {
            IpAddr::V4(v4) => u32::from(*v4) as usize,
            IpAddr::V6(v6) => (u128::from(*v6) >> 64) as usize ^ (u128::from(*v6) as usize),
        };
        &self.shards[h.wrapping_mul(0x9e37_79b9) % SHARDS]
    }

    /// Whole seconds until `client` may try again, when it is over the limit now.
    pub fn blocked(&self, client: IpAddr) -> Option<u64> {
        let mut shard = self.shard(&client).lock();
        let window = *shard.peek(&client)?;
        let left = self.settings.per.checked_sub(window.opened.elapsed());
        match left {
            Some(left) if window.failures >= self.settings.limit => Some(ceil_secs(left).max(1)),
            Some(_) => None,
            None => {
                shard.pop(&client);
                None
            }
        }
    }

    /// Counts a failed login of `client`.
    pub fn failed(&self, client: IpAddr) {
        let mut shard = self.shard(&client).lock();
        let now = Instant::now();
        match shard.get_mut(&client) {
            Some(w) if w.opened.elapsed() < self.settings.per => {
                w.failures = w.failures.saturating_add(1);
            }
            _ => {
                if shard.len() >= self.per_shard {
                    shard.pop_lru();
                }
                shard.put(
                    client,
                    Window {
                        opened: now,
                        failures: 1,
                    },
                );
            }
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
        let f = Failures::new(FailureLimit {
            limit: 2,
            per: Duration::from_secs(60),
        });
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(f.blocked(a), None);
        f.failed(a);
        assert_eq!(f.blocked(a), None, "one failure of two");
        f.failed(a);
        let left = f.blocked(a).expect("blocked");
        assert!((55..=60).contains(&left), "{left}");
        assert_eq!(f.blocked(b), None, "per client");
    }

    #[test]
    fn the_window_closes() {
        let f = Failures::new(FailureLimit {
            limit: 1,
            per: Duration::from_millis(100),
        });
        let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        f.failed(a);
        // Sleeping past the window can only close it.
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(f.blocked(a), None);
    }
}
