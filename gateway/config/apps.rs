//! `apps:`, `groups:` and `gpus:` (issue 29): the apps the gateway starts on demand and
//! stops when idle, the groups that tie them together, and each GPU's memory budget.
//! A route names its app with `app:`; `routes_name_known_apps` checks those names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::access::auth_url;
use super::checker::Checker;
use super::files;
use super::model::{AuthUrl, Route, StateDir};
use super::units::{self, shown};

pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_READY_INTERVAL: Duration = Duration::from_millis(100);
pub const DEFAULT_MAX_WAITING: u32 = 100;
/// Most apps one file may declare: far more than one machine runs.
const MAX_APPS: usize = 256;

/// One managed app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub name: String,
    pub control: Control,
    /// `GET` this until it answers 2xx or 3xx.
    pub ready: Ready,
    pub start_timeout: Duration,
    /// Stopped after this long without a request in flight or a byte on any of its
    /// connections; `None`: never stopped for being idle.
    pub idle_stop: Option<Duration>,
    /// Between SIGTERM (or the `stop` command) and SIGKILL.
    pub stop_timeout: Duration,
    pub gpu: Option<GpuNeed>,
    /// The groups it belongs to, by name (each in `Config::groups`).
    pub groups: Vec<String>,
    /// Requests held while it starts; more get 503 at once.
    pub max_waiting: u32,
    /// Requests that never start it and never keep it running.
    pub wake: Wake,
    /// Stopped when the gateway itself stops (`run` apps only; `false`: left running).
    pub stop_on_exit: bool,
}

/// How an app is started and stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// `run:` supervised by the gateway.
    Run(RunSpec),
    /// `start:` and `stop:` commands (systemd, Docker…), each run to its end.
    Commands {
        start: Vec<String>,
        stop: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    /// The program (an absolute path, found at load) and its arguments.
    pub argv: Vec<String>,
    pub workdir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    /// `user`: its name, uid and gid.
    pub user: Option<(String, u32, u32)>,
    /// Where its stdout and stderr are appended.
    pub log: PathBuf,
}

/// `ready`: the URL polled while it starts, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub url: AuthUrl,
    pub interval: Duration,
}

/// `gpu: { device: 0, memory: 12GiB }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuNeed {
    pub device: u32,
    pub memory: u64,
}

/// `wake`: requests that neither start an app nor count as its use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wake {
    /// Lower-case substrings of `User-Agent`.
    pub ignore_user_agents: Vec<String>,
    /// Paths, exact, or prefixes when they end with `*`.
    pub ignore_paths: Vec<String>,
}

impl Wake {
    /// Whether a request with this user agent and path is one that must not wake the app.
    pub fn ignores(&self, user_agent: Option<&[u8]>, path: &str) -> bool {
        let agent = user_agent.is_some_and(|ua| {
            self.ignore_user_agents.iter().any(|needle| {
                ua.windows(needle.len())
                    .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
            })
        });
        agent
            || self.ignore_paths.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => path == p,
            })
    }
}

/// `groups: { NAME: { exclusive: true, keep_loaded: true } }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    /// Starting one member stops the others first.
    pub exclusive: bool,
    /// Members are never stopped to make room for another app.
    pub keep_loaded: bool,
}

/// The `apps`, `groups` and `gpus` sections, as validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Apps {
    pub apps: Vec<App>,
    pub groups: Vec<Group>,
    /// Each device's memory budget in bytes, by index.
    pub gpus: BTreeMap<u32, u64>,
}

impl Apps {
    pub fn get(&self, name: &str) -> Option<&App> {
        self.apps.iter().find(|a| a.name == name)
    }

    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }
}

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

fn mapping<'v>(c: &mut Checker, at: &str, v: &'v Value, example: &str) -> Option<&'v Mapping> {
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
        .value(
            &at("start_timeout"),
            get("start_timeout"),
            units::required_duration,
        )
        .unwrap_or(DEFAULT_START_TIMEOUT);
    let idle_stop = c
        .value(&at("idle_stop"), get("idle_stop"), units::duration)
        .unwrap_or(None);
    let stop_timeout = c
        .value(
            &at("stop_timeout"),
            get("stop_timeout"),
            units::required_duration,
        )
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

