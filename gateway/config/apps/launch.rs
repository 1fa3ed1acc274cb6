//! How an app starts and stops: `run` (with `workdir`, `env`, `user`, `log`), or the
//! `start` and `stop` commands.

use std::path::{Path, PathBuf};

use serde_yaml::{Mapping, Value};

use super::super::checker::Checker;
use super::super::files;
use super::super::model::StateDir;
use super::super::units::shown;
use super::{mapping, Control, RunSpec};

/// `run` (with `workdir`, `env`, `user`, `log`) or `start` and `stop`.
pub(super) fn control(
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
    // By default the app starts in the configuration file's directory, where relative
    // paths in its command are looked for.
    let base = c.base().to_path_buf();
    let workdir = workdir.or_else(|| (!base.as_os_str().is_empty()).then_some(base));
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
    let base = workdir.clone().unwrap_or_default();
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
