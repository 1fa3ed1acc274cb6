//! Real app servers from `tests/apps/` on free loopback ports: `app.py` (Starlette) under
//! uvicorn or hypercorn, `app.mjs` under Node's `node:http`. Each reports, as JSON, what
//! it received and which route it chose, so a test can prove what a real server makes of
//! a request target the proxy has already judged. Started by the test, killed by PID.
//!
//! `tests/apps/setup` (the virtualenv, node) runs once per test process; the first run on
//! a machine installs from PyPI and takes a few seconds.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Which server runs the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// `app.py` under uvicorn: HTTP/1.1 parsed by h11, no HTTP/2.
    Uvicorn,
    /// `app.py` under hypercorn: HTTP/1.1 (h11), and HTTP/2 by `Upgrade: h2c` or prior
    /// knowledge (h2), as it does by default.
    Hypercorn,
    /// `app.mjs` under `node`, routing on the WHATWG URL's pathname.
    Node,
}

/// A running app server; killed by PID and reaped on drop.
pub struct App {
    pub server: Server,
    port: u16,
    child: Child,
    /// The server's stdout and stderr, shown when it fails to come up.
    log: tempfile::NamedTempFile,
}

fn apps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apps")
}

/// Runs `tests/apps/setup` the first time it is called in this process; panics with its
/// output when it failed (every call, so each test names the cause).
fn setup() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let result = DONE.get_or_init(|| {
        let out = Command::new(apps_dir().join("setup"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run tests/apps/setup: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "tests/apps/setup failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

impl App {
    /// Starts `server` on 127.0.0.1 and a free port, and waits (30 s at most) until the
    /// port accepts connections.
    pub fn start(server: Server) -> App {
        setup();
        let port = super::free_port();
        let p = port.to_string();
        let mut cmd = match server {
            Server::Uvicorn => {
                let mut c = Command::new(apps_dir().join(".venv/bin/uvicorn"));
                c.args([
                    "app:app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &p,
                    "--no-access-log",
                ]);
                c
            }
            // `--workers 0`: serve in this process. hypercorn's default (one worker) spawns
            // a child, which killing this PID would leave behind.
            Server::Hypercorn => {
                let mut c = Command::new(apps_dir().join(".venv/bin/hypercorn"));
                c.args([
                    "app:app",
                    "--bind",
                    &format!("127.0.0.1:{p}"),
                    "--workers",
                    "0",
                ]);
                c
            }
            Server::Node => {
                let mut c = Command::new("node");
                c.args(["app.mjs", &p]);
                c
            }
        };
        let log = tempfile::NamedTempFile::new().expect("app log");
        let child = cmd
            .current_dir(apps_dir())
            .stdin(Stdio::null())
            .stdout(log.reopen().expect("app log"))
            .stderr(log.reopen().expect("app log"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {server:?}: {e}"));
        let mut app = App {
            server,
            port,
            child,
            log,
        };
        app.wait_ready();
        app
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the server wrote to stdout and stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{:?} exited early ({status}):\n{}",
                    self.server,
                    self.log_text()
                );
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{:?} not listening on {} after 30 s:\n{}",
                self.server,
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sends `request` byte for byte on a new connection and reads until the server
    /// closes it (or 10 s pass): everything that came back. Blocking.
    pub fn exchange(&self, request: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to app");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(request).expect("write request");
        let mut out = Vec::new();
        let mut buf = [0u8; 16 << 10];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        out
    }

    /// Sends `request` on a new connection and reads the response head (10 s at most):
    /// (the head, the connection still open), for an upgrade (`101`) and what follows.
    pub fn send_head(&self, request: &[u8]) -> (String, TcpStream) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to app");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(request).expect("write request");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 64 << 10 {
            match s.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        (String::from_utf8_lossy(&head).into_owned(), s)
    }

    /// The raw targets of every request the app received so far (`/__seen`).
    pub fn seen(&self) -> Vec<String> {
        let (_, json) = self.get("/__seen");
        json["paths"]
            .as_array()
            .map(|paths| {
                paths
                    .iter()
                    .filter_map(|p| p.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `GET TARGET HTTP/1.1` with `Connection: close`, the target sent as is: (status, the
    /// JSON body, or null when the body is not JSON). Status 0 when no response came.
    pub fn get(&self, target: &str) -> (u16, serde_json::Value) {
        let request =
            format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
        let out = self.exchange(request.as_bytes());
        let text = String::from_utf8_lossy(&out);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (
            status,
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }
}

impl Drop for App {
    fn drop(&mut self) {
        // SIGKILL to our own child's PID, then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
