//! The shape of routes.yaml as written. Every scalar stays a `serde_yaml::Value` so that a
//! wrong value becomes a diagnostic with its position (collected with all the others)
//! instead of stopping the parse. Unknown keys and misshapen containers are refused here,
//! by serde, and `read` carries on past each one so that a single run reports them all.

use std::path::Path;

use serde::Deserialize;
use serde_path_to_error::Segment;
use serde_yaml::{Mapping, Value};

use super::error::Diagnostic;
use super::span::Spans;

/// Reads the document's shape. serde stops at the first structural problem (an unknown
/// key, a list where a mapping belongs); each one is recorded with its position, the node
/// at fault is cut out of the document, and the read goes on, so that `gateway check`
/// lists every problem in one pass. What could be read is returned with the problems.
/// How `routes` is written: a list, each route starting with `-`.
const ROUTES_EXAMPLE: &str = "write each route as an item of a list: `- host: voice.example.com` under `routes:`, its `upstream:` and other keys indented below the `host`";

pub fn read(file: &Path, mut doc: Value, spans: &Spans) -> (RawConfig, Vec<Diagnostic>) {
    let mut errors = Vec::new();
    // Routes replaced by null because they were cut, so that only a null written in
    // the file is reported as an empty route.
    let mut cut_routes = Vec::new();
    // Every pass cuts one node out of a finite document, so the loop ends; the bound
    // keeps a file made of nothing but mistakes from taking long (each pass reads the
    // whole document again).
    for _ in 0..MAX_STRUCTURAL {
        let e = match serde_path_to_error::deserialize::<_, Option<RawConfig>>(&doc) {
            Ok(raw) => {
                let raw = raw.unwrap_or_default();
                for (i, route) in raw.routes.iter().flatten().enumerate() {
                    if route.is_none() && !cut_routes.contains(&i) {
                        let at = format!("routes[{i}]");
                        let message = format!(
                            "{at}: empty route; expected e.g. host: voice.example.com and upstream: 127.0.0.1:7860"
                        );
                        errors.push(Diagnostic::new(file, spans.find(&at), message));
                    }
                }
                return (raw, errors);
            }
            Err(e) => e,
        };
        let segments: Vec<&Segment> = e.path().iter().collect();
        let at = yaml_path(&segments);
        let mut message = e.inner().to_string();
        if let Some(found) = message.strip_suffix(", expected field identifier") {
            // A key that is not text (`1:` or `[a]:`): serde cannot name it.
            message = format!("{found} as a key; expected key names");
        }
        if at == "routes" && message.ends_with("expected a sequence") {
            message = format!("{message}: {ROUTES_EXAMPLE}");
        }
        let (pos, text) = match message.strip_prefix("unknown field") {
            // Reported at the key, under the mapping that has no such key.
            Some(_) => {
                let parent = yaml_path(&segments[..segments.len().saturating_sub(1)]);
                (spans.key(&at), with_path(&parent, &suggest(message)))
            }
            None => (spans.find(&at), with_path(&at, &message)),
        };
        errors.push(Diagnostic::new(file, pos, text));
        match cut(&mut doc, &segments) {
            Some(Cut::Route(i)) => cut_routes.push(i),
            Some(Cut::Key) => {}
            // The document itself is misshapen (not a mapping): nothing more to read.
            None => return (RawConfig::default(), errors),
        }
    }
    let more = "too many problems in the shape of the file; fix these first";
    errors.push(Diagnostic::new(file, None, more));
    (RawConfig::default(), errors)
}

/// Most structural problems (unknown keys, misshapen sections) reported in one run.
const MAX_STRUCTURAL: usize = 100;