/// `run` (with `workdir`, `env`, `user`, `log`) or `start` and `stop`.
fn control(
    c: &mut Checker,
    path: &str,
    name: &str,
    map: &Mapping,
    state: &StateDir,
) -> Option<Control> {
    let at = |key: &str| format!("{path}.{key}");
    let run = map.get("run");
    let (start, stop) = (map.get("start"), map.get("stop"));
    match (run, start, stop) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            c.error(path, "give either `run` (the gateway runs the app) or `start` and `stop` (commands), not both");
            None
        }
        (Some(run), None, None) => run_spec(c, path, name, run, map, state).map(Control::Run),
        (None, Some(start), Some(stop)) => {
            for key in ["workdir", "env", "user", "log"] {
                if map.contains_key(key) {
                    c.error(
                        &at(key),
                        "applies to `run` only; a `start` command sets up its own app",
                    );
                }
            }
            let start = c.value(&at("start"), Some(start), argv);
            let stop = c.value(&at("stop"), Some(stop), argv);
            Some(Control::Commands {
                start: start?,
                stop: stop?,
            })
        }
        (None, Some(_), None) => {
            c.error(path, "`start` needs `stop` too (e.g. stop: [systemctl, stop, heygem]): the gateway stops apps when idle or for room");
            None
        }
        (None, None, Some(_)) => {
            c.error(
                path,
                "`stop` needs `start` too (e.g. start: [systemctl, start, heygem])",
            );
            None
        }
        (None, None, None) => {
            c.error(path, "missing `run` (e.g. run: [python, app.py, --port, \"7860\"]) or `start` and `stop` commands");
            None
        }
    }
}

fn run_spec(
    c: &mut Checker,
    path: &str,
    name: &str,
    run: &Value,
    map: &Mapping,
    state: &StateDir,
) -> Option<RunSpec> {
    let at = |key: &str| format!("{path}.{key}");
    let workdir = c.file_path(&at("workdir"), map.get("workdir"));
    if let Some(dir) = &workdir {
        if !dir.is_dir() {
            c.error(
                &at("workdir"),
                format!("{} is not a directory", dir.display()),
            );
        }
    }
    let env = map
        .get("env")
        .and_then(|v| env(c, &at("env"), v))
        .unwrap_or_default();
    let user = map
        .get("user")
        .and_then(|v| c.value(&at("user"), Some(v), run_user));
    let log = c
        .file_path(&at("log"), map.get("log"))
        .unwrap_or_else(|| state.path.join("apps").join(format!("{name}.log")));
    let log_dir = log.parent().unwrap_or(Path::new("."));
    if let Err(e) = files::writable_dir(log_dir) {
        let at = match map.contains_key("log") {
            true => at("log"),
            false => path.to_string(),
        };
        c.error(
            &at,
            format!("{e}; the app's output is appended to {}", log.display()),
        );
    }
    let mut argv = c.value(&at("run"), Some(run), argv)?;
    let base = workdir.clone().unwrap_or_else(|| c.base().to_path_buf());
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var("PATH").ok())
        .unwrap_or_default();
    match program(&argv[0], &base, &path_var) {
        Ok(found) => argv[0] = found.display().to_string(),
        Err(e) => {
            c.error(&at("run"), e);
            return None;
        }
    }
    Some(RunSpec {
        argv,
        workdir,
        env,
        user,
        log,
    })
}

/// The program of `run`, as an absolute path: with a slash, relative to the app's
/// working directory; without, looked up in `PATH` (the app's own, if `env` sets one).
fn program(name: &str, base: &Path, path_var: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let found = base.join(name);
        return match executable(&found) {
            true => Ok(found),
            false => Err(format!("{} is not an executable file", found.display())),
        };
    }
    std::env::split_paths(path_var)
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
        .ok_or_else(|| format!("{name:?} is not found in PATH; give its full path"))
}

