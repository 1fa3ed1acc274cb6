//! The coordinator's long operations, each a task that reports back with an `Event`
//! carrying the start's token (a report about an older start is ignored):
//! - `keep`: holds a `run` app's process; reports its exit, or stops it when told;
//! - `await_ready`: polls the `ready` URL until it answers or `start_timeout` passes;
//! - `start_command` / `stop_command`: run a `start:` or `stop:` command to its end;
//! - `adopt`: finds an app already serving when the gateway starts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::process::{self, Identity, Running, Stopped};
use super::ready::ready;
use crate::config;

/// Lines of an app's log quoted in a failed start's message.
pub const LOG_LINES: usize = 5;

/// What a task reports to the coordinator, with the start's token.
pub enum Report {
    Ready {
        name: Arc<str>,
        token: u64,
    },
    StartFailed {
        name: Arc<str>,
        token: u64,
        reason: String,
        /// Not ready within `start_timeout` (else it failed outright).
        timed_out: bool,
    },
    /// A `run` app's process ended without being told to.
    Exited {
        name: Arc<str>,
        token: u64,
        status: Option<String>,
    },
    /// A stop is done.
    Stopped {
        name: Arc<str>,
        token: u64,
        how: String,
    },
    /// What `adopt` found.
    Adopted {
        name: Arc<str>,
        known: Option<Identity>,
        serving: bool,
    },
}

/// Where the tasks report.
pub type Events = mpsc::UnboundedSender<Report>;

/// Holds a running process until it exits or `stop` says to stop it.
pub async fn keep(
    name: Arc<str>,
    token: u64,
    mut running: Running,
    stop: oneshot::Receiver<Duration>,
    events: Events,
) {
    tokio::select! {
        status = running.exited() => {
            // Its group's other processes would hold the port and the GPU memory.
            running.end_group();
            let _ = events.send(Report::Exited { name, token, status: status.map(describe) });
        }
        Ok(grace) = stop => {
            let how = running.stop(grace).await;
            let how = match how {
                Stopped::Terminated => "exited after SIGTERM",
                Stopped::Killed => "killed after stop_timeout",
            };
            let _ = events.send(Report::Stopped { name, token, how: how.to_string() });
        }
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("ended by signal {signal}"),
        _ => "ended".to_string(),
    }
}

/// Polls the app's `ready` URL every `interval` until it answers (`Ready`), or reports
/// a failure `start_timeout` after `started`.
pub async fn await_ready(
    name: Arc<str>,
    token: u64,
    spec: Arc<config::App>,
    started: Instant,
    events: Events,
) {
    let (ready_check, timeout) = (&spec.ready, spec.start_timeout);
    let deadline = started + timeout;
    let mut tick = tokio::time::interval(ready_check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if ready(&ready_check.url).await {
            let _ = events.send(Report::Ready { name, token });
            return;
        }
        if Instant::now() >= deadline {
            let reason = format!(
                "not ready within start_timeout ({}): {} did not answer 2xx or 3xx",
                humantime::format_duration(timeout),
                ready_check.url.text
            );
            let _ = events.send(Report::StartFailed {
                name,
                token,
                reason,
                timed_out: true,
            });
            return;
        }
    }
}

/// Runs a `start:` or `stop:` command to its end, within `limit`: `Ok` on exit status 0,
/// else what went wrong with the last lines it wrote.
pub async fn command(argv: &[String], limit: Duration) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("an empty command")?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let output = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(format!("{program}: {e}")),
        Err(_) => {
            return Err(format!(
                "`{}` did not finish within {}",
                argv.join(" "),
                humantime::format_duration(limit)
            ))
        }
    };
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stdout));
    let tail: Vec<&str> = text.lines().rev().take(LOG_LINES).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "`{}` {}: {}",
        argv.join(" "),
        describe(output.status),
        tail.join(" | ")
    ))
}

/// The `start:` command, then the ready checks.
pub async fn start_command(
    name: Arc<str>,
    token: u64,
    spec: Arc<config::App>,
    start: Vec<String>,
    events: Events,
) {
    let started = Instant::now();
    if let Err(reason) = command(&start, spec.start_timeout).await {
        let _ = events.send(Report::StartFailed {
            name,
            token,
            reason,
            timed_out: false,
        });
        return;
    }
    await_ready(name, token, spec, started, events).await;
}

/// The `stop:` command; the app counts as stopped when it ends, whatever its status
/// (a failed one is logged).
pub async fn stop_command(
    name: Arc<str>,
    token: u64,
    stop: Vec<String>,
    limit: Duration,
    events: Events,
) {
    let how = match command(&stop, limit).await {
        Ok(()) => "stop command done".to_string(),
        Err(reason) => {
            log::warn!("event=app_stop_command_failed app={name} reason=\"{reason}\"");
            format!("stop command failed: {reason}")
        }
    };
    let _ = events.send(Report::Stopped { name, token, how });
}

/// What the gateway finds of an app when it starts, reloads or takes over from another
/// process: a process it ran before (`known`, still alive), and whether `ready` answers.
pub async fn adopt(
    name: Arc<str>,
    spec: Arc<config::App>,
    known: Option<Identity>,
    events: Events,
) {
    let known = known.filter(Identity::alive);
    let serving = ready(&spec.ready.url).await;
    let _ = events.send(Report::Adopted {
        name,
        known,
        serving,
    });
}

/// Starts a `run` app's process; its failure reason with the log's last lines.
pub fn spawn(spec: &config::App, run: &config::RunSpec) -> Result<Running, String> {
    if let Some(dir) = run.log.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let launch = process::Launch {
        argv: run.argv.clone(),
        workdir: run.workdir.clone(),
        env: run.env.clone(),
        user: run.user.as_ref().map(|(_, uid, gid)| (*uid, *gid)),
        log: run.log.clone(),
    };
    process::spawn(&launch).map_err(|e| {
        format!(
            "app {} could not start: {}",
            spec.name,
            crate::logging::chain(&e)
        )
    })
}

/// A failed start's reason with the last lines of the app's log.
pub fn with_log(reason: String, spec: &config::App) -> String {
    let config::Control::Run(run) = &spec.control else {
        return reason;
    };
    let lines = process::last_lines(&run.log, LOG_LINES);
    match lines.is_empty() {
        true => reason,
        false => format!("{reason}; its log ends: {}", lines.join(" | ")),
    }
}
