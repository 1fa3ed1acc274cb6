//! `defaults` and `routes`: what every route inherits, each route's own keys, and the
//! checks across routes (a host or a name given twice).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde_yaml::Value;

use super::access;
use super::acme;
use super::across;
use super::apps;
use super::checker::Checker;
use super::error::Pos;
use super::limits;
use super::model::*;
use super::names::{host_pattern, route_name, route_path, upstream_host};
use super::pool;
use super::raw::{RawDefaults, RawRoute};
use super::span::Spans;
use super::units::{self, shown};

/// The inherited settings every route starts from.
pub(super) struct Inherited {
    max_body: Option<u64>,
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    headers: Vec<(HeaderName, HeaderValue)>,
    rate_limit: Option<RateLimit>,
    auth_failures: Option<FailureLimit>,
    compress: bool,
    /// The app names `apps` declares, which a route's `app` must be one of.
    pub(super) apps: Vec<String>,
}

impl Inherited {
    /// `defaults.headers` (or the built-in security headers): also what the gateway's
    /// own pages carry when no route matched.
    pub(super) fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }
}

/// Every route, with duplicate hosts (host and path) and names reported, and routes of
/// one host checked to agree on its certificate. Cut or empty entries (`None`) were
/// reported when the file was read.
pub(super) fn routes(
    c: &mut Checker,
    raw: Vec<Option<RawRoute>>,
    inherited: &Inherited,
    spans: &Spans,
) -> Vec<Route> {
    let mut routes: Vec<Route> = Vec::new();
    let mut served: HashMap<(HostPattern, String), Option<Pos>> = HashMap::new();
    let mut names: HashMap<String, Option<Pos>> = HashMap::new();
    for (i, raw_route) in raw.into_iter().enumerate() {
        let at = format!("routes[{i}]");
        let Some(raw_route) = raw_route else {
            continue;
        };
        // Found on the host and path alone, so that a duplicate is reported even when
        // something else in either route is wrong too.
        let duplicate = across::served_twice(c, &mut served, &at, &raw_route, spans);
        let Some(r) = route(c, &at, raw_route, inherited) else {
            continue;
        };
        let r = Route { index: i, ..r };
        if duplicate
            || across::named_twice(c, &mut names, &at, &r, spans)
            || across::certificate_differs(c, &routes, &at, &r)
        {
            continue;
        }
        routes.push(r);
    }
    routes
}

