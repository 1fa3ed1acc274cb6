use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::*;

fn limit(count: u32, per_secs: u64, burst: u32) -> RateLimiter {
    RateLimiter::new(
        &RateLimit {
            count,
            per: Duration::from_secs(per_secs),
            burst,
            key: RateKey::ClientIp,
        },
        64,
        "r",
        None,
    )
}

const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

#[test]
fn burst_then_limited_with_retry_after() {
    let l = limit(60, 60, 3);
    let got: Vec<_> = (0..4).map(|_| l.check_local(A, None)).collect();
    assert!(
        matches!(got[0], Verdict::Allowed { remaining: 2, .. }),
        "{got:?}"
    );
    assert!(
        matches!(
            got[2],
            Verdict::Allowed {
                remaining: 0,
                reset: 3
            }
        ),
        "{got:?}"
    );
    assert_eq!(got[3], Verdict::Limited { retry_after: 1 });
    assert_eq!(l.policy_header(), "\"default\";q=3;w=3");
    assert_eq!(got[3].header(), "\"default\";r=0;t=1");
}

#[test]
fn retry_after_is_rounded_up_to_the_next_token() {
    // One token per 10 s: after the burst of 1 the next comes in (just under) 10 s.
    let l = limit(6, 60, 1);
    assert!(matches!(l.check_local(A, None), Verdict::Allowed { .. }));
    assert_eq!(l.check_local(A, None), Verdict::Limited { retry_after: 10 });
}

#[test]
fn clients_and_header_keys_are_independent() {
    let l = limit(1, 3600, 1);
    assert!(matches!(l.check_local(A, None), Verdict::Allowed { .. }));
    assert!(matches!(l.check_local(A, None), Verdict::Limited { .. }));
    assert!(matches!(l.check_local(B, None), Verdict::Allowed { .. }));
    // A header key is its own bucket, even for a client whose address is exhausted.
    assert!(matches!(
        l.check_local(A, Some(b"key-1")),
        Verdict::Allowed { .. }
    ));
    assert!(matches!(
        l.check_local(A, Some(b"key-1")),
        Verdict::Limited { .. }
    ));
    assert!(matches!(
        l.check_local(B, Some(b"key-2")),
        Verdict::Allowed { .. }
    ));
}

#[test]
fn tokens_come_back() {
    // One token per 500 ms: the second check comes well within it, and sleeping past it
    // can only leave more time for the token to return.
    let l = limit(2, 1, 1);
    assert!(matches!(l.check_local(A, None), Verdict::Allowed { .. }));
    assert!(matches!(l.check_local(A, None), Verdict::Limited { .. }));
    std::thread::sleep(Duration::from_millis(600));
    assert!(matches!(l.check_local(A, None), Verdict::Allowed { .. }));
}

#[test]
fn ipv6_clients_are_keyed_by_their_prefix() {
    let v6 = |s: &str| s.parse::<IpAddr>().expect("address");
    let one = client_bucket(v6("2001:db8:1:2:aaaa::1"), 64);
    assert_eq!(one, v6("2001:db8:1:2::"));
    assert_eq!(one, client_bucket(v6("2001:db8:1:2:ffff:1:2:3"), 64));
    assert_ne!(one, client_bucket(v6("2001:db8:1:3::1"), 64));
    assert_eq!(client_bucket(v6("2001:db8::1"), 128), v6("2001:db8::1"));
    assert_eq!(client_bucket(v6("2001:db8:ab::1"), 48), v6("2001:db8:ab::"));
    // IPv4, and IPv4 mapped into IPv6, stay whole addresses.
    assert_eq!(client_bucket(A, 64), A);
    assert_eq!(client_bucket(v6("::ffff:192.0.2.1"), 64), A);
}
