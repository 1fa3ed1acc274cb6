//! What the gateway writes and reads outside routes.yaml, checked as the user it runs as,
//! so that `gateway check` (the unit's `ExecStartPre`) fails wherever `run` would: the
//! state directory (the self-signed certificate, the ACME account and certificates) and
//! the access-log file.

use std::path::{Path, PathBuf};

use nix::unistd::{access, AccessFlags};
use serde_yaml::Value;

use super::checker::Checker;
use super::model::StateDir;

const STATE_DIR_KEY: &str = "state_dir";
/// Where systemd's `StateDirectory=` puts the directory it made for the service.
pub const STATE_ENV: &str = "STATE_DIRECTORY";
/// The state directory when neither `state_dir` nor `$STATE_DIRECTORY` names one.
#[cfg_attr(test, allow(dead_code))]
pub const DEFAULT_STATE_DIR: &str = "/var/lib/gateway";

/// `state_dir`, else `$STATE_DIRECTORY` (its first path: systemd joins several with
/// `:`), else /var/lib/gateway. A relative `state_dir` is relative to the config file.
pub(super) fn state_dir(c: &mut Checker, v: Option<&Value>) -> StateDir {
    if let Some(path) = c.file_path(STATE_DIR_KEY, v) {
        return StateDir {
            path,
            from: STATE_DIR_KEY,
        };
    }
    let from_env = std::env::var_os(STATE_ENV)
        .and_then(|list| std::env::split_paths(&list).find(|p| !p.as_os_str().is_empty()));
    match from_env {
        Some(path) => StateDir {
            path,
            from: "$STATE_DIRECTORY",
        },
        None => StateDir {
            path: default_state_dir(),
            from: "the default",
        },
    }
}

#[cfg(not(test))]
fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

/// Unit tests parse configurations as any user, without a state directory of their own.
#[cfg(test)]
fn default_state_dir() -> PathBuf {
    std::env::temp_dir().join("gateway-unit-tests")
}

/// An error when `dir` of the state directory (`None`: the directory itself), which
/// `what` needs, can be neither written nor created: at `state_dir` when the file sets
/// it, else at `at` (the setting that makes the gateway write there).
pub(super) fn check_state_dir(
    c: &mut Checker,
    state: &StateDir,
    dir: Option<&str>,
    at: &str,
    what: &str,
) {
    let path = dir.map_or_else(|| state.path.clone(), |d| state.path.join(d));
    if let Err(e) = writable_dir(&path) {
        let at = match state.from {
            STATE_DIR_KEY => STATE_DIR_KEY,
            _ => at,
        };
        c.error(
            at,
            format!(
                "{e}; the gateway writes {what} there (the state directory, from {}): make it writable by {}, or set `state_dir` to a directory that is",
                state.from,
                run_as()
            ),
        );
    }
}

/// A file the gateway appends to: writable, or one it can create in its directory,
/// which must exist (the gateway makes no directory for it).
pub(super) fn check_appendable(c: &mut Checker, at: &str, file: &Path) {
    let result = match std::fs::metadata(file) {
        Ok(meta) if meta.is_dir() => Err(format!("{} is a directory", file.display())),
        Ok(_) => access(file, AccessFlags::W_OK)
            .map_err(|e| format!("{} is not writable ({e})", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
            writable(dir.unwrap_or(Path::new(".")))
        }
        Err(e) => Err(format!("cannot use {}: {e}", file.display())),
    };
    if let Err(e) = result {
        c.error(at, format!("{e}; the gateway runs as {}", run_as()));
    }
}

/// An existing directory the gateway can write.
fn writable(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => Err(format!("{} is not a directory", dir.display())),
        Ok(_) => access(dir, AccessFlags::W_OK | AccessFlags::X_OK)
            .map_err(|e| format!("{} is not writable ({e})", dir.display())),
        Err(e) => Err(format!("cannot use {}: {e}", dir.display())),
    }
}

/// A directory the gateway can write, or one it can create (its nearest existing
/// ancestor is a writable directory). Nothing is created here.
pub(super) fn writable_dir(path: &Path) -> Result<(), String> {
    let here = Path::new(".");
    let ancestors = path.ancestors().filter(|p| !p.as_os_str().is_empty());
    for at in ancestors.chain(std::iter::once(here)) {
        match std::fs::metadata(at) {
            Ok(_) => return writable(at),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot use {}: {e}", at.display())),
        }
    }
    Err(format!("no directory of {} exists", path.display()))
}

/// The user this process runs as, for messages. By number: a static binary has no NSS
/// to look names up with.
fn run_as() -> String {
    format!("uid {}", nix::unistd::geteuid())
}
