//! Issue 3: a flood from 1,000,000 distinct addresses must not grow the rate limiter's
//! memory without bound. Its own test binary, so that no other test shares the process
//! whose RSS it measures.

use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use gateway::config::{RateKey, RateLimit};
use gateway::limits::{RateLimiter, Verdict, MAX_KEYS_PER_ROUTE};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Issue 3: a flood from 1,000,000 distinct addresses must not grow memory without bound.
#[test]
fn a_million_distinct_clients_stay_bounded() {
    let l = RateLimiter::new(
        &RateLimit {
            count: 20,
            per: Duration::from_secs(1),
            burst: 40,
            key: RateKey::ClientIp,
        },
        64,
        "r",
        None,
    );
    let before = rss_kib();
    let started = Instant::now();
    for i in 0..1_000_000u32 {
        let [a, b, c, d] = i.to_be_bytes();
        let ip = IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            u16::from_be_bytes([a, b]),
            u16::from_be_bytes([c, d]),
        ));
        l.check_local(ip, None);
    }
    let elapsed = started.elapsed();
    let keys = l.keys();
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    eprintln!(
        "1,000,000 distinct clients in {elapsed:?}: {keys} keys kept (cap {MAX_KEYS_PER_ROUTE}), RSS +{grown_mib} MiB"
    );
    assert!(keys <= MAX_KEYS_PER_ROUTE + 16, "{keys} keys kept");
    assert!(grown_mib < 32, "RSS grew {grown_mib} MiB");
    // The newest clients are remembered: the last one has used a token.
    let last = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x000f, 0x423f));
    assert!(matches!(
        l.check_local(last, None),
        Verdict::Allowed { remaining: 38, .. }
    ));
    l.sweep();
    assert!(l.keys() <= keys);
}
