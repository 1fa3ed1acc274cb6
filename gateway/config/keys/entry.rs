//! One key of `api_keys` (in the file or in routes.yaml) and the values in it: name,
//! digest, route patterns, `max_concurrent`, `expires` (a civil date, UTC), and the
//! section's `query_param`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_yaml::Value;

use super::super::checker::Checker;
use super::super::limits::rate_limit;
use super::super::units::shown;
use super::{ApiKey, ENTRY_EXAMPLE, MAX_KEY_CONCURRENT};

/// One entry: `{ name, sha256, routes, rate_limit, max_concurrent, expires }`.
pub(super) fn entry(c: &mut Checker, at: &str, v: &Value, now: SystemTime) -> Option<ApiKey> {
    const KNOWN: [&str; 6] = [
        "name",
        "sha256",
        "routes",
        "rate_limit",
        "max_concurrent",
        "expires",
    ];
    if !matches!(v, Value::Mapping(_)) {
        c.error(
            at,
            format!("expected a key like {ENTRY_EXAMPLE}, found {}", shown(v)),
        );
        return None;
    }
    let (map, known) = c.keyed(at, v, &KNOWN, ENTRY_EXAMPLE)?;
    let field = |key: &str| format!("{at}.{key}");
    if map.get("name").is_none() {
        c.error(at, "missing `name`");
    }
    if map.get("sha256").is_none() {
        c.error(at, "missing `sha256` (the digest `gateway key new` prints)");
    }
    let name = c.value(&field("name"), map.get("name"), key_name);
    let sha256 = c.value(&field("sha256"), map.get("sha256"), digest);
    let routes = match map.get("routes") {
        None => Some(Vec::new()),
        Some(v) => c.value(&field("routes"), Some(v), route_patterns),
    };
    let rate = match map.get("rate_limit") {
        None => Some(None),
        Some(v) if v.get("key").is_some() => {
            let message = "a key's rate_limit counts the key's own requests; remove `key`";
            c.error(&format!("{}.key", field("rate_limit")), message);
            None
        }
        Some(v) => rate_limit(c, &field("rate_limit"), v),
    };
    let max_concurrent = match map.get("max_concurrent") {
        None => Some(None),
        Some(v) => c
            .value(&field("max_concurrent"), Some(v), concurrent)
            .map(Some),
    };
    let expires = match map.get("expires") {
        None => Some(None),
        Some(v) => c.value(&field("expires"), Some(v), expiry).map(Some),
    };
    let (name, sha256) = (name?, sha256?);
    let (expires, expires_at) = match expires? {
        Some((text, at)) => (Some(text), Some(at)),
        None => (None, None),
    };
    if let (Some(date), Some(end)) = (&expires, expires_at) {
        if end <= now {
            let message = format!("key {name:?} expired on {date}: it is refused (remove it)");
            c.warn(&field("expires"), message);
        }
    }
    known.then_some(ApiKey {
        name,
        sha256,
        routes: routes?,
        rate_limit: rate?,
        max_concurrent: max_concurrent?,
        expires,
        expires_at,
    })
}

fn key_name(v: &Value) -> Result<String, String> {
    match v.as_str() {
        Some(s) if valid_key_name(s) => Ok(s.to_string()),
        _ => Err(format!(
            "invalid key name {}; expected letters, digits, `-`, `_` or `.` (at most 64)",
            shown(v)
        )),
    }
}

/// A name as `gateway key new` accepts it (and a metric label can carry as it is).
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// 64 hexadecimal digits.
fn digest(v: &Value) -> Result<[u8; 32], String> {
    let err = || {
        format!(
            "invalid sha256 {}; expected the 64 hexadecimal digits `gateway key new` prints (never the key itself)",
            shown(v)
        )
    };
    let text = v.as_str().ok_or_else(err)?.trim();
    if text.len() != 64 {
        return Err(err());
    }
    let nibble = |b: u8| (b as char).to_digit(16).ok_or_else(err);
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(text.as_bytes().chunks(2)) {
        *byte = (nibble(pair[0])? << 4 | nibble(pair[1])?) as u8;
    }
    Ok(out)
}

/// `routes: [comfy, "api-*"]`.
fn route_patterns(v: &Value) -> Result<Vec<String>, String> {
    let err = || {
        format!(
            "expected a list of route names or patterns like [comfy, \"*.apps.example.com\"], found {}",
            shown(v)
        )
    };
    let Value::Sequence(items) = v else {
        return Err(err());
    };
    let patterns: Option<Vec<String>> = items
        .iter()
        .map(|item| {
            item.as_str()
                .map(str::trim)
                .filter(|s| !s.is_empty() && !s.chars().any(char::is_control))
                .map(str::to_string)
        })
        .collect();
    match patterns {
        Some(p) if !p.is_empty() => Ok(p),
        _ => Err(err()),
    }
}

fn concurrent(v: &Value) -> Result<u32, String> {
    match v.as_u64() {
        Some(n) if (1..=MAX_KEY_CONCURRENT).contains(&n) => Ok(n as u32),
        _ => Err(format!(
            "invalid max_concurrent {}; expected a number of requests from 1 to {MAX_KEY_CONCURRENT}",
            shown(v)
        )),
    }
}

/// `2027-06-30` (YAML may read it as text only; quoted or not): the date as written,
/// and the first instant after that day (UTC).
fn expiry(v: &Value) -> Result<(String, SystemTime), String> {
    let err = || {
        format!(
            "invalid expires {}; expected a date like 2027-06-30",
            shown(v)
        )
    };
    let text = v.as_str().ok_or_else(err)?.trim();
    let (y, m, d) = civil_date(text).ok_or_else(err)?;
    let days = days_from_civil(y, m, d) + 1;
    let secs = u64::try_from(days).map_err(|_| err())? * 86_400;
    Ok((text.to_string(), UNIX_EPOCH + Duration::from_secs(secs)))
}

/// `YYYY-MM-DD`, a date that exists: year, month, day.
pub fn civil_date(text: &str) -> Option<(i64, u32, u32)> {
    let mut parts = text.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if parts.next().is_some() || !(digits(y, 4) && digits(m, 2) && digits(d, 2)) {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    (1..=days).contains(&d).then_some((y, m, d))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `query_param`: a plain parameter name.
pub(super) fn query_param(v: &Value) -> Result<String, String> {
    match v.as_str() {
        Some(s)
            if !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) =>
        {
            Ok(s.to_string())
        }
        _ => Err(format!(
            "invalid query_param {}; expected a parameter name like token",
            shown(v)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expiry_date_ends_at_midnight_utc_after_it() {
        let (text, at) = expiry(&Value::String("1970-01-01".into())).expect("date");
        assert_eq!(text, "1970-01-01");
        assert_eq!(at, UNIX_EPOCH + Duration::from_secs(86_400));
        let (_, at) = expiry(&Value::String("2027-06-30".into())).expect("date");
        // 2027-07-01T00:00:00Z
        assert_eq!(at, UNIX_EPOCH + Duration::from_secs(1_814_400_000));
        assert!(expiry(&Value::String("2027-02-29".into())).is_err());
        assert!(expiry(&Value::String("2028-02-29".into())).is_ok());
        assert!(expiry(&Value::String("27-06-30".into())).is_err());
    }
}
