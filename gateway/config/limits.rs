//! The limit keys: `rate_limit` (in `defaults` and routes), `trusted_proxies`, and the
//! `limits` section (request heads and bodies, the IPv6 prefix that keys a client): their
//! types and their parsers. `max_body` is a plain size (see `units::size`).

use std::net::IpAddr;
use std::time::Duration;

use http::HeaderName;
use serde_yaml::Value;

use super::checker::Checker;
use super::model::IpNet;
use super::raw::RawLimits;
use super::units::{self, is_off, shown};

/// Request line plus headers of one HTTP/1.1 request, or the HTTP/2 header list.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 << 10;
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Time for a client to send a whole request head (nginx's `client_header_timeout`).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Pingora's own ceilings (0.9): a head over about 1 MiB or with over 256 fields is
/// refused with 400 before the gateway sees it, so larger limits could never apply.
pub const MAX_HEADER_BYTES_CEILING: usize = 1 << 20;
pub const MAX_HEADERS_CEILING: usize = 256;
/// Longest a client may send no byte of its request body (nginx's `client_body_timeout`).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Least average rate of a request body once `body_timeout` has passed, in bytes per
/// second (Apache's `mod_reqtimeout` `MinRate`): a trickle is cut, a home uplink is not.
pub const DEFAULT_BODY_MIN_RATE: u64 = 500;
/// IPv6 clients are limited by this prefix: one host is given a /64 (RFC 6177).
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// `limits`: the size and time a client's request head may take (431 and a closed
/// connection beyond them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Request line plus headers in bytes (HTTP/1.1); the decoded header list (HTTP/2).
    pub max_header_bytes: usize,
    /// Header fields, counting each repeated field.
    pub max_headers: usize,
    /// From the connection's start (or a keep-alive request's first byte) to the end of
    /// the request head, HTTP/1.1.
    pub header_timeout: Duration,
    /// Keep request fields whose names have `_` (removed by default, as nginx does).
    pub underscores_in_headers: bool,
}

/// `limits.body_timeout` and `limits.body_min_rate`: a request body that stalls, or
/// trickles, gets 408 and its upstream request is aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyDeadline {
    /// Longest silence while reading a body; also the grace before `min_rate` applies.
    pub timeout: Duration,
    /// Least average rate, bytes per second, after `timeout`; `None`: none.
    pub min_rate: Option<u64>,
}

impl Default for BodyDeadline {
    fn default() -> Self {
        BodyDeadline {
            timeout: DEFAULT_BODY_TIMEOUT,
            min_rate: Some(DEFAULT_BODY_MIN_RATE),
        }
    }
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            underscores_in_headers: false,
        }
    }
}

/// A GCRA token bucket: `count` requests per `per` refill it, `burst` is its capacity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub count: u32,
    pub per: Duration,
    pub burst: u32,
    pub key: RateKey,
}

/// What identifies one client of a rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RateKey {
    /// The client's address (see `trusted_proxies`).
    ClientIp,
    /// The value of a request header (e.g. an API key); the client address without it.
    Header(HeaderName),
    /// The verified API key (`api_keys`); the client address for a request without one.
    ApiKey,
}

/// The largest `rate` count and `burst` accepted: far above any sane limit, and small
/// enough that the arithmetic on them can never overflow.
const MAX_COUNT: u64 = 1_000_000;

