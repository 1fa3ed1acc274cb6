//! Configuration reload (SIGHUP, `POST /-/reload`) and certificate renewal pick-up.
//!
//! A reload reads and fully validates the file, loads and checks every certificate, and
//! builds the new snapshot before anything changes; only then are the snapshot and the
//! certificate store swapped (one atomic store each). A request holds the snapshot it
//! started with, so in-flight requests, uploads, streams and WebSockets finish on the
//! configuration they began with. Any error leaves the running configuration untouched.
//!
//! Settings bound to listening sockets or to the process (listeners, threads, TLS
//! version, access log, timeouts of shutdown and upgrade, the HTTP/2 header list size
//! announced to clients) cannot change in place: a
//! reload that changes them is refused with a message pointing at a binary upgrade.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use log::{info, warn};
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::watch;

mod files;
mod fixed;

use files::Fingerprint;
use fixed::fixed_changes;

use crate::acme;
use crate::config::{self, CertFiles, Config, Diagnostic};
use crate::metrics::Metrics;
use crate::state::{Shared, Snapshot};
use crate::tls::{self, CertStore};

/// How often certificate, htpasswd and `api_keys` files are checked for replacement: a
/// revoked key is refused within this and a reload.
pub const CERT_CHECK_EVERY: Duration = Duration::from_secs(5);

/// The configuration in force and the certificate and login files it was loaded from.
struct Current {
    config: Config,
    default_cert: CertFiles,
    files: Vec<Fingerprint>,
    /// The htpasswd and `api_keys` files.
    logins: Vec<Fingerprint>,
    /// Failures still pending: the last reload asked for (SIGHUP, `/-/reload`) failed;
    /// the certificate files, or the login files, as they were when their pick-up last
    /// failed (tried again every check until they load; a version is logged once, a
    /// failure counted once until they load).
    config_failed: bool,
    cert_failure: Option<Vec<Fingerprint>>,
    login_failure: Option<Vec<Fingerprint>>,
}

impl Current {
    fn healthy(&self) -> bool {
        !self.config_failed && self.cert_failure.is_none() && self.login_failure.is_none()
    }
}

pub struct Reloader {
    path: PathBuf,
    shared: Arc<Shared>,
    metrics: Option<Arc<Metrics>>,
    /// Held for the whole of a reload: reloads never interleave.
    current: Mutex<Current>,
    /// What the ACME service orders, from the configuration in force.
    acme: watch::Sender<Option<Arc<acme::Plan>>>,
}

impl Reloader {
    pub fn new(
        path: &Path,
        config: Config,
        default_cert: CertFiles,
        shared: Arc<Shared>,
        metrics: Option<Arc<Metrics>>,
    ) -> Arc<Reloader> {
        let files = Current::cert_files(&config, &default_cert);
        let logins = Current::login_files(&config);
        let (acme, _) = watch::channel(acme::Plan::of(&config).map(Arc::new));
        Arc::new(Reloader {
            acme,
            path: path.to_path_buf(),
            shared,
            metrics,
            current: Mutex::new(Current {
                config,
                default_cert,
                files,
                logins,
                config_failed: false,
                cert_failure: None,
                login_failure: None,
            }),
        })
    }

    /// The ACME plan of the configuration in force, updated by each reload.
    pub fn acme_plan(&self) -> watch::Receiver<Option<Arc<acme::Plan>>> {
        self.acme.subscribe()
    }

    /// Reloads the configuration file: a one-line summary, or every problem found.
    pub fn reload(&self) -> Result<String, Vec<Diagnostic>> {
        let mut current = self.current.lock();
        let result = self.try_reload(&mut current);
        current.config_failed = result.is_err();
        report(&result);
        self.record(&current, result.is_ok());
        result
    }

    /// Counts a reload's result; `gateway_config_last_reload_successful` is 1 only while
    /// no failure is pending, whichever way it came.
    fn record(&self, current: &Current, ok: bool) {
        if let Some(m) = &self.metrics {
            m.reload_result(ok, ok && current.healthy());
        }
    }

    fn try_reload(&self, current: &mut Current) -> Result<String, Vec<Diagnostic>> {
        let files_before = Current::cert_files(&current.config, &current.default_cert);
        let logins_before = Current::login_files(&current.config);
        let config = config::load(&self.path)?;
        for warning in &config.warnings {
            log::warn!("{warning}");
        }
        let fixed = fixed_changes(&current.config, &config);
        if !fixed.is_empty() {
            return Err(fixed);
        }
        // The reload's answer lists problems against the file, this one among them.
        let default_cert = tls::default_cert(&config, true).map_err(|e| {
            vec![Diagnostic::new(
                &config.file,
                None,
                crate::logging::chain(&e),
            )]
        })?;
        let certs = CertStore::build(&config, Some(&default_cert))?;
        let snapshot = Snapshot::build(
            &config,
            Some(&*self.shared.snapshot.load_full()),
            self.metrics.as_deref(),
            &self.shared.apps,
        );
        if let Some(m) = &self.metrics {
            m.set_cert_expiry(certs.expiry());
        }
        let summary = format!(
            "routes={} route_certificates={}",
            config.routes.len(),
            certs.route_certs()
        );
        self.shared.certs.store(Arc::new(certs));
        self.shared.snapshot.store(Arc::new(snapshot));
        self.shared.reloaded.notify_one();
        let plan = acme::Plan::of(&config).map(Arc::new);
        self.acme.send_if_modified(|old| {
            let changed = *old != plan;
            *old = plan;
            changed
        });
        current.files =
            Current::as_read(&files_before, Current::cert_files(&config, &default_cert));
        current.logins = Current::as_read(&logins_before, Current::login_files(&config));
        current.config_failed = false;
        current.cert_failure = None;
        current.login_failure = None;
        current.config = config;
        current.default_cert = default_cert;
        Ok(summary)
    }
}

/// Logs a reload's result: its summary, or each problem.
fn report(result: &Result<String, Vec<Diagnostic>>) {
    match result {
        Ok(summary) => info!("event=reload result=success {summary}"),
        Err(errors) => {
            for e in errors {
                warn!("event=reload result=failure error=\"{e}\"");
            }
        }
    }
}

/// Reloads on SIGHUP and checks certificate and login files every `CERT_CHECK_EVERY`.
pub struct ReloadService {
    pub reloader: Arc<Reloader>,
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                warn!("event=sighup_unavailable error={e}");
                None
            }
        };
        let mut tick = tokio::time::interval(CERT_CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let reloader = self.reloader.clone();
            tokio::select! {
                Some(()) = async { hup.as_mut()?.recv().await } => {
                    info!("event=sighup");
                    let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
                }
                _ = tick.tick() => {
                    let _ = tokio::task::spawn_blocking(move || reloader.check_files()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
