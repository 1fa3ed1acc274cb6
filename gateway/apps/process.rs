//! One managed app's process (issue 29, `run:`): started from an argv in a process group
//! of its own, its output appended to a log file, stopped with SIGTERM to the whole group
//! and, past a grace period, SIGKILL. Known again after a binary upgrade by its PID and
//! start time (`Identity`), which no other process can share while it lives.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How to start an app's process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The program and its arguments; the program is looked up in `PATH` unless it has a
    /// slash.
    pub argv: Vec<String>,
    pub workdir: Option<PathBuf>,
    /// Added to the gateway's own environment.
    pub env: Vec<(String, String)>,
    /// Run as this user and group (the gateway must be root for it).
    pub user: Option<(u32, u32)>,
    /// stdout and stderr are appended here.
    pub log: PathBuf,
}

/// Why a process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("an empty command")]
    Empty,
    #[error("cannot open the log file {}", .path.display())]
    Log {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {program}")]
    Start {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

/// A process, across the lifetimes of gateway processes: its PID and its start time in
/// clock ticks since boot (`/proc/PID/stat`, field 22). A recycled PID has another start
/// time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub pid: u32,
    pub start_ticks: u64,
}

impl Identity {
    /// The identity of the live process `pid`; `None` when there is none (or only its
    /// zombie).
    pub fn of(pid: u32) -> Option<Identity> {
        let (state, start_ticks) = read_stat(pid)?;
        (state != b'Z').then_some(Identity { pid, start_ticks })
    }

    /// True while this very process runs.
    pub fn alive(&self) -> bool {
        Identity::of(self.pid) == Some(*self)
    }
}

fn read_stat(pid: u32) -> Option<(u8, u64)> {
    let (state, _, start_ticks) = read_full_stat(pid)?;
    Some((state, start_ticks))
}

fn read_full_stat(pid: u32) -> Option<(u8, u32, u64)> {
    parse_stat(&std::fs::read(format!("/proc/{pid}/stat")).ok()?)
}

/// The state, the process group and the start time of a `/proc/PID/stat` line. The
/// command name, in parentheses, may hold spaces and parentheses itself: the fields are
/// counted from the last `)`.
fn parse_stat(stat: &[u8]) -> Option<(u8, u32, u64)> {
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    let mut fields = rest.split_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    // Fields 3 (state), 4 (ppid), 5 (pgrp) … 22 (starttime).
    let group = fields.nth(1)?.parse().ok()?;
    let start_ticks = fields.nth(16)?.parse().ok()?;
    Some((state, group, start_ticks))
}

/// Whether processes of the group `leader` led (by its PID, the group's ID) are still
/// running: started no earlier than the leader, so a group of a recycled ID is never
/// taken for it. A worker that ignored SIGTERM, or outlived a crashed leader, holds the
/// app's port and GPU memory.
fn group_left(leader: Identity) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read_full_stat)
        .any(|(state, group, start)| {
            state != b'Z' && group == leader.pid && start >= leader.start_ticks
        })
}

/// A running app process: a child of this gateway, or one adopted from the process that
/// ran before a binary upgrade (then only its identity is known).
#[derive(Debug)]
pub struct Running {
    child: Option<tokio::process::Child>,
    pub identity: Identity,
}

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// It exited within the grace period after SIGTERM.
    Terminated,
    /// It was still running at the end of the grace period: its group got SIGKILL.
    Killed,
}

/// How often an adopted process (not a child: no exit notification) is looked at.
const ADOPTED_POLL: Duration = Duration::from_millis(200);

