//! An app's process (issue 29, `gateway::apps::process`): started in a group of its own
//! with its output in a log file, stopped by SIGTERM to the group and SIGKILL after the
//! grace period, adopted by identity.

use std::path::Path;
use std::time::{Duration, Instant};

use gateway::apps::process::*;

fn launch(dir: &Path, script: &str) -> Launch {
    Launch {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        workdir: Some(dir.to_path_buf()),
        env: vec![("GREETING".into(), "hello".into())],
        user: None,
        log: dir.join("app.log"),
    }
}

/// Waits (at most 10 s) until `file` holds a line.
fn wait_for(file: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(file) {
            if text.ends_with('\n') {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_stop_reaches_the_whole_group_and_the_log_keeps_the_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = "echo \"$GREETING from $(pwd)\"; sleep 30 & echo $! > grandchild; wait";
    let mut app = spawn(&launch(dir.path(), script)).expect("spawn");
    let grandchild: u32 = wait_for(&dir.path().join("grandchild"))
        .trim()
        .parse()
        .expect("pid");
    let grandchild = Identity::of(grandchild).expect("the grandchild runs");
    assert!(app.identity.alive());
    assert_eq!(app.stop(Duration::from_secs(5)).await, Stopped::Terminated);
    assert!(!app.identity.alive());
    let deadline = Instant::now() + Duration::from_secs(5);
    while grandchild.alive() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !grandchild.alive(),
        "the process the app started was stopped too"
    );
    let lines = last_lines(&dir.path().join("app.log"), 5);
    assert_eq!(lines, [format!("hello from {}", dir.path().display())]);
}

#[tokio::test]
async fn a_worker_ignoring_sigterm_is_killed_though_its_leader_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The leader exits on SIGTERM; its worker ignores it and would keep the app's port.
    let script = "sh -c 'trap \"\" TERM; echo $$ > worker; while :; do sleep 0.1; done' & wait";
    let mut app = spawn(&launch(dir.path(), script)).expect("spawn");
    let worker: u32 = wait_for(&dir.path().join("worker"))
        .trim()
        .parse()
        .expect("pid");
    let worker = Identity::of(worker).expect("the worker runs");
    let asked = Instant::now();
    assert_eq!(app.stop(Duration::from_secs(1)).await, Stopped::Killed);
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "killed before the grace ended"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while worker.alive() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!worker.alive(), "the worker outlived the stop");
}

#[tokio::test]
async fn a_process_ignoring_sigterm_is_killed_after_the_grace_period() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = "trap '' TERM; echo ready > ready; while :; do sleep 1; done";
    let mut app = spawn(&launch(dir.path(), script)).expect("spawn");
    wait_for(&dir.path().join("ready"));
    let started = Instant::now();
    assert_eq!(app.stop(Duration::from_millis(300)).await, Stopped::Killed);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(!app.identity.alive());
}

#[tokio::test]
async fn an_adopted_process_is_known_by_its_identity_and_can_be_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut original = spawn(&launch(dir.path(), "echo up > up; exec sleep 30")).expect("spawn");
    wait_for(&dir.path().join("up"));
    let identity = original.identity;
    let wrong = Identity {
        start_ticks: identity.start_ticks + 1,
        ..identity
    };
    assert!(
        Running::adopt(wrong).is_none(),
        "a recycled PID is not adopted"
    );
    let mut adopted = Running::adopt(identity).expect("adopted");
    assert_eq!(
        adopted.stop(Duration::from_secs(5)).await,
        Stopped::Terminated
    );
    assert_eq!(
        adopted.exited().await,
        None,
        "an adopted process has no status"
    );
    let status = original.exited().await.expect("the child's status");
    assert!(!status.success());
}

#[test]
fn a_missing_program_or_log_directory_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut missing = launch(dir.path(), "");
    missing.argv = vec!["/nonexistent/app-server".into()];
    let e = spawn(&missing).expect_err("no such program");
    assert_eq!(e.to_string(), "cannot start /nonexistent/app-server");
    let mut no_log = launch(dir.path(), "true");
    no_log.log = dir.path().join("missing/app.log");
    assert!(matches!(spawn(&no_log), Err(SpawnError::Log { .. })));
    missing.argv.clear();
    assert!(matches!(spawn(&missing), Err(SpawnError::Empty)));
}

#[test]
fn the_last_lines_of_a_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("app.log");
    let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
    std::fs::write(&log, text).expect("write");
    assert_eq!(last_lines(&log, 2), ["line 98", "line 99"]);
    assert!(last_lines(&dir.path().join("none.log"), 2).is_empty());
}
