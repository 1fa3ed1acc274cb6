//! Replicas (`upstream` as a list) and the pool keys: defaults and mistakes.

use std::time::Duration;

use super::super::*;
use super::{errors, ok};

#[test]
fn a_list_is_a_pool_with_checks_and_cookies_by_default() {
    let config = ok("\
routes:
  - host: a.example
    upstream: [127.0.0.1:7860, 7861]
  - host: b.example
    upstream: 7862
  - host: c.example
    upstream: [7863, 7864]
    balance: round_robin
    health: { path: /healthz, interval: 1s, timeout: 500ms, unhealthy_after: 3 }
    sticky: off
    max_concurrent: 2
    queue: { size: 5, timeout: 10s }
");
    let [a, b, c] = &config.routes[..] else {
        panic!("three routes");
    };
    assert_eq!(a.upstreams.len(), 2);
    assert_eq!(a.upstreams[1], "127.0.0.1:7861".parse().unwrap());
    assert_eq!(a.pool.balance, Balance::LeastConn);
    assert_eq!(a.pool.health, Some(HealthCheck::default()));
    assert!(a.pool.sticky);
    assert_eq!(a.pool.max_concurrent, None);
    // A single upstream: a pool of one, passive checks only, no cookie.
    assert_eq!(b.upstreams.len(), 1);
    assert_eq!(b.pool.health, None);
    assert!(!b.pool.sticky);
    assert_eq!(c.pool.balance, Balance::RoundRobin);
    let health = c.pool.health.as_ref().expect("health");
    assert_eq!(health.path, "/healthz");
    assert_eq!(health.interval, Duration::from_secs(1));
    assert_eq!(health.timeout, Duration::from_millis(500));
    assert_eq!((health.unhealthy_after, health.healthy_after), (3, 2));
    assert!(!c.pool.sticky);
    assert_eq!(c.pool.max_concurrent, Some(2));
    assert_eq!(c.pool.queue.size, 5);
    assert_eq!(c.pool.queue.timeout, Duration::from_secs(10));
    assert_eq!(config.upstreams().len(), 5);
}

#[test]
fn pool_mistakes_are_reported_with_their_place() {
    let found = errors(
        "\
routes:
  - host: a.example
    upstream: []
  - host: b.example
    upstream: [7860, 7860, nowhere]
    balance: fastest
    sticky: ip
    max_concurrent: 0
  - host: c.example
    upstream: [7861, 7862]
    health: { path: health, interval: 10ms, retries: 2 }
    queue: { size: 5 }
  - host: d.example
    upstream: 7863
    health: { interval: 1s, timeout: 2s, healthy_after: 0 }
    queue: { size: -1, timeout: 1s }
",
    );
    let expected = [
        "routes.yaml:3:15: routes[0].upstream: empty list",
        "routes.yaml:5:22: routes[1].upstream[1]: 127.0.0.1:7860 is listed twice",
        "routes.yaml:5:28: routes[1].upstream[2]: invalid upstream \"nowhere\"",
        "routes.yaml:6:14: routes[1].balance: invalid balance \"fastest\"; expected least_conn or round_robin",
        "routes.yaml:7:13: routes[1].sticky: invalid sticky \"ip\"; expected cookie or off",
        "routes.yaml:8:21: routes[1].max_concurrent: invalid max_concurrent 0",
        "routes.yaml:11:21: routes[2].health.path: invalid health path \"health\"",
        "routes.yaml:11:54: routes[2].health.retries: unknown key \"retries\"",
        "routes.yaml:12:14: routes[2].queue: a queue holds requests over `max_concurrent`",
        "routes.yaml:15:57: routes[3].health.healthy_after: invalid healthy_after 0",
        "routes.yaml:16:14: routes[3].queue: a queue holds requests over `max_concurrent`",
        "routes.yaml:16:20: routes[3].queue.size: invalid queue size -1",
    ];
    for e in expected {
        assert!(
            found.iter().any(|f| f.starts_with(e)),
            "missing {e:?} in\n{}",
            found.join("\n")
        );
    }
    // The interval is reported once the other keys are valid.
    let found = errors(
        "\
routes:
  - host: a.example
    upstream: [1, 2]
    health: { interval: 50ms, timeout: 10ms }
  - host: b.example
    upstream: [1, 2]
    health: { interval: 1s, timeout: 2s }
",
    );
    assert!(
        found[0].contains("routes[0].health.interval: interval under 100ms"),
        "{found:?}"
    );
    assert!(
        found[1].contains("routes[1].health.timeout: timeout 2s is longer than interval 1s"),
        "{found:?}"
    );
}
