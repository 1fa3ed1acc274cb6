//! `api_keys` (issue 30): the API keys programs present, from a file (`api_keys.file`,
//! the lines `gateway key new` prints) and from `routes.yaml` (`api_keys.keys`), and the
//! name of the query parameter a WebSocket upgrade may carry one in. A route accepts
//! keys with its own `api_keys` (`access`). Only each key's SHA-256 is ever stored.
//!
//! A problem in the file is reported at its own line (`keys.yaml:3:5: …`) in the same
//! pass as the rest. Revoking a key (removing it from the file) never makes the file
//! invalid: a route's list naming a key that is gone is a warning, not an error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_yaml::Value;

use super::checker::Checker;
use super::limits::rate_limit;
use super::model::{RateLimit, Route};
use super::span::Spans;
use super::syntax;
use super::units::shown;

/// The query parameter of a WebSocket upgrade that may carry a key.
pub const DEFAULT_KEY_PARAM: &str = "token";
/// Most keys one configuration holds (each may be a label value of a metric).
const MAX_KEYS: usize = 10_000;
/// Largest `max_concurrent` of a key.
const MAX_KEY_CONCURRENT: u64 = 100_000;
const ENTRY_EXAMPLE: &str =
    "- { name: ci-bot, sha256: HEX, routes: [comfy] } (the line `gateway key new` prints)";

/// `api_keys`: every key, from the file and from `routes.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeys {
    /// `api_keys.file`: watched, and read again when it changes.
    pub file: Option<PathBuf>,
    /// `api_keys.query_param`: where a WebSocket upgrade may carry its key.
    pub query_param: String,
    pub keys: Vec<ApiKey>,
}

impl Default for ApiKeys {
    fn default() -> Self {
        ApiKeys {
            file: None,
            query_param: DEFAULT_KEY_PARAM.to_string(),
            keys: Vec::new(),
        }
    }
}

/// One key: its name (in logs, metrics and `identity_header`), the SHA-256 of its
/// secret, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub name: String,
    pub sha256: [u8; 32],
    /// Route names or patterns (`*` any text); empty: every route that accepts keys.
    pub routes: Vec<String>,
    /// The key's own rate limit, over every route it uses.
    pub rate_limit: Option<RateLimit>,
    /// Requests of this key in progress at once, per gateway process.
    pub max_concurrent: Option<u32>,
    /// `expires` as written (`2027-06-30`): the key is accepted through that day (UTC).
    pub expires: Option<String>,
    /// The first instant the key is refused: the day after `expires`, 00:00 UTC.
    pub expires_at: Option<SystemTime>,
}

impl ApiKey {
    /// Whether the key's `routes` let it use the route named `route`.
    pub fn allows_route(&self, route: &str) -> bool {
        self.routes.is_empty() || self.routes.iter().any(|p| glob(p, route))
    }
}

/// A route's `api_keys`: `true`, or the names of the keys it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChoice {
    Any,
    Named(Vec<String>),
}

impl KeyChoice {
    pub fn accepts(&self, key: &str) -> bool {
        match self {
            KeyChoice::Any => true,
            KeyChoice::Named(names) => names.iter().any(|n| n == key),
        }
    }
}

/// `*` stands for any text (none included); everything else for itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and the text position it now stands up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// The `api_keys` section, checked against the routes (which must be read first).
pub(super) fn api_keys(c: &mut Checker, v: Option<&Value>, routes: &[Route]) -> ApiKeys {
    let mut keys = ApiKeys::default();
    let mut places = Vec::new();
    let configured = v.is_some();
    if let Some(v) = v {
        section(c, v, &mut keys, &mut places);
    }
    unique(c, &keys.keys, &places);
    if keys.keys.len() > MAX_KEYS {
        c.error(
            "api_keys",
            format!("{} keys; at most {MAX_KEYS}", keys.keys.len()),
        );
    }
    check_routes(c, &keys, &places, routes, configured);
    keys
}

/// Where an entry was written: for messages about it.
#[derive(Debug, Clone)]
struct Place {
    /// `None`: in routes.yaml.
    file: Option<PathBuf>,
    spans_pos: Option<super::error::Pos>,
    /// `api_keys.keys[2]` or `[2]` (in the file).
    path: String,
}

fn section(c: &mut Checker, v: &Value, keys: &mut ApiKeys, places: &mut Vec<Place>) {
    const EXAMPLE: &str = "{ file: keys.yaml }";
    if !matches!(v, Value::Mapping(_)) {
        let found = shown(v);
        c.error(
            "api_keys",
            format!("expected a mapping like {EXAMPLE}, found {found}"),
        );
        return;
    }
    let Some((map, _)) = c.keyed("api_keys", v, &["file", "keys", "query_param"], EXAMPLE) else {
        return;
    };
    if let Some(param) = c.value("api_keys.query_param", map.get("query_param"), query_param) {
        keys.query_param = param;
    }
    if let Some(file) = c.file_path("api_keys.file", map.get("file")) {
        read_file(c, &file, keys, places);
        keys.file = Some(file);
    }
    match map.get("keys") {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(items)) => {
            let now = SystemTime::now();
            for (i, item) in items.iter().enumerate() {
                let path = format!("api_keys.keys[{i}]");
                if let Some(key) = entry(c, &path, item, now) {
                    places.push(Place {
                        file: None,
                        spans_pos: c.pos(&path),
                        path,
                    });
                    keys.keys.push(key);
                }
            }
        }
        Some(other) => c.error(
            "api_keys.keys",
            format!(
                "expected a list of keys like {ENTRY_EXAMPLE}, found {}",
                shown(other)
            ),
        ),
    }
}

