//! `apps:`, `groups:` and `gpus:` (issue 29): the apps the gateway starts on demand and
//! stops when idle, the groups that tie them together, and each GPU's memory budget.
//! A route names its app with `app:` (`names` and `route_app` check those names).
//!
//! - `launch`: `run` or the `start`/`stop` commands;
//! - `gpu`: `gpu`, `gpus`, `groups`, and the checks between them;
//! - `model`: what the sections become.

mod gpu;
mod launch;
mod model;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::access::auth_url;
use super::checker::Checker;
use super::model::{AuthUrl, Route, StateDir};
use super::units::{self, shown};
use gpu::{gpu_need, gpus, group_names, groups, keep_loaded_fit, within_budget};
use launch::control;
pub use model::*;

/// Most apps one file may declare: far more than one machine runs.
const MAX_APPS: usize = 256;

/// The three sections; the apps' `ready` defaults to the address of the route naming
/// them, so the routes come too.
pub(super) fn apps(
    c: &mut Checker,
    raw: (Option<&Value>, Option<&Value>, Option<&Value>),
    routes: &[Route],
    state: &StateDir,
) -> Apps {
    let (apps_v, groups_v, gpus_v) = raw;
    let gpus = gpus_v.map(|v| gpus(c, v)).unwrap_or_default();
    let groups = groups_v.map(|v| groups(c, v)).unwrap_or_default();
    let mut apps = Vec::new();
    if let Some(v) = apps_v {
        if let Some(map) = mapping(
            c,
            "apps",
            v,
            "{ voice: { run: [python, app.py], ready: http://127.0.0.1:7860/ } }",
        ) {
            if map.len() > MAX_APPS {
                c.error("apps", format!("{} apps; at most {MAX_APPS}", map.len()));
            }
            for (key, value) in map.iter().take(MAX_APPS) {
                let Some(name) = app_name(c, key) else {
                    continue;
                };
                if let Some(app) = app(c, &name, value, (routes, state), (&groups, &gpus)) {
                    apps.push(app);
                }
            }
        }
    }
    keep_loaded_fit(c, &apps, &groups, &gpus);
    Apps { apps, groups, gpus }
}

pub(super) fn mapping<'v>(
    c: &mut Checker,
    at: &str,
    v: &'v Value,
    example: &str,
) -> Option<&'v Mapping> {
    match v {
        Value::Mapping(map) => Some(map),
        Value::Null => None,
        _ => {
            c.error(
                at,
                format!("expected a mapping like {example}, found {}", shown(v)),
            );
            None
        }
    }
}

/// An app or group name: what labels and URLs (`/-/apps/NAME/start`) carry.
fn app_name(c: &mut Checker, key: &Value) -> Option<String> {
    let name = match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => {
            c.error("apps", format!("app name {} is not text", shown(key)));
            return None;
        }
    };
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        c.error(
            &format!("apps.{name}"),
            format!(
                "invalid name {name:?}; expected letters, digits, `-`, `_` or `.` (at most 64)"
            ),
        );
        return None;
    }
    Some(name)
}

const APP_KEYS: [&str; 16] = [
    "run",
    "workdir",
    "env",
    "user",
    "log",
    "start",
    "stop",
    "ready",
    "start_timeout",
    "idle_stop",
    "stop_timeout",
    "gpu",
    "group",
    "max_waiting",
    "wake",
    "stop_on_exit",
];

/// A timeout of at most a day (a start or stop that takes longer is stuck).
fn within_a_day(v: &Value) -> Result<Duration, String> {
    const DAY: Duration = Duration::from_secs(24 * 3600);
    let d = units::required_duration(v)?;
    match d <= DAY {
        true => Ok(d),
        false => Err(format!(
            "{} is longer than a day; expected at most 24h",
            shown(v)
        )),
    }
}

/// What an app is read against: the routes (for its default `ready`) and the state
/// directory (its default log); the groups and GPU budgets it may name.
type Context<'a> = (&'a [Route], &'a StateDir);
type Declared<'a> = (&'a [Group], &'a BTreeMap<u32, u64>);

