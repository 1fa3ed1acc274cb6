//! Why the gateway stopped before serving, and the exit status each reason gives. A
//! configuration the operator must fix (a bad key, a certificate file that does not
//! load) exits with 78, `EX_CONFIG` of sysexits.h: systemd shows it as `CONFIG`, and a
//! unit's `RestartPreventExitStatus=78` keeps a broken file from restarting in a loop.
//! Anything else (a disk, the metrics registry, the TLS library) exits with 1.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{self, Diagnostic};
use crate::tls::SelfSignedError;

/// The exit status of a configuration error (`gateway check` and `gateway run`).
pub const CONFIG: u8 = 78;

/// Why `gateway run` could not start serving. Shown with its causes
/// (`logging::chain`).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration, or a file it names, is wrong: every problem, with its place.
    #[error("{}", config::render(.0).trim_end())]
    Config(Vec<Diagnostic>),
    /// The self-signed default certificate could not be written.
    #[error(transparent)]
    SelfSigned(#[from] SelfSignedError),
    #[error("metrics")]
    Metrics(#[from] prometheus::Error),
    #[error("access_log: cannot open {}", .path.display())]
    AccessLogFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("access_log")]
    AccessLogStdout(#[source] io::Error),
    /// The TLS library refused the listener's settings.
    #[error("TLS setup failed")]
    Tls(#[source] openssl::error::ErrorStack),
    /// The thread that starts and stops the managed apps could not be made.
    #[error("cannot start the apps coordinator")]
    Apps(#[source] io::Error),
}

impl From<Vec<Diagnostic>> for StartError {
    fn from(diagnostics: Vec<Diagnostic>) -> StartError {
        StartError::Config(diagnostics)
    }
}

impl StartError {
    /// 78 for a configuration error, else 1.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            StartError::Config(_) => ExitCode::from(CONFIG),
            _ => ExitCode::FAILURE,
        }
    }
}
