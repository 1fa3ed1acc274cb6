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
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use log::{info, warn};
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::watch;

use crate::acme;
use crate::config::{self, CertFiles, Config, Diagnostic};
use crate::metrics::Metrics;
use crate::state::{Shared, Snapshot};
use crate::tls::{self, CertStore};

/// How often certificate, htpasswd and `api_keys` files are checked for replacement: a
/// revoked key is refused within this and a reload.
pub const CERT_CHECK_EVERY: Duration = Duration::from_secs(5);

/// What identifies one version of a file on disk (symlinks followed, as certbot's
/// `live/` links are).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn fingerprint(path: &Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok();
    Fingerprint {
        path: path.to_path_buf(),
        len: meta.as_ref().map_or(0, |m| m.len()),
        modified: meta.as_ref().and_then(|m| m.modified().ok()),
        inode: meta.as_ref().map_or(0, |m| m.ino()),
    }
}

/// The configuration in force and the certificate and login files it was loaded from.
struct Current {
    config: Config,
    default_cert: CertFiles,
    files: Vec<Fingerprint>,
    /// The htpasswd and `api_keys` files.
    logins: Vec<Fingerprint>,
}

impl Current {
    fn cert_files(config: &Config, default_cert: &CertFiles) -> Vec<Fingerprint> {
        std::iter::once(default_cert)
            .chain(config.routes.iter().filter_map(|r| r.tls.as_ref()))
            .flat_map(|f| [fingerprint(&f.cert), fingerprint(&f.key)])
            .collect()
    }

    fn login_files(config: &Config) -> Vec<Fingerprint> {
        config
            .login_files()
            .iter()
            .map(|p| fingerprint(p))
            .collect()
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
            }),
        })
    }

    /// The ACME plan of the configuration in force, updated by each reload.
    pub fn acme_plan(&self) -> watch::Receiver<Option<Arc<acme::Plan>>> {
        self.acme.subscribe()
    }

    /// Reloads the configuration file: a one-line summary, or every problem found.
    pub fn reload(&self) -> Result<String, Vec<Diagnostic>> {
        let result = self.try_reload();
        match &result {
            Ok(summary) => info!("event=reload result=success {summary}"),
            Err(errors) => {
                for e in errors {
                    warn!("event=reload result=failure error=\"{e}\"");
                }
            }
        }
        if let Some(m) = &self.metrics {
            m.reload_result(result.is_ok());
        }
        result
    }

    fn try_reload(&self) -> Result<String, Vec<Diagnostic>> {
        let mut current = self.current.lock();
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
        current.files = Current::cert_files(&config, &default_cert);
        current.logins = Current::login_files(&config);
        current.config = config;
        current.default_cert = default_cert;
        Ok(summary)
    }

    /// Applies files of the configuration in force that changed on disk: certificates
    /// (certbot renewals) are reloaded on their own; a changed htpasswd file (users added
    /// or removed) or `api_keys` file (keys added or revoked) reloads the whole
    /// configuration, which reads it. A file caught
    /// half-written fails to load and is tried again on the next check; until then the
    /// old certificates and users stay in force.
    pub fn check_files(&self) {
        let logins_changed = {
            let mut current = self.current.lock();
            self.check_certificates(&mut current);
            Current::login_files(&current.config) != current.logins
        };
        if logins_changed {
            info!("event=login_files_changed");
            let _ = self.reload();
        }
    }

    /// Loads every certificate again, changed on disk or not (a certificate the ACME
    /// service has just stored: a file's size, time and inode may look unchanged).
    pub fn reload_certificates(&self) {
        let mut current = self.current.lock();
        current.files.clear();
        self.check_certificates(&mut current);
    }

    fn check_certificates(&self, current: &mut Current) {
        let files = Current::cert_files(&current.config, &current.default_cert);
        if files == current.files {
            return;
        }
        match CertStore::build(&current.config, Some(&current.default_cert)) {
            Ok(certs) => {
                if let Some(m) = &self.metrics {
                    m.set_cert_expiry(certs.expiry());
                }
                self.shared.certs.store(Arc::new(certs));
                current.files = files;
                info!("event=certificates_reloaded reason=files_changed");
            }
            Err(errors) => {
                for e in errors {
                    warn!("event=certificates_reload_failed error=\"{e}\" note=\"old certificates still served; retrying\"");
                }
            }
        }
    }
}

