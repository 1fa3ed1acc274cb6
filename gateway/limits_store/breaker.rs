//! When the store fails, requests stop asking it for a while instead of each waiting its
//! own timeout: after a failure the store is "backing off", and one request at a time
//! probes it again after a delay doubling from `FIRST` up to `MOST`. The first answer
//! ends the backoff. A whole fleet of replicas thus sends a dead Redis one call per
//! replica every `MOST` at most, never a reconnect storm.
//!
//! Healthy, `may_try` is one atomic load.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_millis(100);
const MOST: Duration = Duration::from_secs(2);

pub struct Breaker {
    /// Milliseconds after `base` from which a probe may go; 0: healthy.
    retry_at: AtomicU64,
    /// Failed probes in a row, for the delay.
    streak: AtomicU32,
    base: Instant,
}

/// What a caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Ask the store (it is healthy).
    Ask,
    /// Ask it: this caller is the one probe after a failure.
    Probe,
    /// Do not ask: it failed moments ago.
    Skip,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            retry_at: AtomicU64::new(0),
            streak: AtomicU32::new(0),
            base: Instant::now(),
        }
    }
}

impl Breaker {
    fn now_ms(&self) -> u64 {
        // At least 1: 0 means healthy.
        (self.base.elapsed().as_millis() as u64).max(1)
    }

    fn delay(streak: u32) -> Duration {
        FIRST.saturating_mul(1u32 << streak.min(16)).min(MOST)
    }

    pub fn may_try(&self) -> Attempt {
        let at = self.retry_at.load(Ordering::Acquire);
        if at == 0 {
            return Attempt::Ask;
        }
        let now = self.now_ms();
        if now < at {
            return Attempt::Skip;
        }
        // One caller wins the probe; the window it claims covers a probe that never
        // reports (its request cancelled).
        let hold = Self::delay(self.streak.load(Ordering::Relaxed)).as_millis() as u64;
        match self
            .retry_at
            .compare_exchange(at, now + hold, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Attempt::Probe,
            Err(_) => Attempt::Skip,
        }
    }

    /// The store answered. Returns how long it had been failing when this ends a
    /// backoff, for the log.
    pub fn answered(&self) -> Option<u32> {
        if self.retry_at.load(Ordering::Acquire) == 0 {
            return None;
        }
        if self.retry_at.swap(0, Ordering::AcqRel) == 0 {
            return None;
        }
        Some(self.streak.swap(0, Ordering::AcqRel))
    }

    /// The store failed. Returns true for the failure that starts a backoff (to log
    /// once, not per request).
    pub fn failed(&self, attempt: Attempt) -> bool {
        let now = self.now_ms();
        match attempt {
            Attempt::Probe => {
                let streak = self.streak.fetch_add(1, Ordering::AcqRel).saturating_add(1);
                let at = now + Self::delay(streak).as_millis() as u64;
                self.retry_at.store(at, Ordering::Release);
                false
            }
            Attempt::Ask | Attempt::Skip => {
                let at = now + FIRST.as_millis() as u64;
                self.retry_at
                    .compare_exchange(0, at, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_probe_at_a_time_after_a_failure() {
        let b = Breaker::default();
        assert_eq!(b.may_try(), Attempt::Ask);
        assert!(
            b.failed(Attempt::Ask),
            "the first failure starts the backoff"
        );
        assert!(!b.failed(Attempt::Ask), "and is logged once");
        assert_eq!(b.may_try(), Attempt::Skip);
        // Past the first delay, one caller probes and the others still skip.
        std::thread::sleep(FIRST + Duration::from_millis(20));
        assert_eq!(b.may_try(), Attempt::Probe);
        assert_eq!(b.may_try(), Attempt::Skip);
        b.failed(Attempt::Probe);
        assert_eq!(b.may_try(), Attempt::Skip, "a failed probe backs off again");
        assert_eq!(b.answered(), Some(1), "an answer ends it");
        assert_eq!(b.may_try(), Attempt::Ask);
        assert_eq!(b.answered(), None);
    }

    #[test]
    fn the_delay_doubles_up_to_its_ceiling() {
        assert_eq!(Breaker::delay(0), FIRST);
        assert_eq!(Breaker::delay(1), FIRST * 2);
        assert_eq!(Breaker::delay(30), MOST);
    }
}