pub(super) fn defaults(c: &mut Checker, raw: RawDefaults) -> Inherited {
    let mut headers = Vec::new();
    match &raw.headers {
        Some(map) => c.headers("defaults.headers", map, &mut headers),
        None => headers.extend([
            (
                http::header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000"),
            ),
            (
                http::header::X_FRAME_OPTIONS,
                HeaderValue::from_static("SAMEORIGIN"),
            ),
            (
                http::header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ]),
    }
    Inherited {
        max_body: c
            .value("defaults.max_body", raw.max_body.as_ref(), units::size)
            .unwrap_or(Some(DEFAULT_MAX_BODY)),
        connect_timeout: c
            .value(
                "defaults.connect_timeout",
                raw.connect_timeout.as_ref(),
                units::duration,
            )
            .unwrap_or(Some(DEFAULT_CONNECT_TIMEOUT)),
        read_timeout: c
            .value(
                "defaults.read_timeout",
                raw.read_timeout.as_ref(),
                units::duration,
            )
            .unwrap_or(Some(DEFAULT_READ_TIMEOUT)),
        write_timeout: c
            .value(
                "defaults.write_timeout",
                raw.write_timeout.as_ref(),
                units::duration,
            )
            .unwrap_or(Some(DEFAULT_WRITE_TIMEOUT)),
        headers,
        rate_limit: raw
            .rate_limit
            .as_ref()
            .and_then(|v| limits::rate_limit(c, "defaults.rate_limit", v))
            .flatten(),
        auth_failures: match &raw.auth_failures {
            Some(v) => access::failure_limit(c, "defaults.auth_failures", v).flatten(),
            None => Some(DEFAULT_AUTH_FAILURES),
        },
        compress: c
            .value("defaults.compress", raw.compress.as_ref(), units::flag)
            .unwrap_or(true),
        apps: Vec::new(),
    }
}

fn route(c: &mut Checker, path: &str, mut raw: RawRoute, inherited: &Inherited) -> Option<Route> {
    let at = |key: &str| format!("{path}.{key}");
    required(c, path, &raw);
    let host = c.value(&at("host"), raw.host.as_ref(), host_pattern);
    let (prefix, strip_prefix) = prefix(c, path, &raw);
    let upstreams = raw
        .upstream
        .as_ref()
        .and_then(|v| pool::upstreams(c, &at("upstream"), v));
    let pool = pool::settings(c, path, &raw, upstreams.as_ref().map_or(0, Vec::len));
    let upstream_host = c.value(
        &at("upstream_host"),
        raw.upstream_host.as_ref(),
        upstream_host,
    );
    let name = c.value(&at("name"), raw.name.as_ref(), route_name);
    let max_body = c.value(&at("max_body"), raw.max_body.as_ref(), units::size);
    let [connect_timeout, read_timeout, write_timeout] = timeouts(c, path, &raw, inherited);
    let rate_limit = match &raw.rate_limit {
        Some(v) => limits::rate_limit(c, &at("rate_limit"), v),
        None => Some(inherited.rate_limit.clone()),
    };
    let compress = c.value(&at("compress"), raw.compress.as_ref(), units::flag);
    let mut headers = inherited.headers.clone();
    if let Some(map) = &raw.headers {
        c.headers(&at("headers"), map, &mut headers);
    }
    let access = access::access(c, path, &mut raw);
    let auth_failures = match &raw.auth_failures {
        Some(v) => access::failure_limit(c, &at("auth_failures"), v),
        None => Some(inherited.auth_failures),
    };
    let replicas = upstreams.as_ref().map(Vec::len);
    let (app, replica_apps) = match &raw.app {
        Some(Value::Sequence(items)) => (
            None,
            apps::replica_apps(c, &at("app"), items, replicas, &inherited.apps),
        ),
        Some(v) => (
            c.value(&at("app"), Some(v), apps::route_app(&inherited.apps)),
            Vec::new(),
        ),
        None => (None, Vec::new()),
    };
    let managed = app.is_some() || !replica_apps.is_empty();
    if managed && raw.health.as_ref().is_some_and(|v| !units::is_off(v)) {
        c.error(
            &at("health"),
            "a route with `app` is checked by the app's `ready` URL, not by `health`; remove one",
        );
    }
    // Replicas that are managed apps are used while their app is ready: no default
    // health checks on them (a stopped app would be ejected).
    let pool = pool.map(|mut p| {
        if managed {
            p.health = None;
        }
        p
    });
    let (tls, acme) = match &raw.tls {
        None => (None, false),
        Some(v) => route_tls(c, &at("tls"), v, host.as_ref()),
    };
    let host = host?;
    let path = prefix?;
    Some(Route {
        index: 0,
        name: name.unwrap_or_else(|| match path.as_str() {
            "/" => host.to_string(),
            path => format!("{host}{path}"),
        }),
        host,
        path,
        strip_prefix,
        upstreams: upstreams?,
        upstream_host,
        pool: pool?,
        max_body: max_body.unwrap_or(inherited.max_body),
        connect_timeout,
        read_timeout,
        write_timeout,
        headers,
        compress: compress.unwrap_or(inherited.compress),
        tls,
        acme,
        rate_limit: rate_limit?,
        access: access?,
        auth_failures: auth_failures?,
        app,
        replica_apps,
    })
}

/// `host` and `upstream`, which every route needs.
fn required(c: &mut Checker, path: &str, raw: &RawRoute) {
    if raw.host.is_none() {
        c.error(
            path,
            "missing `host`; expected e.g. host: voice.example.com",
        );
    }
    if raw.upstream.is_none() {
        c.error(
            path,
            "missing `upstream`; expected e.g. upstream: 127.0.0.1:7860",
        );
    }
}

/// `path` (`/` when absent; `None` when invalid) and `strip_prefix`, which needs a path
/// other than `/`.
fn prefix(c: &mut Checker, path: &str, raw: &RawRoute) -> (Option<String>, bool) {
    let at = |key: &str| format!("{path}.{key}");
    let prefix = match &raw.path {
        None => Some("/".to_string()),
        Some(v) => c.value(&at("path"), Some(v), route_path),
    };
    let strip_prefix = c
        .value(&at("strip_prefix"), raw.strip_prefix.as_ref(), units::flag)
        .unwrap_or(false);
    let nothing_to_strip = match &raw.path {
        None => true,
        Some(_) => prefix.as_deref() == Some("/"),
    };
    if strip_prefix && nothing_to_strip {
        c.error(
            &at("strip_prefix"),
            "strip_prefix needs a `path` to strip; expected e.g. path: /voice/",
        );
    }
    (prefix, strip_prefix)
}

/// `connect_timeout`, `read_timeout` and `write_timeout`, each the inherited one unless
/// set (or invalid, which is reported).
fn timeouts(
    c: &mut Checker,
    path: &str,
    raw: &RawRoute,
    inherited: &Inherited,
) -> [Option<Duration>; 3] {
    let keys = [
        (
            "connect_timeout",
            &raw.connect_timeout,
            inherited.connect_timeout,
        ),
        ("read_timeout", &raw.read_timeout, inherited.read_timeout),
        ("write_timeout", &raw.write_timeout, inherited.write_timeout),
    ];
    keys.map(|(key, value, inherited)| {
        let at = format!("{path}.{key}");
        c.value(&at, value.as_ref(), units::duration)
            .unwrap_or(inherited)
    })
}

/// `tls`: `acme` (files in `acme.storage`, filled in once that is known), or
/// `{ cert: FILE, key: FILE }`. Also whether it is `acme`.
fn route_tls(
    c: &mut Checker,
    path: &str,
    v: &Value,
    host: Option<&HostPattern>,
) -> (Option<CertFiles>, bool) {
    const EXAMPLE: &str = "{ cert: FILE, key: FILE }";
    match v {
        Value::String(s) if s.trim() == "acme" => {
            if let Some(host @ HostPattern::Wildcard(_)) = host {
                acme::wildcard_error(c, path, host);
                return (None, false);
            }
            let files = CertFiles {
                cert: PathBuf::new(),
                key: PathBuf::new(),
                pos: c.pos(path),
                key_pos: c.pos(path),
                path: path.to_string(),
            };
            return (Some(files), true);
        }
        Value::Mapping(_) => {}
        _ => {
            c.error(
                path,
                format!(
                    "invalid tls {}; expected `acme` or a mapping like {EXAMPLE}",
                    shown(v)
                ),
            );
            return (None, false);
        }
    }
    let Some((map, true)) = c.keyed(path, v, &["cert", "key"], EXAMPLE) else {
        return (None, false);
    };
    let (cert, key) = (map.get("cert"), map.get("key"));
    if cert.is_none() && key.is_none() {
        c.error(path, "expected `cert` and `key`");
    }
    (c.cert_pair(path, cert, key), false)
}