/// A command: a list of arguments, or one line split at spaces (without quotes: a list
/// says exactly where each argument ends).
fn argv(v: &Value) -> Result<Vec<String>, String> {
    const EXPECTED: &str = "expected a command, as a list like [python, app.py, --port, \"7860\"]";
    let words: Vec<String> = match v {
        Value::Sequence(items) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(format!("argument {} is not text; {EXPECTED}", shown(item))),
            })
            .collect::<Result<_, _>>()?,
        Value::String(s) if s.contains(['"', '\'', '\\']) => {
            return Err(format!("{} has quotes; {EXPECTED}", shown(v)))
        }
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        _ => return Err(format!("{EXPECTED}, found {}", shown(v))),
    };
    if words.first().is_none_or(|w| w.trim().is_empty()) {
        return Err(format!("empty command; {EXPECTED}"));
    }
    Ok(words)
}

/// `env: { CUDA_VISIBLE_DEVICES: "0" }`.
fn env(c: &mut Checker, path: &str, v: &Value) -> Option<Vec<(String, String)>> {
    let map = mapping(c, path, v, "{ CUDA_VISIBLE_DEVICES: \"0\" }")?;
    let mut vars = Vec::new();
    for (key, value) in map {
        let Some(key) = key
            .as_str()
            .filter(|k| !k.is_empty() && !k.contains(['=', '\0']))
        else {
            c.error(path, format!("invalid variable name {}", shown(key)));
            continue;
        };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                c.error(
                    &format!("{path}.{key}"),
                    format!("expected text, found {}", shown(value)),
                );
                continue;
            }
        };
        if text.contains('\0') {
            c.error(&format!("{path}.{key}"), "a value cannot hold a NUL byte");
            continue;
        }
        vars.push((key.to_string(), text));
    }
    Some(vars)
}

/// `user: NAME`: run as that user and its primary group (the gateway must be root).
fn run_user(v: &Value) -> Result<(String, u32, u32), String> {
    let name = v
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("expected a user name, found {}", shown(v)))?;
    let user = nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .ok_or_else(|| format!("no user {name:?} on this machine"))?;
    let (uid, gid) = (user.uid.as_raw(), user.gid.as_raw());
    let me = nix::unistd::geteuid().as_raw();
    if me != 0 && me != uid {
        return Err(format!(
            "running an app as {name:?} needs the gateway to run as root (it runs as uid {me})"
        ));
    }
    Ok((name.to_string(), uid, gid))
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
            let mut upstreams: Vec<_> = routes
                .iter()
                .filter(|r| r.app.as_deref() == Some(name))
                .flat_map(|r| r.upstreams.iter().copied())
                .collect();
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

fn gpu_need(c: &mut Checker, path: &str, v: &Value) -> Option<GpuNeed> {
    let example = "{ device: 0, memory: 12GiB }";
    let (map, known) = c.keyed(path, v, &["device", "memory"], example)?;
    let device = c.value(&format!("{path}.device"), map.get("device"), device);
    let memory = c.value(&format!("{path}.memory"), map.get("memory"), memory);
    if map.get("memory").is_none() {
        c.error(path, format!("missing `memory`; expected {example}"));
    }
    known.then_some(())?;
    Some(GpuNeed {
        device: device.unwrap_or(0),
        memory: memory?,
    })
}

fn device(v: &Value) -> Result<u32, String> {
    v.as_u64()
        .filter(|n| *n < 1024)
        .map(|n| n as u32)
        .ok_or_else(|| format!("invalid device {}; expected its index, e.g. 0", shown(v)))
}

fn memory(v: &Value) -> Result<u64, String> {
    units::size(v)?
        .ok_or_else(|| format!("invalid memory {}; expected a size like 12GiB", shown(v)))
}