/// The keys of `file`: a YAML list of entries (empty, or only comments: no keys).
fn read_file(c: &mut Checker, file: &Path, keys: &mut ApiKeys, places: &mut Vec<Place>) {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            let message = format!("cannot read api_keys file {}: {e}", file.display());
            c.error("api_keys.file", message);
            return;
        }
    };
    let doc: Value = match serde_yaml::from_str(&text) {
        Ok(doc) => doc,
        Err(e) => {
            c.errors.push(syntax::yaml_error(file, &text, &e));
            return;
        }
    };
    let spans = Spans::index(&text);
    let mut fc = Checker::new(file, &spans);
    match &doc {
        Value::Null => {}
        Value::Sequence(items) => {
            let now = SystemTime::now();
            for (i, item) in items.iter().enumerate() {
                let path = format!("[{i}]");
                if let Some(key) = entry(&mut fc, &path, item, now) {
                    places.push(Place {
                        file: Some(file.to_path_buf()),
                        spans_pos: fc.pos(&path),
                        path,
                    });
                    keys.keys.push(key);
                }
            }
        }
        other => fc.error(
            "",
            format!(
                "expected a list of keys, one per line like {ENTRY_EXAMPLE}, found {}",
                shown(other)
            ),
        ),
    }
    c.errors.append(&mut fc.errors);
    c.warnings.append(&mut fc.warnings);
}

/// One entry: `{ name, sha256, routes, rate_limit, max_concurrent, expires }`.
fn entry(c: &mut Checker, at: &str, v: &Value, now: SystemTime) -> Option<ApiKey> {
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
fn query_param(v: &Value) -> Result<String, String> {
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

/// Reports a problem at an entry's place (in the file, or in routes.yaml).
fn at_place(c: &mut Checker, place: &Place, key: &str, message: String) {
    match &place.file {
        Some(file) => {
            let text = format!("{}{key}: {message}", place.path);
            c.error_in(file, place.spans_pos, text);
        }
        None => c.error(&format!("{}{key}", place.path), message),
    }
}

/// Every name and every digest once.
fn unique(c: &mut Checker, keys: &[ApiKey], places: &[Place]) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut digests: HashMap<&[u8; 32], usize> = HashMap::new();
    for (i, key) in keys.iter().enumerate() {
        if let Some(first) = names.insert(&key.name, i) {
            let message = format!(
                "key {:?} is given twice (first at {}); give each key its own name",
                key.name,
                shown_place(&places[first])
            );
            at_place(c, &places[i], ".name", message);
        }
        if let Some(first) = digests.insert(&key.sha256, i) {
            let message = format!(
                "key {:?} has the same sha256 as key {:?}: one secret for two names; make a new key with `gateway key new`",
                key.name, keys[first].name
            );
            at_place(c, &places[i], ".sha256", message);
        }
    }
}

fn shown_place(place: &Place) -> String {
    let line = place
        .spans_pos
        .map_or(String::new(), |p| format!(":{}", p.line));
    match &place.file {
        Some(file) => format!("{}{line}", file.display()),
        None => format!("line{}", line.replacen(':', " ", 1)),
    }
}

/// The keys' `routes` against the routes, and the routes' `api_keys` against the keys.
fn check_routes(
    c: &mut Checker,
    keys: &ApiKeys,
    places: &[Place],
    routes: &[Route],
    configured: bool,
) {
    let accepts = |route: &Route| route.access.api_keys.is_some();
    for (key, place) in keys.keys.iter().zip(places) {
        for (j, pattern) in key.routes.iter().enumerate() {
            let matched: Vec<&Route> = routes.iter().filter(|r| glob(pattern, &r.name)).collect();
            let field = format!(".routes[{j}]");
            // Warnings, not errors: removing a route must never stop the file from
            // loading (every later revocation would wait for it).
            let message = if matched.is_empty() {
                format!("key {:?}: no route is named {pattern:?}", key.name)
            } else if !matched.iter().any(|r| accepts(r)) {
                format!(
                    "key {:?}: route {pattern:?} accepts no keys (it has no `api_keys`)",
                    key.name
                )
            } else {
                continue;
            };
            match &place.file {
                Some(file) => {
                    let text = format!("{}{field}: {message}", place.path);
                    c.warn_in(file, place.spans_pos, text);
                }
                None => c.warn(&format!("{}{field}", place.path), message),
            }
        }
    }
    for route in routes {
        let Some(choice) = &route.access.api_keys else {
            continue;
        };
        let at = format!("routes[{}].api_keys", route.index);
        if !configured {
            c.error(
                &at,
                "no keys to accept: add an `api_keys` section with a `file` (or `keys`)",
            );
            continue;
        }
        if let KeyChoice::Named(names) = choice {
            for name in names {
                if !keys.keys.iter().any(|k| k.name == *name) {
                    let message =
                        format!("no key is named {name:?} (revoked?): it is not accepted");
                    c.warn(&at, message);
                }
            }
        }
        if !keys
            .keys
            .iter()
            .any(|k| choice.accepts(&k.name) && k.allows_route(&route.name))
        {
            c.warn(&at, format!("no key may use route {:?} yet", route.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_route_names() {
        assert!(glob("comfy", "comfy"));
        assert!(!glob("comfy", "comfyui"));
        assert!(glob("*.apps.example.com", "a.apps.example.com"));
        assert!(!glob("*.apps.example.com", "apps.example.com"));
        assert!(glob("api-*", "api-"));
        assert!(glob("*", "anything"));
        assert!(glob("a*b*c", "aXXbYYc"));
        assert!(!glob("a*b*c", "aXXbYY"));
    }

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
