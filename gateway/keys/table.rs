//! The keys of one configuration as the request path reads them: a table by SHA-256
//! digest (`Keys`), and per route the keys it accepts (`RouteKeys`). A presented key
//! costs one SHA-256 and one hash lookup the first time, one SipHash after (`seen`);
//! nothing here takes a lock. A key's rate
//! limiter and its count of requests in progress are handed on to the next
//! configuration by name, so a reload (the file changed) neither refills its bucket nor
//! forgets its requests in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{ApiKey, ApiKeys, Route};
use crate::limits::RateLimiter;
use crate::limits_store::LimitsStore;
use crate::metrics::{KeyCounts, Metrics};

use super::seen::Seen;

/// One key as the request path needs it.
pub struct Key {
    /// In the access log, the metrics and `identity_header`.
    pub name: Arc<str>,
    /// The name as the value of `identity_header`, made once.
    pub identity: http::HeaderValue,
    /// Its place in `Keys::keys` (and in each route's `allowed` and counts).
    index: usize,
    /// The first instant it is refused.
    expires_at: Option<SystemTime>,
    /// `rate_limit`: one bucket over every route the key uses.
    pub rate: Option<Arc<RateLimiter>>,
    max_concurrent: Option<u32>,
    /// Its requests in progress in this process (kept across reloads).
    in_progress: Arc<AtomicU32>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A request of a key counted among its requests in progress until dropped.
#[derive(Debug)]
pub struct Slot(Arc<AtomicU32>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Every place among a key's `max_concurrent` requests is taken.
#[derive(Debug)]
pub struct Busy;

impl Key {
    /// A place among the key's `max_concurrent` requests: `Ok(None)` when it has no such
    /// limit, `Err` when they are all taken.
    pub fn enter(&self) -> Result<Option<Slot>, Busy> {
        let Some(max) = self.max_concurrent else {
            return Ok(None);
        };
        let before = self.in_progress.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(self.in_progress.clone());
        match before < max {
            true => Ok(Some(slot)),
            // Dropping the slot gives the count back.
            false => Err(Busy),
        }
    }

    pub fn max_concurrent(&self) -> Option<u32> {
        self.max_concurrent
    }
}

/// Every key of the configuration.
pub struct Keys {
    by_digest: HashMap<[u8; 32], usize>,
    /// Secrets verified lately, by a keyed hash (`seen`).
    seen: Seen,
    keys: Vec<Arc<Key>>,
    /// Where a WebSocket upgrade may carry its key.
    pub param: String,
    /// What each key was built from (by index), for the routes and the next
    /// configuration.
    settings: Vec<ApiKey>,
    by_name: HashMap<Arc<str>, usize>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// The keys of `config`; a key of `previous` with the same name keeps its count of
    /// requests in progress, and its bucket while its `rate_limit` and the store are
    /// unchanged.
    pub fn build(
        config: &ApiKeys,
        previous: Option<&Keys>,
        store: Option<&Arc<LimitsStore>>,
    ) -> Keys {
        let mut keys = Vec::with_capacity(config.keys.len());
        let mut by_digest = HashMap::with_capacity(config.keys.len());
        let mut by_name = HashMap::with_capacity(config.keys.len());
        for (index, key) in config.keys.iter().enumerate() {
            let old = previous.and_then(|p| p.named(&key.name));
            let rate = key.rate_limit.as_ref().map(|limit| {
                let kept = old.and_then(|(old, was)| {
                    let same = was.rate_limit.as_ref() == Some(limit)
                        && old.rate.as_ref().is_some_and(|r| r.same(limit, 128, store));
                    same.then(|| old.rate.clone()).flatten()
                });
                kept.unwrap_or_else(|| Arc::new(RateLimiter::for_key(limit, &key.name, store)))
            });
            let name: Arc<str> = key.name.as_str().into();
            keys.push(Arc::new(Key {
                // Key names are letters, digits, `-`, `_` and `.`: always a valid value.
                identity: http::HeaderValue::from_str(&name)
                    .unwrap_or_else(|_| http::HeaderValue::from_static("")),
                name: name.clone(),
                index,
                expires_at: key.expires_at,
                rate,
                max_concurrent: key.max_concurrent,
                in_progress: old.map_or_else(Arc::default, |(k, _)| k.in_progress.clone()),
            }));
            by_digest.insert(key.sha256, index);
            by_name.insert(name, index);
        }
        Keys {
            by_digest,
            seen: Seen::new(keys.len()),
            keys,
            param: config.query_param.clone(),
            settings: config.keys.clone(),
            by_name,
        }
    }

    /// The index of the key whose SHA-256 is the secret's.
    fn lookup(&self, secret: &[u8]) -> Option<usize> {
        // The low-level hasher: `openssl::sha::sha256` goes through OpenSSL 3's
        // `EVP_Q_digest`, which looks the algorithm up (and takes its lock) on each call.
        let mut hasher = openssl::sha::Sha256::new();
        hasher.update(secret);
        self.by_digest.get(&hasher.finish()).copied()
    }

    fn named(&self, name: &str) -> Option<(&Arc<Key>, &ApiKey)> {
        let index = *self.by_name.get(name)?;
        Some((self.keys.get(index)?, self.settings.get(index)?))
    }

    /// The keys `route` accepts, or `None` when it accepts none.
    pub fn for_route(
        self: &Arc<Self>,
        route: &Route,
        metrics: Option<&Metrics>,
    ) -> Option<RouteKeys> {
        let choice = route.access.api_keys.as_ref()?;
        let allowed = self
            .settings
            .iter()
            .map(|key| choice.accepts(&key.name) && key.allows_route(&route.name))
            .collect();
        Some(RouteKeys {
            keys: self.clone(),
            allowed,
            counts: metrics.map(|m| m.key_counts(&route.name, self.keys.len())),
        })
    }

    /// Every key's rate limiter, for the sweeper.
    pub fn limiters(&self) -> impl Iterator<Item = &Arc<RateLimiter>> {
        self.keys.iter().filter_map(|k| k.rate.as_ref())
    }
}

/// Why a presented key was refused.
#[derive(Debug)]
pub enum Refusal {
    /// No key has this secret.
    Unknown,
    Expired(Arc<Key>),
    /// The key's `routes`, or the route's list of keys, leave this route out.
    NotAllowed(Arc<Key>),
}

/// The keys one route accepts.
#[derive(Debug)]
pub struct RouteKeys {
    keys: Arc<Keys>,
    /// By key index: whether this route accepts the key.
    allowed: Box<[bool]>,
    counts: Option<KeyCounts>,
}

impl RouteKeys {
    /// The key whose secret is `secret`, if this route accepts it now.
    pub fn verify(&self, secret: &[u8]) -> Result<&Arc<Key>, Refusal> {
        let hash = self.keys.seen.hash(secret);
        let index = match self.keys.seen.find(hash) {
            Some(index) => index,
            None => {
                let index = self.keys.lookup(secret).ok_or(Refusal::Unknown)?;
                self.keys.seen.remember(hash, index);
                index
            }
        };
        let key = self.keys.keys.get(index).ok_or(Refusal::Unknown)?;
        if key.expires_at.is_some_and(|end| SystemTime::now() >= end) {
            return Err(Refusal::Expired(key.clone()));
        }
        match self.allowed.get(index) {
            Some(true) => Ok(key),
            _ => Err(Refusal::NotAllowed(key.clone())),
        }
    }

    /// The query parameter a WebSocket upgrade may carry a key in.
    pub fn param(&self) -> &str {
        &self.keys.param
    }

    /// Counts a finished request of `key` on this route.
    pub fn count(&self, key: &Key, status: u16) {
        if let Some(counts) = &self.counts {
            counts.request(key.index, &key.name, status);
        }
    }
}
