//! What `apps`, `groups` and `gpus` become: plain data for the runtime (`crate::apps`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::super::model::AuthUrl;

pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_READY_INTERVAL: Duration = Duration::from_millis(100);
pub const DEFAULT_MAX_WAITING: u32 = 100;

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