/// `rate_limit`: `off`, or `{ rate: 20/s, burst: 40, key: client_ip }`. Returns
/// `Some(None)` for `off`, `Some(Some(_))` for a valid limit, `None` after an error.
pub(super) fn rate_limit(c: &mut Checker, path: &str, v: &Value) -> Option<Option<RateLimit>> {
    if is_off(v) {
        return Some(None);
    }
    let (map, ok) = c.keyed(
        path,
        v,
        &["rate", "burst", "key"],
        "{ rate: 20/s, burst: 40 }",
    )?;
    let rate = match map.get("rate") {
        Some(v) => c.value(&format!("{path}.rate"), Some(v), rate),
        None => {
            c.error(path, "missing `rate`; expected e.g. rate: 20/s");
            None
        }
    };
    let burst = map
        .get("burst")
        .map(|v| c.value(&format!("{path}.burst"), Some(v), burst));
    let key = map
        .get("key")
        .map(|v| c.value(&format!("{path}.key"), Some(v), rate_key));
    let (count, per) = rate?;
    let burst = match burst {
        Some(b) => b?,
        // One period's worth: `60/m` lets a page load its assets in one go.
        None => count,
    };
    let key = match key {
        Some(k) => k?,
        None => RateKey::ClientIp,
    };
    ok.then_some(Some(RateLimit {
        count,
        per,
        burst,
        key,
    }))
}

/// `20/s`, `60/m`, `1000/h` (also `/sec`, `/min`, `/hour`).
fn rate(v: &Value) -> Result<(u32, Duration), String> {
    let err = || {
        format!(
            "invalid rate {}; expected requests per second, minute or hour like 20/s, 60/m or 1000/h",
            shown(v)
        )
    };
    let text = v.as_str().ok_or_else(err)?;
    let (count, unit) = text.split_once('/').ok_or_else(err)?;
    let count: u64 = count.trim().parse().map_err(|_| err())?;
    let per = match unit.trim().to_ascii_lowercase().as_str() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return Err(err()),
    };
    if !(1..=MAX_COUNT).contains(&count) {
        return Err(format!(
            "invalid rate {}; the count must be from 1 to {MAX_COUNT} (use `off` for no limit)",
            shown(v)
        ));
    }
    Ok((count as u32, per))
}

fn burst(v: &Value) -> Result<u32, String> {
    match v.as_u64() {
        Some(n) if (1..=MAX_COUNT).contains(&n) => Ok(n as u32),
        _ => Err(format!(
            "invalid burst {}; expected a whole number of requests from 1 to {MAX_COUNT}",
            shown(v)
        )),
    }
}

/// `client_ip` or `header:X-Api-Key`.
fn rate_key(v: &Value) -> Result<RateKey, String> {
    let err = || {
        format!(
            "invalid key {}; expected client_ip, api_key or header:NAME (e.g. header:X-Tenant)",
            shown(v)
        )
    };
    let text = v.as_str().ok_or_else(err)?.trim();
    match text {
        "client_ip" => return Ok(RateKey::ClientIp),
        "api_key" => return Ok(RateKey::ApiKey),
        _ => {}
    }
    let name = text.strip_prefix("header:").ok_or_else(err)?.trim();
    HeaderName::from_bytes(name.as_bytes())
        .map(RateKey::Header)
        .map_err(|_| err())
}

/// `trusted_proxies: ["10.0.0.0/8", "192.168.1.7"]`: CIDRs or single addresses.
pub(super) fn trusted_proxies(c: &mut Checker, v: Option<&Value>) -> Vec<IpNet> {
    let Some(v) = v else { return Vec::new() };
    let items = match v {
        Value::Sequence(items) => items.as_slice(),
        Value::Null => return Vec::new(),
        _ => {
            c.error(
                "trusted_proxies",
                format!(
                    "expected a list of CIDRs like [\"10.0.0.0/8\"], found {}",
                    shown(v)
                ),
            );
            return Vec::new();
        }
    };
    let mut nets = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("trusted_proxies[{i}]");
        if let Some(net) = c.value(&path, Some(item), cidr) {
            nets.push(net);
        }
    }
    nets
}

pub(super) fn cidr(v: &Value) -> Result<IpNet, String> {
    let text = v.as_str().map(str::trim).unwrap_or_default();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        format!(
            "invalid CIDR {}; expected an address or network like 10.0.0.0/8 or ::1",
            shown(v)
        )
    })
}