fn app(
    c: &mut Checker,
    name: &str,
    v: &Value,
    (routes, state): Context,
    (known_groups, gpus): Declared,
) -> Option<App> {
    let path = format!("apps.{name}");
    let at = |key: &str| format!("{path}.{key}");
    let example = "{ run: [python, app.py], ready: http://127.0.0.1:7860/ }";
    let (map, known) = c.keyed(&path, v, &APP_KEYS, example)?;
    let get = |key: &str| map.get(key);
    let control = control(c, &path, name, map, state);
    let ready = ready(c, &at("ready"), name, get("ready"), routes, &path);
    let start_timeout = c
        .value(&at("start_timeout"), get("start_timeout"), within_a_day)
        .unwrap_or(DEFAULT_START_TIMEOUT);
    let idle_stop = c
        .value(&at("idle_stop"), get("idle_stop"), units::duration)
        .unwrap_or(None);
    let stop_timeout = c
        .value(&at("stop_timeout"), get("stop_timeout"), within_a_day)
        .unwrap_or(DEFAULT_STOP_TIMEOUT);
    let gpu = get("gpu").and_then(|v| gpu_need(c, &at("gpu"), v));
    if let Some(need) = gpu {
        within_budget(c, &at("gpu"), need, gpus);
    }
    let groups = get("group")
        .and_then(|v| c.value(&at("group"), Some(v), group_names))
        .unwrap_or_default();
    for group in &groups {
        if !known_groups.iter().any(|g| &g.name == group) {
            c.error(&at("group"), format!("no group {group:?} in `groups`"));
        }
    }
    let max_waiting = c
        .value(&at("max_waiting"), get("max_waiting"), max_waiting)
        .unwrap_or(DEFAULT_MAX_WAITING);
    let wake = get("wake")
        .and_then(|v| wake(c, &at("wake"), v))
        .unwrap_or_default();
    let stop_on_exit = c
        .value(&at("stop_on_exit"), get("stop_on_exit"), units::flag)
        .unwrap_or(true);
    if !known {
        return None;
    }
    Some(App {
        name: name.to_string(),
        control: control?,
        ready: ready?,
        start_timeout,
        idle_stop,
        stop_timeout,
        gpu,
        groups,
        max_waiting,
        wake,
        stop_on_exit,
    })
}

/// `ready: http://127.0.0.1:7860/` or `{ url: …, interval: 100ms }`; by default `GET /`
/// on the upstream of the routes naming the app, when they name one address.
fn ready(
    c: &mut Checker,
    path: &str,
    name: &str,
    v: Option<&Value>,
    routes: &[Route],
    app_path: &str,
) -> Option<Ready> {
    let (url, interval) = match v {
        Some(Value::Mapping(_)) => {
            let example = "{ url: http://127.0.0.1:7860/, interval: 100ms }";
            let (map, _) = c.keyed(path, v?, &["url", "interval"], example)?;
            let url = match map.get("url") {
                Some(u) => Some(u.clone()),
                None => {
                    c.error(path, format!("missing `url`; expected {example}"));
                    return None;
                }
            };
            let interval = c.value(
                &format!("{path}.interval"),
                map.get("interval"),
                units::required_duration,
            );
            (url, interval)
        }
        other => (other.cloned(), None),
    };
    let url = match url {
        Some(u) => c.value(path, Some(&u), ready_url)?,
        None => {
            let mut upstreams: Vec<_> = routes.iter().flat_map(|r| r.upstreams_of(name)).collect();
            upstreams.dedup();
            match upstreams.as_slice() {
                [addr] => AuthUrl {
                    text: format!("http://{addr}/"),
                    tls: false,
                    host: addr.ip().to_string(),
                    addr: *addr,
                    path: "/".to_string(),
                },
                _ => {
                    c.error(app_path, "missing `ready`; expected the URL that answers once the app serves, e.g. ready: http://127.0.0.1:7860/");
                    return None;
                }
            }
        }
    };
    let interval = interval.unwrap_or(DEFAULT_READY_INTERVAL);
    if interval < Duration::from_millis(10) {
        c.error(&format!("{path}.interval"), "at least 10ms");
    }
    Some(Ready { url, interval })
}

