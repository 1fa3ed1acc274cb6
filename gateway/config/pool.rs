//! A route's replicas and how they share its requests: `upstream` (one address or a
//! list), `balance`, `health`, `sticky`, `max_concurrent` and `queue`.

use std::net::SocketAddr;
use std::time::Duration;

use serde_yaml::Value;

use super::checker::Checker;
use super::model::{Balance, HealthCheck, PoolSettings, QueueSettings, DEFAULT_QUEUE};
use super::raw::RawRoute;
use super::units::{self, is_off, shown};

/// Replicas per route: far more than GPUs in one machine.
const MAX_REPLICAS: usize = 64;
/// Ceiling of `max_concurrent`, `queue.size` and the health thresholds' own ceiling.
const MAX_COUNT: u64 = 100_000;
const MAX_THRESHOLD: u64 = 100;
/// Shortest `health.interval`: a check every 100 ms is already far more than needed.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// `upstream`: `127.0.0.1:7860`, or a list of such addresses (each once).
pub(super) fn upstreams(c: &mut Checker, path: &str, v: &Value) -> Option<Vec<SocketAddr>> {
    let Value::Sequence(items) = v else {
        return c
            .value(path, Some(v), units::upstream_addr)
            .map(|a| vec![a]);
    };
    if items.is_empty() {
        c.error(
            path,
            "empty list; expected one or more addresses like [127.0.0.1:7860, 127.0.0.1:7861]",
        );
        return None;
    }
    if items.len() > MAX_REPLICAS {
        c.error(
            path,
            format!(
                "{} upstreams; at most {MAX_REPLICAS} per route",
                items.len()
            ),
        );
        return None;
    }
    let mut addrs = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match c.value(&at, Some(item), units::upstream_addr) {
            Some(addr) if addrs.contains(&addr) => {
                c.error(
                    &at,
                    format!("{addr} is listed twice; expected each replica once"),
                );
                ok = false;
            }
            Some(addr) => addrs.push(addr),
            None => ok = false,
        }
    }
    ok.then_some(addrs)
}

/// The pool keys of a route with `replicas` upstreams (0 when `upstream` was invalid:
/// the keys are still checked). `None` after an error.
pub(super) fn settings(
    c: &mut Checker,
    path: &str,
    raw: &RawRoute,
    replicas: usize,
) -> Option<PoolSettings> {
    let at = |key: &str| format!("{path}.{key}");
    let several = replicas > 1;
    let balance = match &raw.balance {
        Some(v) => c.value(&at("balance"), Some(v), balance),
        None => Some(Balance::LeastConn),
    };
    let health = match &raw.health {
        Some(v) => health(c, &at("health"), v),
        None => Some(several.then(HealthCheck::default)),
    };
    let sticky = match &raw.sticky {
        Some(v) => c.value(&at("sticky"), Some(v), sticky),
        None => Some(several),
    };
    let max_concurrent = raw
        .max_concurrent
        .as_ref()
        .map(|v| c.value(&at("max_concurrent"), Some(v), max_concurrent));
    let max_concurrent = match max_concurrent {
        Some(parsed) => parsed?,
        None => None,
    };
    let queue = match &raw.queue {
        Some(v) => {
            if max_concurrent.is_none() && !is_off(v) {
                c.error(
                    &at("queue"),
                    "a queue holds requests over `max_concurrent`; set max_concurrent too (e.g. max_concurrent: 2)",
                );
            }
            queue(c, &at("queue"), v)
        }
        None => Some(DEFAULT_QUEUE),
    };
    Some(PoolSettings {
        balance: balance?,
        health: health?,
        sticky: sticky?,
        max_concurrent,
        queue: queue?,
    })
}

fn balance(v: &Value) -> Result<Balance, String> {
    match v.as_str().map(str::trim) {
        Some("least_conn") => Ok(Balance::LeastConn),
        Some("round_robin") => Ok(Balance::RoundRobin),
        _ => Err(format!(
            "invalid balance {}; expected least_conn or round_robin",
            shown(v)
        )),
    }
}

fn sticky(v: &Value) -> Result<bool, String> {
    match v {
        Value::String(s) if s.trim() == "cookie" => Ok(true),
        Value::Bool(false) => Ok(false),
        _ if is_off(v) => Ok(false),
        _ => Err(format!(
            "invalid sticky {}; expected cookie or off",
            shown(v)
        )),
    }
}