/// The `limits` section: what a request head may be, how slowly its body may come,
/// and how IPv6 clients are keyed.
pub(super) fn limits(c: &mut Checker, raw: RawLimits) -> (HeadLimits, BodyDeadline, u8) {
    let d = BodyDeadline::default();
    let body = BodyDeadline {
        timeout: c
            .value(
                "limits.body_timeout",
                raw.body_timeout.as_ref(),
                body_timeout,
            )
            .unwrap_or(d.timeout),
        min_rate: c
            .value(
                "limits.body_min_rate",
                raw.body_min_rate.as_ref(),
                body_min_rate,
            )
            .unwrap_or(d.min_rate),
    };
    let prefix = c
        .value("limits.ipv6_prefix", raw.ipv6_prefix.as_ref(), ipv6_prefix)
        .unwrap_or(DEFAULT_IPV6_PREFIX);
    (head_limits(c, raw), body, prefix)
}

/// `limits: { max_header_bytes: 64K, max_headers: 100, header_timeout: 10s }`.
fn head_limits(c: &mut Checker, raw: RawLimits) -> HeadLimits {
    let d = HeadLimits::default();
    HeadLimits {
        max_header_bytes: c
            .value(
                "limits.max_header_bytes",
                raw.max_header_bytes.as_ref(),
                max_header_bytes,
            )
            .unwrap_or(d.max_header_bytes),
        max_headers: c
            .value("limits.max_headers", raw.max_headers.as_ref(), max_headers)
            .unwrap_or(d.max_headers),
        header_timeout: c
            .value(
                "limits.header_timeout",
                raw.header_timeout.as_ref(),
                header_timeout,
            )
            .unwrap_or(d.header_timeout),
        underscores_in_headers: c
            .value(
                "limits.underscores_in_headers",
                raw.underscores_in_headers.as_ref(),
                units::flag,
            )
            .unwrap_or(d.underscores_in_headers),
    }
}

fn body_timeout(v: &Value) -> Result<Duration, String> {
    match units::duration(v)? {
        Some(d) if (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d) => Ok(d),
        _ => Err(format!(
            "invalid body_timeout {}; expected from 1s to 1h (it cannot be off)",
            shown(v)
        )),
    }
}

/// `500` (bytes per second), `8K`, or `off`.
fn body_min_rate(v: &Value) -> Result<Option<u64>, String> {
    if is_off(v) {
        return Ok(None);
    }
    match units::size(v) {
        Ok(Some(n)) if (1..=1 << 30).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "invalid body_min_rate {}; expected bytes per second like 500 or 8K, or off",
            shown(v)
        )),
    }
}

fn ipv6_prefix(v: &Value) -> Result<u8, String> {
    match v.as_u64() {
        Some(n @ 16..=128) => Ok(n as u8),
        _ => Err(format!(
            "invalid ipv6_prefix {}; expected a prefix length from 16 to 128 (64: a host's /64)",
            shown(v)
        )),
    }
}

fn max_header_bytes(v: &Value) -> Result<usize, String> {
    match units::size(v) {
        Ok(Some(n)) if (1024..=MAX_HEADER_BYTES_CEILING as u64).contains(&n) => Ok(n as usize),
        _ => Err(format!(
            "invalid max_header_bytes {}; expected a size from 1K to 1M (Pingora refuses larger heads itself)",
            shown(v)
        )),
    }
}

fn max_headers(v: &Value) -> Result<usize, String> {
    match v.as_u64() {
        Some(n) if (1..=MAX_HEADERS_CEILING as u64).contains(&n) => Ok(n as usize),
        _ => Err(format!(
            "invalid max_headers {}; expected a count from 1 to {MAX_HEADERS_CEILING} (Pingora refuses more itself)",
            shown(v)
        )),
    }
}

fn header_timeout(v: &Value) -> Result<Duration, String> {
    match units::duration(v)? {
        Some(d) if (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d) => Ok(d),
        _ => Err(format!(
            "invalid header_timeout {}; expected from 1s to 1h (it cannot be off)",
            shown(v)
        )),
    }
}