/// `routes[0].tls.cert` for the segments routes, 0, tls, cert.
fn yaml_path(segments: &[&Segment]) -> String {
    let mut path = String::new();
    for segment in segments {
        match segment {
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Map { key } if path.is_empty() => path.push_str(key),
            Segment::Map { key } => path.push_str(&format!(".{key}")),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    path
}

fn with_path(path: &str, message: &str) -> String {
    if path.is_empty() {
        message.to_string()
    } else {
        format!("{path}: {message}")
    }
}

/// For "unknown field `x`, expected one of `a`, `b`", adds the expected key closest to `x`.
fn suggest(mut message: String) -> String {
    if let Some(key) = nearest_key(&message) {
        message = format!("{message}; did you mean `{key}`?");
    }
    message
}

fn nearest_key(message: &str) -> Option<String> {
    let rest = &message[message.find("unknown field `")? + "unknown field `".len()..];
    let (unknown, expected) = rest.split_once('`')?;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|k| (strsim::jaro_winkler(unknown, k), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k.to_string())
}

/// What `cut` removed.
enum Cut {
    /// A mapping entry.
    Key,
    /// The route at this index, replaced by null (removing it would renumber the rest).
    Route(usize),
}

/// Removes the node at `segments` from `doc`; `None` when there is no such node to cut
/// (the root, or a path serde could not name).
fn cut(doc: &mut Value, segments: &[&Segment]) -> Option<Cut> {
    let (last, parents) = segments.split_last()?;
    let mut node = doc;
    for segment in parents {
        node = match (segment, node) {
            (Segment::Map { key }, Value::Mapping(map)) => map.get_mut(key.as_str())?,
            (Segment::Seq { index }, Value::Sequence(seq)) => seq.get_mut(*index)?,
            _ => return None,
        };
    }
    match (last, node) {
        (Segment::Map { key }, Value::Mapping(map)) => {
            map.remove(key.as_str())?;
            Some(Cut::Key)
        }
        (Segment::Seq { index }, Value::Sequence(seq)) if parents.len() == 1 => {
            *seq.get_mut(*index)? = Value::Null;
            Some(Cut::Route(*index))
        }
        // serde names no key that is not text: drop every such key of this mapping.
        (Segment::Unknown, Value::Mapping(map)) => {
            let before = map.len();
            map.retain(|key, _| key.is_string());
            (map.len() < before).then_some(Cut::Key)
        }
        _ => None,
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of settings like listen:, tls:, defaults: and routes:"
)]
pub struct RawConfig {
    pub listen: Option<RawListen>,
    pub tls: Option<RawTls>,
    pub defaults: Option<RawDefaults>,
    pub limits: Option<RawLimits>,
    /// `None` entries were cut out by `read` (or are empty in the file, and reported).
    pub routes: Option<Vec<Option<RawRoute>>>,
    pub shutdown_timeout: Option<Value>,
    pub threads: Option<Value>,
    pub acme_webroot: Option<Value>,
    pub acme: Option<Value>,
    pub limits_store: Option<Value>,
    pub trusted_proxies: Option<Value>,
    pub access_log: Option<Value>,
    pub upgrade_grace: Option<Value>,
    pub upgrade_sock: Option<Value>,
    pub state_dir: Option<Value>,
    pub apps: Option<Value>,
    pub groups: Option<Value>,
    pub gpus: Option<Value>,
    pub api_keys: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of listeners like { http: 80, https: 443 }"
)]
pub struct RawListen {
    pub http: Option<Value>,
    pub http_mode: Option<Value>,
    pub https: Option<Value>,
    pub metrics: Option<Value>,
    pub metrics_hosts: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping like { cert: FILE, key: FILE }"
)]
pub struct RawTls {
    pub cert: Option<Value>,
    pub key: Option<Value>,
    pub min_version: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping like { max_header_bytes: 64K, max_headers: 100, header_timeout: 10s }"
)]
pub struct RawLimits {
    pub max_header_bytes: Option<Value>,
    pub max_headers: Option<Value>,
    pub header_timeout: Option<Value>,
    pub underscores_in_headers: Option<Value>,
    pub body_timeout: Option<Value>,
    pub body_min_rate: Option<Value>,
    pub ipv6_prefix: Option<Value>,
    pub send_timeout: Option<Value>,
    pub max_connections: Option<Value>,
    pub max_connections_per_client: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of route defaults like { max_body: 1G }"
)]
pub struct RawDefaults {
    pub max_body: Option<Value>,
    pub connect_timeout: Option<Value>,
    pub read_timeout: Option<Value>,
    pub write_timeout: Option<Value>,
    pub headers: Option<Mapping>,
    pub rate_limit: Option<Value>,
    pub auth_failures: Option<Value>,
    pub compress: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a route mapping like { host: voice.example.com, upstream: 127.0.0.1:7860 }"
)]
pub struct RawRoute {
    pub host: Option<Value>,
    pub path: Option<Value>,
    pub strip_prefix: Option<Value>,
    pub name: Option<Value>,
    pub upstream: Option<Value>,
    pub upstream_host: Option<Value>,
    pub balance: Option<Value>,
    pub health: Option<Value>,
    pub sticky: Option<Value>,
    pub max_concurrent: Option<Value>,
    pub queue: Option<Value>,
    pub max_body: Option<Value>,
    pub connect_timeout: Option<Value>,
    pub read_timeout: Option<Value>,
    pub write_timeout: Option<Value>,
    pub headers: Option<Mapping>,
    /// `acme` or `{ cert: FILE, key: FILE }`.
    pub tls: Option<Value>,
    pub rate_limit: Option<Value>,
    pub allow: Option<Value>,
    pub basic_auth: Option<RawBasicAuth>,
    pub forward_auth: Option<RawForwardAuth>,
    pub pass_authorization: Option<Value>,
    pub auth_failures: Option<Value>,
    pub app: Option<Value>,
    pub api_keys: Option<Value>,
    pub identity_header: Option<Value>,
    pub compress: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping like { realm: NAME, users: { alice: HASH }, htpasswd: FILE }"
)]
pub struct RawBasicAuth {
    pub realm: Option<Value>,
    pub users: Option<Mapping>,
    pub htpasswd: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping like { url: http://127.0.0.1:4180/oauth2/auth, copy_headers: [X-Auth-Request-User] }"
)]
pub struct RawForwardAuth {
    pub url: Option<Value>,
    pub copy_headers: Option<Value>,
    pub sign_in: Option<Value>,
    pub timeout: Option<Value>,
}
