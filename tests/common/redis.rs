//! A real `redis-server` (Debian package `redis-server`) on a free loopback port, for the
//! shared limits store: started by the test, stopped by PID, and asked with `redis-cli`
//! (Debian package `redis-tools`).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    /// Starts redis-server in `dir` (no persistence) and waits until it answers PING.
    pub fn start(dir: &Path) -> Redis {
        let dir = dir.join("redis");
        std::fs::create_dir_all(&dir).expect("mkdir redis");
        let mut r = Redis {
            port: super::free_port(),
            dir,
            child: None,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// (Re)starts the server on the same port, empty (a restart forgets every key and
    /// script, as a real one without persistence does).
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .expect("redis log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("redis-server (Debian package redis-server) is the test's shared store");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.cli(&["PING"]).trim() == "PONG" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server not ready on {}:\n{}",
                self.port,
                std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Kills the server by PID and waits until its port refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                assert!(Instant::now() < deadline, "redis still listening");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the server: it keeps its connections but
    /// answers nothing meanwhile, like a server stuck behind a slow disk.
    pub fn pause(&self, paused: bool) {
        let sig = if paused { libc::SIGSTOP } else { libc::SIGCONT };
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, sig);
            }
        }
    }

    /// `redis-cli -p PORT ARGS`'s output (empty when it fails).
    pub fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// The keys matching `pattern`, sorted.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .cli(&["--scan", "--pattern", pattern])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.pause(false);
        self.stop();
    }
}