/// Settings that only a restart or a binary upgrade can change.
fn fixed_changes(old: &Config, new: &Config) -> Vec<Diagnostic> {
    let mut changed = Vec::new();
    let mut check = |key: &str, differs: bool| {
        if differs {
            changed.push(Diagnostic::new(
                &new.file,
                None,
                format!(
                    "{key} changed: it cannot change on reload; nothing was reloaded. \
                     Revert it, or apply it with a binary upgrade (`gateway run --upgrade`, see docs/operations.md)"
                ),
            ));
        }
    };
    check("listen.https", old.listen.https != new.listen.https);
    check("listen.http", old.listen.http != new.listen.http);
    check(
        "listen.http_mode",
        old.listen.http_mode != new.listen.http_mode,
    );
    check("listen.metrics", old.listen.metrics != new.listen.metrics);
    check("threads", old.threads != new.threads);
    check(
        "tls.min_version",
        old.tls.min_version != new.tls.min_version,
    );
    check("access_log", old.access_log != new.access_log);
    // Announced to HTTP/2 clients in the connection's SETTINGS, fixed at start.
    check(
        "limits.max_header_bytes",
        old.head_limits.max_header_bytes != new.head_limits.max_header_bytes,
    );
    check(
        "shutdown_timeout",
        old.shutdown_timeout != new.shutdown_timeout,
    );
    check("upgrade_grace", old.upgrade_grace != new.upgrade_grace);
    // The default socket follows the HTTPS port, already reported above.
    let https_same = old.listen.https == new.listen.https;
    check(
        "upgrade_sock",
        https_same && old.upgrade_sock != new.upgrade_sock,
    );
    changed
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every setting a reload refuses is in the lists of configuration.md and
    /// operations.md, which tell the operator what needs a restart.
    #[test]
    fn the_docs_list_every_setting_a_reload_refuses() {
        let parse = |text: &str| {
            crate::config::parse(Path::new("routes.yaml"), text)
                .unwrap_or_else(|e| panic!("{}", crate::config::render(&e)))
        };
        let old = parse("routes: []\n");
        let new = parse(
            "listen: { https: 1, http: 2, metrics: 3, http_mode: proxy }\nthreads: 3\n\
             tls: { min_version: \"1.3\" }\naccess_log: off\nlimits: { max_header_bytes: 8K }\n\
             shutdown_timeout: 5s\nupgrade_grace: 5s\nroutes: []\n",
        );
        let mut other_sock = new.clone();
        other_sock.listen.https = old.listen.https;
        other_sock.upgrade_sock = "/elsewhere.sock".into();
        let keys: Vec<String> = super::fixed_changes(&old, &new)
            .into_iter()
            .chain(super::fixed_changes(&old, &other_sock))
            .filter_map(|d| d.message.split(" changed").next().map(str::to_string))
            .collect();
        assert!(keys.len() >= 10, "{keys:?}");
        let configuration = include_str!("../docs/configuration.md");
        let operations = include_str!("../docs/operations.md");
        let listed = |doc: &str, key: &str| {
            let shown = format!("`{key}`");
            doc.contains(&shown) || (key.starts_with("listen.") && doc.contains("`listen.*`"))
        };
        let reload_rule = configuration
            .split("A reload (SIGHUP")
            .nth(1)
            .and_then(|t| t.split("\n\n").next())
            .unwrap_or_default();
        let reload_list = operations
            .split("Reload cannot change")
            .nth(1)
            .and_then(|t| t.split("\n\n").next())
            .unwrap_or_default();
        for key in &keys {
            assert!(
                listed(reload_rule, key),
                "configuration.md's reload rule lacks {key}"
            );
            assert!(
                listed(reload_list, key),
                "operations.md's reload list lacks {key}"
            );
        }
    }
}
