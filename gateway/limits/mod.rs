//! Per-route rate limits: a GCRA token bucket per client key (governor), answered at the
//! gateway with 429 and the IETF `RateLimit` / `RateLimit-Policy` fields. No Pingora
//! types; `proxy` asks, `state` builds and keeps one limiter per route. With a shared
//! store (`limits_store`) the buckets live in Redis and these are the fallback.
//!
//! Body limits need no state: `ActiveRoute::max_body` is compared by the proxy phases.

mod bounded;

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter as Gcra};
use http::{HeaderName, HeaderValue};

use crate::config::{OnStoreError, RateKey, RateLimit};
use crate::limits_store::{self, Bucket, LimitsStore};
use bounded::BoundedStore;

/// Most client keys one route remembers (about 10 MB at most, measured; see docs/configuration.md).
pub const MAX_KEYS_PER_ROUTE: usize = 100_000;

/// The policy name in the `RateLimit` fields.
const POLICY: &str = "\"default\"";

type Limiter = Gcra<u64, BoundedStore, DefaultClock, StateInformationMiddleware>;

/// The limiter of one route. Kept across reloads while its settings are unchanged, so
/// clients' buckets survive a reload.
pub struct RateLimiter {
    /// What it was built from; compared on reload only, never read per request.
    settings: RateLimit,
    /// IPv6 clients are keyed by this prefix (`limits.ipv6_prefix`).
    ipv6_prefix: u8,
    limiter: Limiter,
    burst: u32,
    /// The header keying the buckets (`key: header:NAME`), else the client address.
    key_header: Option<HeaderName>,
    hasher: std::hash::RandomState,
    /// `RateLimit-Policy`, the same on every response.
    policy: HeaderValue,
    /// Time for one token to come back.
    interval: Duration,
    /// The store shared with other replicas and this route's key prefix in it; `None`:
    /// this replica's own buckets (`limiter`, also the fallback for `on_error: local`).
    shared: Option<(Arc<LimitsStore>, Vec<u8>)>,
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward it. `remaining` requests are left in the bucket, which is full again after
    /// `reset` seconds.
    Allowed { remaining: u32, reset: u64 },
    /// Answer 429; a request may succeed again after `retry_after` seconds (at least 1).
    Limited { retry_after: u64 },
}

impl RateLimiter {
    /// The limiter of route `route`; with a `store`, its buckets are kept there.
    pub fn new(
        settings: &RateLimit,
        ipv6_prefix: u8,
        route: &str,
        store: Option<&Arc<LimitsStore>>,
    ) -> RateLimiter {
        let interval = settings.per / settings.count.max(1);
        let burst = NonZeroU32::new(settings.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(interval)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
            .allow_burst(burst);
        let limiter = Gcra::<u64, _, _>::new(
            quota,
            BoundedStore::new(MAX_KEYS_PER_ROUTE),
            DefaultClock::default(),
        )
        .with_middleware::<StateInformationMiddleware>();
        // The window in which `burst` requests are allowed on average: burst × interval.
        let window = ceil_secs(interval * settings.burst).max(1);
        let policy = HeaderValue::from_str(&format!("{POLICY};q={};w={window}", settings.burst))
            .unwrap_or_else(|_| HeaderValue::from_static(POLICY));
        RateLimiter {
            settings: settings.clone(),
            ipv6_prefix,
            limiter,
            burst: settings.burst,
            key_header: match &settings.key {
                RateKey::ClientIp | RateKey::ApiKey => None,
                RateKey::Header(name) => Some(name.clone()),
            },
            hasher: std::hash::RandomState::new(),
            policy,
            interval,
            shared: store.map(|s| {
                let prefix = limits_store::rate_prefix(route, interval, settings.burst);
                (s.clone(), prefix)
            }),
        }
    }

    /// The limiter of API key `name` (`api_keys[].rate_limit`): one bucket for all of the
    /// key's requests, whoever sends them; in the store, under a prefix of its own.
    pub fn for_key(
        settings: &RateLimit,
        name: &str,
        store: Option<&Arc<LimitsStore>>,
    ) -> RateLimiter {
        let mut limiter = RateLimiter::new(settings, 128, name, store);
        if let Some((_, prefix)) = &mut limiter.shared {
            *prefix = limits_store::key_rate_prefix(name, limiter.interval, limiter.burst);
        }
        limiter
    }

    /// `check_key` when it needs no waiting: the answer of this process's own bucket,
    /// or `None` when the bucket is in the shared store.
    pub fn check_here(&self) -> Option<Verdict> {
        match self.shared {
            None => {
                Some(self.check_local(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), Some(b"key")))
            }
            Some(_) => None,
        }
    }

