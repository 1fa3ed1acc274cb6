//! `api_keys` (issue 30): the API keys programs present, from a file (`api_keys.file`,
//! the lines `gateway key new` prints) and from `routes.yaml` (`api_keys.keys`), and the
//! name of the query parameter a WebSocket upgrade may carry one in. A route accepts
//! keys with its own `api_keys` (`access`). Only each key's SHA-256 is ever stored.
//!
//! A problem in the file is reported at its own line (`keys.yaml:3:5: …`) in the same
//! pass as the rest. Revoking a key (removing it from the file) or removing a route
//! never makes the file invalid: a route's list naming a key that is gone, and a key's
//! `routes` naming a route that is gone, are warnings (`entry` reads one key).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_yaml::Value;

use super::checker::Checker;
use super::model::{RateLimit, Route};
use super::span::Spans;
use super::syntax;
use super::units::shown;
pub use entry::{civil_date, valid_key_name};
use entry::{entry, query_param};

mod entry;

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
}
