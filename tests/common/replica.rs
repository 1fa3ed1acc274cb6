//! A replica of an app in its own process (`replica.py`, Python's standard library
//! only), on a free loopback port: the pool tests kill it by PID and start it again, as
//! a GPU app crashes and comes back.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Replica {
    pub name: String,
    pub addr: SocketAddr,
    /// Where it runs (its `NAME.down` file makes `/health` fail).
    dir: std::path::PathBuf,
    child: Option<Child>,
}

impl Replica {
    /// Starts replica `name` in `dir` and waits (20 s at most) until it accepts.
    pub fn start(name: &str, dir: &Path) -> Replica {
        let mut r = Replica {
            name: name.to_string(),
            addr: SocketAddr::from(([127, 0, 0, 1], super::free_port())),
            dir: dir.to_path_buf(),
            child: None,
        };
        r.restart();
        r
    }

    /// Starts it (again) on its port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/common/replica.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(&self.name)
            .arg(self.addr.port().to_string())
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 (Debian package python3) runs the test replicas");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(self.addr).is_err() {
            assert!(Instant::now() < deadline, "{} did not listen", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (SIGKILL, by PID) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Makes `/health` answer 503 (`true`) or 200.
    pub fn fail_health(&self, failing: bool) {
        let flag = self.dir.join(format!("{}.down", self.name));
        if failing {
            std::fs::write(flag, b"").expect("write flag");
        } else {
            let _ = std::fs::remove_file(flag);
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}