    /// Takes one token from an API key's bucket (`for_key`).
    pub async fn check_key(&self) -> Option<Verdict> {
        self.check(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), Some(b"key"))
            .await
    }

    /// Whether this limiter is the one `settings` and `store` would build (reload keeps
    /// it, and its clients' buckets, when so).
    pub fn same(
        &self,
        settings: &RateLimit,
        ipv6_prefix: u8,
        store: Option<&Arc<LimitsStore>>,
    ) -> bool {
        let ours = self.shared.as_ref().map(|(s, _)| s);
        self.settings == *settings
            && self.ipv6_prefix == ipv6_prefix
            && limits_store::same(ours, store)
    }

    /// The header whose value keys the bucket, if not the client address.
    pub fn key_header(&self) -> Option<&HeaderName> {
        self.key_header.as_ref()
    }

    /// Whether the verified API key's name keys the bucket (`key: api_key`).
    pub fn by_api_key(&self) -> bool {
        self.settings.key == RateKey::ApiKey
    }

    /// Takes one token for the client identified by `header` (the value of `key_header`,
    /// when the route keys by a header and the request has it) or else by `client`: from
    /// the shared store when there is one, else (and on its failure with `on_error:
    /// local`) from this replica's buckets. `None`: the store failed and `on_error` is
    /// `allow`, the request passes without a verdict.
    pub async fn check(&self, client: IpAddr, header: Option<&[u8]>) -> Option<Verdict> {
        let client = client_bucket(client, self.ipv6_prefix);
        if let Some((store, prefix)) = &self.shared {
            let key = limits_store::client_key(prefix, client, header);
            // Boxed: the call's state stays out of the request future of routes that
            // have no store.
            match Box::pin(store.gcra(&key, self.interval, self.burst)).await {
                Ok(Bucket::Allowed { remaining, full_in }) => {
                    return Some(Verdict::Allowed {
                        remaining,
                        reset: ceil_secs(full_in),
                    })
                }
                Ok(Bucket::Limited { wait }) => {
                    return Some(Verdict::Limited {
                        retry_after: ceil_secs(wait).max(1),
                    })
                }
                Err(_) => match store.on_error() {
                    OnStoreError::Local => {}
                    OnStoreError::Allow => return None,
                    OnStoreError::Deny => return Some(Verdict::Limited { retry_after: 1 }),
                },
            }
        }
        Some(self.check_local(client, header))
    }

    /// `check` against this replica's own buckets.
    pub fn check_local(&self, client: IpAddr, header: Option<&[u8]>) -> Verdict {
        // Domain-separated so a header value can never collide with an address on purpose.
        let key = match header {
            Some(value) => self.hasher.hash_one((1u8, value)),
            None => self.hasher.hash_one((0u8, client)),
        };
        match self.limiter.check_key(&key) {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                let used = self.burst.saturating_sub(remaining);
                Verdict::Allowed {
                    remaining,
                    reset: ceil_secs(self.interval * used),
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.limiter.clock().now());
                Verdict::Limited {
                    retry_after: ceil_secs(wait).max(1),
                }
            }
        }
    }

    /// Value of `RateLimit-Policy`, e.g. `"default";q=40;w=2`.
    pub fn policy_header(&self) -> &HeaderValue {
        &self.policy
    }

    /// Forgets clients whose bucket has refilled; run now and then by the sweeper.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
    }

    /// How many client keys are remembered now.
    pub fn keys(&self) -> usize {
        self.limiter.len()
    }
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Verdict {
    /// Value of the `RateLimit` field for this answer, e.g. `"default";r=39;t=1`.
    pub fn header(&self) -> HeaderValue {
        let (remaining, reset) = match *self {
            Verdict::Allowed { remaining, reset } => (remaining, reset),
            Verdict::Limited { retry_after } => (0, retry_after),
        };
        HeaderValue::from_str(&format!("{POLICY};r={remaining};t={reset}"))
            .unwrap_or_else(|_| HeaderValue::from_static(POLICY))
    }
}

/// Whole seconds, rounded up.
/// The address that keys `client`'s buckets and failed-login counts: an IPv4 address
/// as it is, an IPv6 one cut to its first `prefix` bits. One host is given a whole /64
/// (RFC 6177), so keying by /128 would give it 2^64 buckets.
pub fn client_bucket(client: IpAddr, prefix: u8) -> IpAddr {
    match client {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix.min(128)))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(v6) & mask).into())
            }
        },
        v4 => v4,
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests;
