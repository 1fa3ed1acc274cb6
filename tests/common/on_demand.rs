//! Apps started on demand (issue 29): the test app the gateway starts
//! (`common/ondemand.py`, which sleeps like a loading model before it listens and holds a
//! token file while it runs), its `apps:` entry and route, and the waits the tests share.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{free_port, Env};

/// The test app's script.
pub fn script() -> String {
    format!("{}/tests/common/ondemand.py", env!("CARGO_MANIFEST_DIR"))
}

/// One app of a test: its name, port, and where it keeps its token.
pub struct TestApp {
    pub name: &'static str,
    pub port: u16,
    pub dir: PathBuf,
}

impl TestApp {
    pub fn new(env: &Env, name: &'static str) -> TestApp {
        let dir = env.path("apps");
        std::fs::create_dir_all(&dir).expect("apps dir");
        TestApp {
            name,
            port: free_port(),
            dir,
        }
    }

    /// Its `apps:` entry: it loads for `delay` seconds; `more` adds keys.
    pub fn entry(&self, delay: f64, more: &str) -> String {
        self.entry_stopping(delay, 0.0, more)
    }

    /// The same, for an app that takes `stop_delay` seconds to exit after SIGTERM.
    pub fn entry_stopping(&self, delay: f64, stop_delay: f64, more: &str) -> String {
        format!(
            "  {}:\n    run: [python3, {}, {}, \"{}\", \"{delay}\", {}, \"{stop_delay}\"]\n    ready: \"http://127.0.0.1:{}/\"\n{more}",
            self.name,
            script(),
            self.name,
            self.port,
            self.dir.display(),
            self.port
        )
    }

    /// When it began to listen (seconds since the epoch), once it has.
    pub fn listening_at(&self) -> Option<f64> {
        let path = self.dir.join(format!("{}.listening", self.name));
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    pub fn route(&self, host: &str) -> String {
        format!(
            "  - host: {host}\n    upstream: \"127.0.0.1:{}\"\n    app: {}\n",
            self.port, self.name
        )
    }

    pub fn token(&self) -> PathBuf {
        self.dir.join(format!("{}.token", self.name))
    }

    /// The PID of its running process, from its token.
    pub fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.token())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn running(&self) -> bool {
        self.pid().is_some_and(alive)
    }
}

/// Whether `pid` runs (a zombie no longer does: an app whose parent gateway exited is
/// reaped by init, which may take its time).
pub fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some(Some('Z')) | None)
}

/// Ends the app processes a test's gateway started (each named in its token file), when
/// the test ends whichever way.
pub struct Cleanup(pub PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(dir) = std::fs::read_dir(&self.0) else {
            return;
        };
        for entry in dir.flatten() {
            let pid = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok());
            if let Some(pid) = pid {
                // SAFETY: SIGKILL to a process this test's gateway started.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

pub fn config(env: &Env, apps: &[String], routes: &[String], top: &str) -> String {
    format!(
        "{}{top}routes:\n{}apps:\n{}",
        env.listen_and_tls(),
        routes.concat(),
        apps.concat()
    )
}

/// Waits (bounded) until `cond` holds.
pub async fn until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `gateway ARGS -c routes.yaml`: its standard output (it must succeed).
pub fn cli(env: &Env, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .arg("-c")
        .arg(env.path("routes.yaml"))
        .output()
        .expect("gateway cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
