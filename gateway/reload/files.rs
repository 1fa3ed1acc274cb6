//! The files a configuration names, watched every `CERT_CHECK_EVERY`: certificate files
//! (certbot's renewals, a certificate another replica ordered) are picked up on their
//! own; a changed htpasswd or `api_keys` file reloads the whole configuration.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use log::{info, warn};

use super::{report, Current, Reloader};
use crate::config::{CertFiles, Config};
use crate::tls::CertStore;

/// What identifies one version of a file on disk (symlinks followed, as certbot's
/// `live/` links are).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fingerprint {
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

impl Current {
    /// The fingerprints to keep for files read by a reload: `before` was taken before
    /// the read, `after` once done. A file replaced meanwhile keeps its older
    /// fingerprint, so the next check finds it changed and loads it (a key revoked
    /// during a reload is not missed).
    pub(super) fn as_read(before: &[Fingerprint], after: Vec<Fingerprint>) -> Vec<Fingerprint> {
        after
            .into_iter()
            .map(|now| {
                before
                    .iter()
                    .find(|then| then.path == now.path && **then != now)
                    .cloned()
                    .unwrap_or(now)
            })
            .collect()
    }

    pub(super) fn cert_files(config: &Config, default_cert: &CertFiles) -> Vec<Fingerprint> {
        std::iter::once(default_cert)
            .chain(config.routes.iter().filter_map(|r| r.tls.as_ref()))
            .flat_map(|f| [fingerprint(&f.cert), fingerprint(&f.key)])
            .collect()
    }

    pub(super) fn login_files(config: &Config) -> Vec<Fingerprint> {
        config
            .login_files()
            .iter()
            .map(|p| fingerprint(p))
            .collect()
    }
}

impl Reloader {
    /// Applies files of the configuration in force that changed on disk: certificates
    /// (certbot renewals) are reloaded on their own; a changed htpasswd file (users added
    /// or removed) or `api_keys` file (keys added or revoked) reloads the whole
    /// configuration, which reads it. A file caught half-written fails to load; until one
    /// loads, the old certificates and users stay in force.
    ///
    /// A pick-up that fails is a failed reload as the metrics count it
    /// (`gateway_config_reloads_total`, `gateway_config_last_reload_successful` 0, the
    /// alert), since the next start would refuse the file. It is tried again at every
    /// check; each broken version of the files is logged once, and one failure is
    /// counted until they load again, which is counted as a successful reload.
    /// Certificate pick-ups that end no failure (a renewal) are not counted: ACME's are
    /// counted as orders.
    pub fn check_files(&self) {
        let mut current = self.current.lock();
        self.check_certificates(&mut current);
        let logins = Current::login_files(&current.config);
        if logins == current.logins {
            if current.login_failure.take().is_some() {
                self.record(&current, true);
            }
            return;
        }
        let first = current.login_failure.as_ref() != Some(&logins);
        if first {
            info!("event=login_files_changed");
        }
        let result = self.try_reload(&mut current);
        if result.is_ok() || first {
            report(&result);
        }
        match result {
            Ok(_) => self.record(&current, true),
            Err(_) if first => {
                let episode = current.login_failure.replace(logins).is_none();
                if episode {
                    self.record(&current, false);
                }
            }
            Err(_) => {}
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
            // Back to the files in force (a backup put back): nothing failed any more.
            if current.cert_failure.take().is_some() {
                self.record(current, true);
            }
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
                if current.cert_failure.take().is_some() {
                    self.record(current, true);
                }
            }
            Err(errors) if current.cert_failure.as_ref() != Some(&files) => {
                for e in errors {
                    warn!("event=certificates_reload_failed error=\"{e}\" note=\"old certificates still served; tried again every 5 s\"");
                }
                // One failure counted until the certificates load again: an ACME
                // renewal stored meanwhile is another version, logged, not counted.
                if current.cert_failure.replace(files).is_none() {
                    self.record(current, false);
                }
            }
            Err(_) => {}
        }
    }
}
