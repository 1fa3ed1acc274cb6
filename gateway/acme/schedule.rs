//! When to order: renewal when a third of a certificate's lifetime remains (minus a
//! jitter so that hosts and replicas spread out), and the wait after a failed order
//! (doubling from `first_retry` up to `max_retry`, never shorter than the server's
//! `Retry-After`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The longest server `Retry-After` honoured: a larger one (or a date years ahead) is
/// taken as this, so the next try is always a representable time.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30 * 86_400);

/// The longest jitter, as a share of the lifetime: 1/30 (3 days of a 90-day certificate,
/// 20 s of a 10-minute one).
const JITTER_SHARE: u32 = 30;

/// When to renew a certificate valid from `not_before` to `not_after` (unix seconds).
/// `jitter` in 0..1 picks a point in the jitter window.
pub fn renew_at(not_before: i64, not_after: i64, jitter: f64) -> SystemTime {
    let lifetime = (not_after - not_before).max(0) as u64;
    let third = lifetime / 3;
    let window = lifetime / u64::from(JITTER_SHARE);
    let early = (window as f64 * jitter.clamp(0.0, 1.0)) as u64;
    let at = (not_after.max(0) as u64).saturating_sub(third + early);
    UNIX_EPOCH + Duration::from_secs(at)
}

/// The wait after the `failures`-th failed order in a row (1 for the first), at most
/// `MAX_RETRY_AFTER` even when the server asks for longer.
pub fn backoff(
    failures: u32,
    first: Duration,
    max: Duration,
    retry_after: Option<Duration>,
) -> Duration {
    let doubling = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
    let wait = first.saturating_mul(doubling).min(max);
    match retry_after {
        Some(server) => wait.max(server.min(MAX_RETRY_AFTER)),
        None => wait,
    }
}

/// A number in 0..1 that differs between hosts and processes, for the jitter.
pub fn jitter(host: &str) -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(host.as_bytes());
    (h.finish() % 10_000) as f64 / 10_000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t: SystemTime) -> u64 {
        t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    #[test]
    fn renewal_comes_when_a_third_of_the_lifetime_remains() {
        let day = 86_400;
        // 90 days: renew 30 days before expiry, up to 3 days earlier with jitter.
        assert_eq!(secs(renew_at(0, 90 * day, 0.0)), 60 * day as u64);
        assert_eq!(secs(renew_at(0, 90 * day, 1.0)), 57 * day as u64);
        // A 10-minute certificate (Pebble's short validity) renews after 400 s or a bit
        // earlier.
        let t = secs(renew_at(1000, 1600, 0.5));
        assert!((1390..=1400).contains(&t), "{t}");
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_honours_retry_after() {
        let (first, max) = (Duration::from_secs(60), Duration::from_secs(4 * 3600));
        let waits: Vec<u64> = (1..=10)
            .map(|n| backoff(n, first, max, None).as_secs())
            .collect();
        assert_eq!(
            waits,
            [60, 120, 240, 480, 960, 1920, 3840, 7680, 14400, 14400]
        );
        assert_eq!(backoff(1000, first, max, None), max);
        let server = Some(Duration::from_secs(86_400));
        assert_eq!(backoff(1, first, max, server).as_secs(), 86_400);
        let absurd = Some(Duration::from_secs(u64::MAX));
        assert_eq!(backoff(1, first, max, absurd), MAX_RETRY_AFTER);
        let short = Some(Duration::from_secs(5));
        assert_eq!(backoff(2, first, max, short).as_secs(), 120);
    }
}
