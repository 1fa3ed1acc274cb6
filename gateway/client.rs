//! `gateway reload`: the operator's side of `POST /-/reload` on the metrics listener.

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
        "{}: listen.metrics is not set, so there is no reload endpoint; \
         send SIGHUP to the gateway instead (e.g. systemctl reload gateway)",
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
    let addr = config::metrics_address(path)
        .map_err(ReloadError::Config)?
        .ok_or_else(|| ReloadError::NoEndpoint(path.to_path_buf()))?;
    let addr = reachable(addr);
    let (status, body) =
        post(addr, "/-/reload").map_err(|source| ReloadError::Unreachable { addr, source })?;
    match status {
        200 => Ok(body),
        400 => Err(ReloadError::Rejected(body)),
        _ => Err(ReloadError::Failed { status, text: body }),
    }
}

/// A wildcard listening address is reached on loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => (Ipv4Addr::LOCALHOST, addr.port()).into(),
        IpAddr::V6(ip) if ip.is_unspecified() => (Ipv6Addr::LOCALHOST, addr.port()).into(),
        _ => addr,
    }
}

/// A minimal HTTP/1.1 POST with no body: (status, response body).
fn post(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
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