/// Starts `launch` in a process group of its own (so that a stop reaches the processes
/// it starts too), with stdin from /dev/null and its output appended to its log file.
pub fn spawn(launch: &Launch) -> Result<Running, SpawnError> {
    let (program, args) = launch.argv.split_first().ok_or(SpawnError::Empty)?;
    let log_error = |source| SpawnError::Log {
        path: launch.log.clone(),
        source,
    };
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log)
        .map_err(log_error)?;
    let log_too = log.try_clone().map_err(log_error)?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_too)
        .process_group(0)
        .kill_on_drop(false);
    if let Some(dir) = &launch.workdir {
        command.current_dir(dir);
    }
    if let Some((uid, gid)) = launch.user {
        command.uid(uid).gid(gid);
    }
    let start_error = |source| SpawnError::Start {
        program: program.clone(),
        source,
    };
    let child = command.spawn().map_err(start_error)?;
    let pid = child.id().unwrap_or_default();
    // A child's /proc entry stays until it is reaped, even if it has exited already.
    let start_ticks = read_stat(pid).map_or(0, |(_, ticks)| ticks);
    Ok(Running {
        child: Some(child),
        identity: Identity { pid, start_ticks },
    })
}

impl Running {
    /// A process started by the gateway before a binary upgrade, still running as
    /// `identity`; `None` when it is gone (or its PID now names another process).
    pub fn adopt(identity: Identity) -> Option<Running> {
        identity.alive().then_some(Running {
            child: None,
            identity,
        })
    }

    /// Waits until the process exits: its status for a child, `None` for an adopted one
    /// (its parent is no longer this process, which cannot learn it).
    pub async fn exited(&mut self) -> Option<ExitStatus> {
        match &mut self.child {
            Some(child) => child.wait().await.ok(),
            None => {
                while self.identity.alive() {
                    tokio::time::sleep(ADOPTED_POLL).await;
                }
                None
            }
        }
    }

    /// SIGTERM to the process group, then SIGKILL to it if the process (or another
    /// process of its group) is still running after `grace`. Returns once the process is
    /// gone.
    pub async fn stop(&mut self, grace: Duration) -> Stopped {
        let deadline = tokio::time::Instant::now() + grace;
        self.signal(Signal::SIGTERM);
        if tokio::time::timeout_at(deadline, self.exited())
            .await
            .is_ok()
        {
            // The leader is gone: the rest of its group gets the rest of the grace.
            while group_left(self.identity) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(ADOPTED_POLL).await;
            }
            return match self.end_group() {
                true => Stopped::Killed,
                false => Stopped::Terminated,
            };
        }
        self.signal(Signal::SIGKILL);
        self.exited().await;
        self.end_group();
        Stopped::Killed
    }

    /// SIGKILL to what is left of the group once its leader has exited (a crash, or a
    /// stop whose workers ignored SIGTERM); true if anything was left.
    pub fn end_group(&self) -> bool {
        if !group_left(self.identity) {
            return false;
        }
        let _ = killpg(Pid::from_raw(self.identity.pid as i32), Signal::SIGKILL);
        true
    }

    /// A signal to the process's group, only while the process is the one started (a
    /// child not yet reaped, an adopted process with its start time): a recycled PID,
    /// and so process group, is never signalled.
    fn signal(&self, signal: Signal) {
        let ours = match &self.child {
            Some(child) => child.id().is_some(),
            None => self.identity.alive(),
        };
        if ours && self.identity.pid > 0 {
            let group = Pid::from_raw(self.identity.pid as i32);
            let _ = killpg(group, signal);
        }
    }
}

/// The last `lines` lines of a log file, for the message of a failed start (at most the
/// last 64 KiB are read).
pub fn last_lines(log: &Path, lines: usize) -> Vec<String> {
    const TAIL: u64 = 64 << 10;
    let Ok(mut file) = std::fs::File::open(log) else {
        return Vec::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    if file
        .seek(SeekFrom::Start(len.saturating_sub(TAIL)))
        .is_err()
    {
        return Vec::new();
    }
    let mut tail = Vec::new();
    if file.take(TAIL).read_to_end(&mut tail).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&tail);
    let all: Vec<&str> = text.lines().collect();
    let skip = all.len().saturating_sub(lines);
    all[skip..].iter().map(|l| l.to_string()).collect()
}

#[cfg(test)]
mod tests;
