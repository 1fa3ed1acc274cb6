//! `gateway reload` and `gateway apps`: the operator's side of `POST /-/reload` and
//! `/-/apps` on the metrics listener.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{self, Diagnostic};

/// How long a reload may take to answer (it loads every certificate).
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a reload did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file cannot tell where the gateway listens (unreadable, not YAML, or a bad
    /// `listen.metrics`).
    #[error("{}", config::render(.0).trim_end())]
    Config(Vec<Diagnostic>),
    #[error(
        "{}: listen.metrics is not set, so the gateway has no admin endpoint (reload, apps); \
         for a reload, send SIGHUP instead (e.g. systemctl reload gateway)",
        .0.display()
    )]
    NoEndpoint(PathBuf),
    #[error("cannot reach the gateway at {addr} (listen.metrics)")]
    Unreachable {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The gateway rejected the new configuration (400): its answer, every problem.
    #[error("{}", .0.trim_end())]
    Rejected(String),
    /// Any other answer (403 from another address, 500): its status and text.
    #[error("the gateway answered {status}: {}", .text.trim_end())]
    Failed { status: u16, text: String },
}

impl ReloadError {
    /// 78 when the configuration is wrong (as `gateway check` would say), else 1.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            ReloadError::Config(_) | ReloadError::Rejected(_) => {
                ExitCode::from(crate::exit::CONFIG)
            }
            _ => ExitCode::FAILURE,
        }
    }
}

/// Asks the gateway configured by `path` to reload: its answer, or why not.
pub fn reload(path: &Path) -> Result<String, ReloadError> {
    let (status, body) = ask(path, "POST", "/-/reload")?;
    match status {
        200 => Ok(body),
        400 => Err(ReloadError::Rejected(body)),
        _ => Err(ReloadError::Failed { status, text: body }),
    }
}

/// `gateway apps`: the managed apps as a table; with an action, `start` or `stop` one.
pub fn apps(path: &Path, action: Option<(&str, &str)>) -> Result<String, ReloadError> {
    let (method, target) = match action {
        Some((verb, name)) => ("POST", format!("/-/apps/{name}/{verb}")),
        None => ("GET", "/-/apps".to_string()),
    };
    let (status, body) = ask(path, method, &target)?;
    if status != 200 {
        return Err(ReloadError::Failed { status, text: body });
    }
    if action.is_some() {
        return Ok(body);
    }
    let report: serde_json::Value =
        serde_json::from_str(&body).map_err(|_| ReloadError::Failed {
            status,
            text: body.clone(),
        })?;
    Ok(table(&report))
}

/// One line per app: name, state, PID, uptime, idle time, requests, GPU.
fn table(report: &serde_json::Value) -> String {
    let mut out = format!(
        "{:<20} {:<9} {:>8} {:>9} {:>8} {:>9} {:>8} {}\n",
        "APP", "STATE", "PID", "UPTIME_S", "IDLE_S", "IN_FLIGHT", "WAITING", "GPU"
    );
    let empty = Vec::new();
    for app in report["apps"].as_array().unwrap_or(&empty) {
        let field = |key: &str| match &app[key] {
            serde_json::Value::Null => "-".to_string(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let gpu = match (&app["device"], app["memory_bytes"].as_u64()) {
            (serde_json::Value::Null, _) | (_, None) => "-".to_string(),
            (device, Some(bytes)) => format!("{device}: {} MiB", bytes >> 20),
        };
        out.push_str(&format!(
            "{:<20} {:<9} {:>8} {:>9} {:>8} {:>9} {:>8} {gpu}\n",
            field("name"),
            field("state"),
            field("pid"),
            field("uptime_seconds"),
            field("idle_seconds"),
            field("in_flight"),
            field("waiting"),
        ));
        if let Some(failure) = app["last_failure"].as_str() {
            out.push_str(&format!("  last failed start: {failure}\n"));
        }
    }
    out
}

/// Sends `method target` to the metrics listener of the gateway configured by `path`.
fn ask(path: &Path, method: &str, target: &str) -> Result<(u16, String), ReloadError> {
    let addr = config::metrics_address(path)
        .map_err(ReloadError::Config)?
        .ok_or_else(|| ReloadError::NoEndpoint(path.to_path_buf()))?;
    let addr = reachable(addr);
    request(addr, method, target).map_err(|source| ReloadError::Unreachable { addr, source })
}

/// A wildcard listening address is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// A minimal HTTP/1.1 request with no body: (status, response body).
fn request(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {head:?}")))?;
    Ok((status, body.to_string()))
}