fn ready_url(v: &Value) -> Result<AuthUrl, String> {
    let url = auth_url(v)?;
    if url.tls {
        return Err(format!(
            "invalid url {}; the check speaks plain HTTP to the app (http://…)",
            shown(v)
        ));
    }
    Ok(url)
}

fn max_waiting(v: &Value) -> Result<u32, String> {
    v.as_u64()
        .filter(|n| (1..=100_000).contains(n))
        .map(|n| n as u32)
        .ok_or_else(|| format!("invalid max_waiting {}; expected 1 to 100000", shown(v)))
}

fn wake(c: &mut Checker, path: &str, v: &Value) -> Option<Wake> {
    let example = "{ ignore_user_agents: [UptimeRobot], ignore_paths: [/favicon.ico] }";
    let (map, _) = c.keyed(path, v, &["ignore_user_agents", "ignore_paths"], example)?;
    let list = |c: &mut Checker, key: &str, paths: bool| {
        c.value(&format!("{path}.{key}"), map.get(key), |v| {
            let Value::Sequence(items) = v else {
                return Err(format!("expected a list, found {}", shown(v)));
            };
            items
                .iter()
                .map(|item| match item.as_str().map(str::trim) {
                    Some(s) if paths && s.starts_with('/') => Ok(s.to_string()),
                    Some(s) if !paths && !s.is_empty() => Ok(s.to_ascii_lowercase()),
                    _ if paths => Err(format!(
                        "invalid path {}; expected /favicon.ico or /static/*",
                        shown(item)
                    )),
                    _ => Err(format!(
                        "invalid user agent {}; expected a part of it, e.g. UptimeRobot",
                        shown(item)
                    )),
                })
                .collect()
        })
        .unwrap_or_default()
    };
    Some(Wake {
        ignore_user_agents: list(c, "ignore_user_agents", false),
        ignore_paths: list(c, "ignore_paths", true),
    })
}

/// The names `apps` declares, read before the routes so that a route naming an unknown
/// app is reported at its `app`.
pub(super) fn names(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Mapping(map)) => map
            .keys()
            .filter_map(|k| match k {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A pool's `app: [A, B]`: one known app per replica, each once.
pub(super) fn replica_apps(
    c: &mut Checker,
    path: &str,
    items: &[Value],
    replicas: Option<usize>,
    known: &[String],
) -> Vec<String> {
    if let Some(n) = replicas.filter(|n| *n != items.len()) {
        c.error(
            path,
            format!(
                "{} apps for {n} upstreams; expected one app per replica, in the order of `upstream`",
                items.len()
            ),
        );
        return Vec::new();
    }
    let mut names = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        match c.value(&at, Some(item), route_app(known)) {
            Some(name) if names.contains(&name) => {
                c.error(
                    &at,
                    format!("{name:?} is listed twice; expected one app per replica"),
                );
                return Vec::new();
            }
            Some(name) => names.push(name),
            None => return Vec::new(),
        }
    }
    names
}

/// A route's `app: NAME`, one of `known`.
pub(super) fn route_app(known: &[String]) -> impl Fn(&Value) -> Result<String, String> + '_ {
    move |v| {
        let name = match v {
            Value::String(s) => s.trim().to_string(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(format!(
                    "expected the name of an app in `apps`, found {}",
                    shown(v)
                ))
            }
        };
        match known.contains(&name) {
            true => Ok(name),
            false if known.is_empty() => {
                Err(format!("no app {name:?}: there is no `apps` section"))
            }
            false => Err(format!(
                "no app {name:?} in `apps` (known: {})",
                known.join(", ")
            )),
        }
    }
}
