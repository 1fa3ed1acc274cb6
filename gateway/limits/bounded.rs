//! A governor state store with a hard bound on the number of keys.
//!
//! governor's own keyed store (a `DashMap`) grows with every new key until someone calls
//! `retain_recent`; a client that invents keys (random `X-Api-Key` values, or a flood of
//! addresses) could grow it without bound between two sweeps. This store keeps at most
//! `capacity` keys in shards of least-recently-used maps: a new key past the bound evicts
//! the key that has been idle longest. An evicted client starts again with a full bucket,
//! which is what it would have after being idle anyway (nginx's `limit_req` zones do the
//! same when full).

use std::num::NonZeroUsize;

use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;
use lru::LruCache;
use parking_lot::Mutex;

/// Shards keep lock hold times short and spread contention across worker threads.
const SHARDS: usize = 16;

/// Key: a 64-bit keyed hash of the client key. Value: governor's theoretical arrival time.
pub struct BoundedStore {
    shards: Box<[Mutex<LruCache<u64, Nanos>>]>,
    per_shard: NonZeroUsize,
}

impl BoundedStore {
    /// A store holding at most `capacity` keys (rounded up to a multiple of the shards).
    pub fn new(capacity: usize) -> BoundedStore {
        let per_shard = NonZeroUsize::new(capacity.div_ceil(SHARDS)).unwrap_or(NonZeroUsize::MIN);
        let shards = (0..SHARDS)
            .map(|_| Mutex::new(LruCache::unbounded()))
            .collect();
        BoundedStore { shards, per_shard }
    }

    fn shard(&self, key: u64) -> &Mutex<LruCache<u64, Nanos>> {
        // The key is already a uniform hash; its top bits pick the shard.
        &self.shards[(key >> 60) as usize % SHARDS]
    }
}

impl StateStore for BoundedStore {
    type Key = u64;

    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut shard = self.shard(*key).lock();
        let previous = shard.get(key).copied();
        let (outcome, next) = f(previous)?;
        if previous.is_none() && shard.len() >= self.per_shard.get() {
            shard.pop_lru();
        }
        shard.put(*key, next);
        Ok(outcome)
    }
}

impl ShrinkableKeyedStateStore<u64> for BoundedStore {
    /// Drops every key whose bucket has refilled (its state is no different from a new
    /// key's), so memory falls back after a burst of clients.
    fn retain_recent(&self, drop_below: Nanos) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            // Least recently used first: stop at the first key still in use.
            while let Some((_, tat)) = shard.peek_lru() {
                if *tat >= drop_below {
                    break;
                }
                shard.pop_lru();
            }
            if shard.is_empty() {
                *shard = LruCache::unbounded();
            }
        }
    }

    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
