//! Keys seen lately, so that a program sending its key on every request pays one
//! SipHash for it instead of a SHA-256 (under callgrind, without the CPU's SHA
//! instructions, about 250 instructions against 2,300).
//!
//! What is kept is not the secret but a 64-bit SipHash of it under a random key made
//! when the table is built: per key, the hash of its secret; and a table of slots, each
//! holding a hash's top 48 bits and the key's index, to find the key. A secret is taken
//! for a remembered key only when its hash equals that key's whole 64-bit hash, which a
//! client that knows neither the SipHash key nor the secret hits once in about 2^64
//! tries; a miss goes to the SHA-256, and its failures count as failed logins. Only a
//! secret whose SHA-256 matched is remembered, so nobody can fill or evict slots. Both
//! are atomics: nothing is locked, and two requests racing to fill a slot only make one
//! of them pay the SHA-256 again. A reload builds a new table, so a revoked key is
//! forgotten with the rest.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bits of a slot that hold the key's index (`config::keys` allows 10,000 keys).
const INDEX_BITS: u32 = 16;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

pub struct Seen {
    hasher: std::hash::RandomState,
    slots: Box<[AtomicU64]>,
    /// By key index: the whole hash of its secret, once seen (0 until then).
    hashes: Box<[AtomicU64]>,
}

impl Seen {
    /// Room for `keys` keys, four slots each (64 at least, 65,536 at most).
    pub fn new(keys: usize) -> Seen {
        let n = keys
            .saturating_mul(4)
            .next_power_of_two()
            .clamp(64, 1 << INDEX_BITS);
        Seen {
            hasher: std::hash::RandomState::new(),
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            hashes: (0..keys).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The keyed hash of a presented secret.
    pub fn hash(&self, secret: &[u8]) -> u64 {
        self.hasher.hash_one(secret)
    }

    fn slot(&self, hash: u64) -> &AtomicU64 {
        // `slots.len()` is a power of two.
        &self.slots[(hash as usize) & (self.slots.len() - 1)]
    }

    /// The index of the key remembered for `hash`, if any.
    pub fn find(&self, hash: u64) -> Option<usize> {
        let entry = self.slot(hash).load(Ordering::Relaxed);
        if entry == 0 || entry >> INDEX_BITS != hash >> INDEX_BITS {
            return None;
        }
        let index = (entry & INDEX_MASK) as usize;
        let whole = self.hashes.get(index)?.load(Ordering::Relaxed);
        (whole == hash).then_some(index)
    }

    /// Remembers that the secret of `hash` is key `index` (its SHA-256 matched).
    pub fn remember(&self, hash: u64, index: usize) {
        let (Some(whole), Ok(tag_index)) = (self.hashes.get(index), u64::try_from(index)) else {
            return;
        };
        if tag_index <= INDEX_MASK {
            // One secret per key: its hash never changes within a table.
            whole.store(hash, Ordering::Relaxed);
            let entry = (hash & !INDEX_MASK) | tag_index;
            self.slot(hash).store(entry, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_found_once_remembered_and_another_is_not() {
        let seen = Seen::new(3);
        let (a, b) = (seen.hash(b"gwk_a"), seen.hash(b"gwk_b"));
        assert_eq!(seen.find(a), None);
        seen.remember(a, 2);
        assert_eq!(seen.find(a), Some(2));
        assert_eq!(seen.find(b), None);
        // Another table, another SipHash key: nothing carries over.
        assert_eq!(Seen::new(3).find(a), None);
        // A hash in the same slot (64 of them: its low 6 bits) with the same top 48 bits,
        // but not the key's whole hash, is no hit.
        let near = a ^ (1 << 10);
        assert_eq!(seen.find(near), None);
        // An index past the keys is never remembered.
        seen.remember(b, 7);
        assert_eq!(seen.find(b), None);
    }
}