fn group_names(v: &Value) -> Result<Vec<String>, String> {
    let one = |item: &Value| match item {
        Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => Err(format!(
            "invalid group {}; expected a name from `groups`",
            shown(item)
        )),
    };
    match v {
        Value::Sequence(items) => items.iter().map(one).collect(),
        _ => one(v).map(|g| vec![g]),
    }
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

fn groups(c: &mut Checker, v: &Value) -> Vec<Group> {
    let Some(map) = mapping(c, "groups", v, "{ studio: { exclusive: true } }") else {
        return Vec::new();
    };
    let mut groups = Vec::new();
    for (key, value) in map {
        let Some(name) = key.as_str().map(str::to_string) else {
            c.error("groups", format!("group name {} is not text", shown(key)));
            continue;
        };
        let path = format!("groups.{name}");
        let example = "{ exclusive: true, keep_loaded: false }";
        let Some((g, _)) = c.keyed(&path, value, &["exclusive", "keep_loaded"], example) else {
            continue;
        };
        let exclusive = c.value(
            &format!("{path}.exclusive"),
            g.get("exclusive"),
            units::flag,
        );
        let keep_loaded = c.value(
            &format!("{path}.keep_loaded"),
            g.get("keep_loaded"),
            units::flag,
        );
        groups.push(Group {
            name,
            exclusive: exclusive.unwrap_or(false),
            keep_loaded: keep_loaded.unwrap_or(false),
        });
    }
    groups
}

/// `gpus: { 0: { memory: 24GiB } }`.
fn gpus(c: &mut Checker, v: &Value) -> BTreeMap<u32, u64> {
    let mut budgets = BTreeMap::new();
    let Some(map) = mapping(c, "gpus", v, "{ 0: { memory: 24GiB } }") else {
        return budgets;
    };
    for (key, value) in map {
        let Ok(index) = device(key) else {
            c.error(
                "gpus",
                format!("invalid device {}; expected its index, e.g. 0", shown(key)),
            );
            continue;
        };
        let path = format!("gpus.{index}");
        let Some((g, _)) = c.keyed(&path, value, &["memory"], "{ memory: 24GiB }") else {
            continue;
        };
        match g.get("memory") {
            Some(m) => {
                if let Some(bytes) = c.value(&format!("{path}.memory"), Some(m), memory) {
                    budgets.insert(index, bytes);
                }
            }
            None => c.error(&path, "missing `memory`; expected e.g. memory: 24GiB"),
        }
    }
    budgets
}

/// An app's declared memory within its device's budget.
fn within_budget(c: &mut Checker, path: &str, need: GpuNeed, gpus: &BTreeMap<u32, u64>) {
    match gpus.get(&need.device) {
        None => c.error(
            &format!("{path}.device"),
            format!(
                "device {0} has no budget: add gpus: {{ {0}: {{ memory: 24GiB }} }}",
                need.device
            ),
        ),
        Some(&budget) if need.memory > budget => c.error(
            &format!("{path}.memory"),
            format!(
                "{} is more than device {}'s whole budget ({}): the app could never start",
                units::bytes_shown(need.memory),
                need.device,
                units::bytes_shown(budget)
            ),
        ),
        Some(_) => {}
    }
}

/// A warning when a device's `keep_loaded` apps cannot all run at once.
fn keep_loaded_fit(c: &mut Checker, apps: &[App], groups: &[Group], gpus: &BTreeMap<u32, u64>) {
    let kept = |app: &&App| {
        app.groups
            .iter()
            .any(|name| groups.iter().any(|g| &g.name == name && g.keep_loaded))
    };
    for (device, budget) in gpus {
        let declared: u64 = apps
            .iter()
            .filter(kept)
            .filter_map(|a| a.gpu.filter(|g| g.device == *device))
            .map(|g| g.memory)
            .sum();
        if declared > *budget {
            c.warn(
                &format!("gpus.{device}"),
                "the keep_loaded apps on this device need more than its budget together: once some run, the others cannot start",
            );
        }
    }
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