fn max_concurrent(v: &Value) -> Result<Option<u32>, String> {
    if is_off(v) {
        return Ok(None);
    }
    count(v, 1, MAX_COUNT)
        .map(Some)
        .map_err(|e| format!("invalid max_concurrent {}; {e} or off", shown(v)))
}

/// A whole number in `min..=max`.
fn count(v: &Value, min: u64, max: u64) -> Result<u32, String> {
    match v.as_u64() {
        Some(n) if (min..=max).contains(&n) => u32::try_from(n).map_err(|_| String::new()),
        _ => Err(format!("expected a whole number from {min} to {max}")),
    }
}

/// `health`: `off`, or `{ path: /, interval: 5s, timeout: 2s, unhealthy_after: 2,
/// healthy_after: 2 }` (keys left out take those values). `Some(None)` for `off`.
fn health(c: &mut Checker, path: &str, v: &Value) -> Option<Option<HealthCheck>> {
    if is_off(v) {
        return Some(None);
    }
    let (map, ok) = c.keyed(
        path,
        v,
        &[
            "path",
            "interval",
            "timeout",
            "unhealthy_after",
            "healthy_after",
        ],
        "{ path: /, interval: 5s, timeout: 2s }",
    )?;
    let at = |key: &str| format!("{path}.{key}");
    let mut check = HealthCheck::default();
    let mut valid = ok;
    let take = |valid: &mut bool, parsed: Option<()>| *valid &= parsed.is_some();
    if let Some(v) = map.get("path") {
        let parsed = c.value(&at("path"), Some(v), check_path);
        take(&mut valid, parsed.map(|p| check.path = p));
    }
    for (key, slot) in [
        ("interval", &mut check.interval),
        ("timeout", &mut check.timeout),
    ] {
        if let Some(v) = map.get(key) {
            let parsed = c.value(&at(key), Some(v), units::required_duration);
            take(&mut valid, parsed.map(|d| *slot = d));
        }
    }
    for (key, slot) in [
        ("unhealthy_after", &mut check.unhealthy_after),
        ("healthy_after", &mut check.healthy_after),
    ] {
        if let Some(v) = map.get(key) {
            let parsed = c.value(&at(key), Some(v), |v| {
                count(v, 1, MAX_THRESHOLD).map_err(|e| format!("invalid {key} {}; {e}", shown(v)))
            });
            take(&mut valid, parsed.map(|n| *slot = n));
        }
    }
    if valid && check.interval < MIN_INTERVAL {
        c.error(
            &at("interval"),
            "interval under 100ms; expected e.g. interval: 5s",
        );
        valid = false;
    }
    if valid && check.timeout > check.interval {
        c.error(
            &at("timeout"),
            format!(
                "timeout {} is longer than interval {}; a check must end before the next one starts",
                humantime::format_duration(check.timeout),
                humantime::format_duration(check.interval)
            ),
        );
        valid = false;
    }
    valid.then_some(Some(check))
}

/// The path (and query) of a health check: starts with `/`, printable ASCII.
fn check_path(v: &Value) -> Result<String, String> {
    const EXPECTED: &str = "expected a path like /health";
    match v {
        Value::String(s)
            if s.starts_with('/') && s.len() <= 1024 && s.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(s.clone())
        }
        _ => Err(format!("invalid health path {}; {EXPECTED}", shown(v))),
    }
}

/// `queue`: `off` (no waiting: over the cap is 503 at once) or `{ size: 50, timeout: 30s }`.
fn queue(c: &mut Checker, path: &str, v: &Value) -> Option<QueueSettings> {
    if is_off(v) {
        return Some(QueueSettings {
            size: 0,
            timeout: DEFAULT_QUEUE.timeout,
        });
    }
    let (map, ok) = c.keyed(path, v, &["size", "timeout"], "{ size: 50, timeout: 30s }")?;
    let size = map.get("size").map(|v| {
        c.value(&format!("{path}.size"), Some(v), |v| {
            count(v, 0, MAX_COUNT).map_err(|e| format!("invalid queue size {}; {e}", shown(v)))
        })
    });
    let timeout = map.get("timeout").map(|v| {
        c.value(
            &format!("{path}.timeout"),
            Some(v),
            units::required_duration,
        )
    });
    let settings = QueueSettings {
        size: match size {
            Some(parsed) => parsed?,
            None => DEFAULT_QUEUE.size,
        },
        timeout: match timeout {
            Some(parsed) => parsed?,
            None => DEFAULT_QUEUE.timeout,
        },
    };
    ok.then_some(settings)
}
