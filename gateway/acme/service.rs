//! The background service that orders and renews, one host at a time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use instant_acme::{Account, AccountCredentials, Key, NewAccount};
use log::{info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rustls_pki_types::PrivateKeyDer;
use tokio::sync::watch;

use super::challenges::Challenges;
use super::client::{AcmeHttp, ClientError};
use super::order::{self, Failure, ACCOUNT_GONE};
use super::schedule::{backoff, jitter, renew_at};
use super::storage::{self, Stored};
use super::Plan;
use crate::config::AcmeSettings;
use crate::metrics::Metrics;

/// When another replica holds the storage lock, look again after `first_retry`, at most
/// this long.
const LOCKED_RETRY: Duration = Duration::from_secs(30);
/// The longest sleep between looks at the schedule.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

pub struct AcmeService {
    /// The plan of the configuration in force, replaced by each reload.
    pub plan: watch::Receiver<Option<Arc<Plan>>>,
    pub challenges: Arc<Challenges>,
    pub metrics: Option<Arc<Metrics>>,
    /// Installs newly stored certificate files in the live store
    /// (`Reloader::reload_certificates`). Blocking; called off the async threads.
    pub installed: Arc<dyn Fn() + Send + Sync>,
}

/// A host's next order and how many failed in a row before it.
struct Due {
    at: SystemTime,
    failures: u32,
}

/// The state of one `acme` setting: its client, account and hosts.
struct Runner {
    settings: AcmeSettings,
    http: Result<AcmeHttp, ClientError>,
    account: Option<Account>,
    hosts: BTreeMap<String, Due>,
}

#[async_trait]
impl BackgroundService for AcmeService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut plan = self.plan.clone();
        let mut runner: Option<Runner> = None;
        let mut watching = true;
        loop {
            let current = plan.borrow_and_update().clone();
            self.follow(&mut runner, current.as_deref());
            let next = runner.as_ref().and_then(Runner::next);
            let wait = next.as_ref().map(|(_, at)| {
                at.duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
            });
            if let (Some(Duration::ZERO), Some((host, _)), Some(r)) = (wait, next, &mut runner) {
                tokio::select! {
                    _ = r.order(&host, self) => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            }
            // Woken at least hourly: the due times are wall-clock times, which may jump.
            let sleep = wait.unwrap_or(MAX_SLEEP).min(MAX_SLEEP);
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                changed = plan.changed(), if watching => watching = changed.is_ok(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl AcmeService {
    /// Follows a new plan: new settings start afresh, new hosts are scheduled from what
    /// is stored, removed hosts are forgotten.
    fn follow(&self, runner: &mut Option<Runner>, plan: Option<&Plan>) {
        let Some(plan) = plan else {
            self.forget(runner.take());
            return;
        };
        if runner.as_ref().is_none_or(|r| r.settings != plan.settings) {
            self.forget(runner.take());
            if let Some(m) = &self.metrics {
                m.acme_in_use();
            }
            *runner = Some(Runner {
                settings: plan.settings.clone(),
                http: AcmeHttp::new(&plan.settings),
                account: None,
                hosts: BTreeMap::new(),
            });
        }
        let Some(r) = runner else { return };
        let gone: Vec<String> = r
            .hosts
            .keys()
            .filter(|h| !plan.hosts.contains(h))
            .cloned()
            .collect();
        for host in gone {
            r.hosts.remove(&host);
            if let Some(m) = &self.metrics {
                m.acme_forget(&host);
            }
        }
        for host in &plan.hosts {
            if r.hosts.contains_key(host) {
                continue;
            }
            let at = match storage::stored(&r.settings.host_dir(host), host) {
                Some(s) => {
                    let at = renewal(host, &s);
                    info!(
                        "event=acme_certificate host={host} not_after={} renew_at={}",
                        rfc3339(s.not_after),
                        humantime::format_rfc3339_seconds(at)
                    );
                    at
                }
                None => {
                    info!("event=acme_pending host={host} note=\"no certificate stored yet: the default certificate is served until one is issued\"");
                    SystemTime::now()
                }
            };
            self.scheduled(host, at);
            r.hosts.insert(host.clone(), Due { at, failures: 0 });
        }
    }

    /// Drops the series of a runner's hosts (ACME removed, or its settings changed).
    fn forget(&self, runner: Option<Runner>) {
        if let (Some(r), Some(m)) = (runner, &self.metrics) {
            r.hosts.keys().for_each(|host| m.acme_forget(host));
        }
    }

    fn scheduled(&self, host: &str, at: SystemTime) {
        if let Some(m) = &self.metrics {
            let secs = at
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            m.acme_next_renewal(host, secs);
        }
    }

    async fn install(&self) {
        let installed = self.installed.clone();
        let _ = tokio::task::spawn_blocking(move || installed()).await;
    }
}

impl Runner {
    /// The host due first.
    fn next(&self) -> Option<(String, SystemTime)> {
        self.hosts
            .iter()
            .min_by_key(|(_, d)| d.at)
            .map(|(h, d)| (h.clone(), d.at))
    }

    /// Orders `host`'s certificate, unless another replica is ordering or has just done so.
    async fn order(&mut self, host: &str, service: &AcmeService) {
        let dir = self.settings.host_dir(host);
        let lock = match storage::try_lock(&self.settings.dir) {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                info!(
                    "event=acme_wait host={host} reason=\"another gateway holds the storage lock\""
                );
                let wait = self.settings.first_retry.min(LOCKED_RETRY);
                self.reschedule(host, SystemTime::now() + wait, 0, service);
                return;
            }
            Err(e) => {
                let failure = Failure::new(format!("storage {}: {e}", self.settings.dir.display()));
                self.failed(host, &failure, None, service);
                return;
            }
        };
        // Another replica may have renewed it while this one waited.
        let stored = storage::stored(&dir, host).map(|s| (renewal(host, &s), s));
        if let Some((at, s)) = stored.filter(|(at, _)| *at > SystemTime::now()) {
            info!("event=acme_certificate host={host} not_after={} note=\"stored by another gateway\"", rfc3339(s.not_after));
            service.install().await;
            self.reschedule(host, at, 0, service);
            return;
        }
        let started = Instant::now();
        // Only this order's Retry-After counts.
        let _ = self.http.as_ref().map(AcmeHttp::take_retry_after);
        let result = self.order_once(host, service).await;
        drop(lock);
        let took = started.elapsed().as_millis();
        match result {
            Ok(s) => {
                let at = renewal(host, &s);
                info!(
                    "event=acme_order host={host} result=issued not_after={} renew_at={} took_ms={took}",
                    rfc3339(s.not_after),
                    humantime::format_rfc3339_seconds(at)
                );
                // Counted once installed: a new handshake then gets it.
                service.install().await;
                if let Some(m) = &service.metrics {
                    m.acme_order("issued");
                }
                self.reschedule(host, at, 0, service);
            }
            Err(failure) => {
                let retry_after = self.http.as_ref().ok().and_then(AcmeHttp::take_retry_after);
                self.failed(host, &failure, retry_after, service);
            }
        }
    }

    /// The account (created on first use), then the order; a server that forgot the
    /// account (a restarted test server) has it registered again with the same key.
    async fn order_once(&mut self, host: &str, service: &AcmeService) -> Result<Stored, Failure> {
        let dir = self.settings.dir.clone();
        let account = self.account(false).await?;
        match order::order(&account, host, &service.challenges, &dir).await {
            Err(f) if f.problem.as_deref() == Some(ACCOUNT_GONE) => {
                warn!("event=acme_account_gone directory={} note=\"registering the stored key again\"", self.settings.directory);
                let account = self.account(true).await?;
                order::order(&account, host, &service.challenges, &dir).await
            }
            other => other,
        }
    }

    /// The stored account, or a new one; with `again`, the stored key registered anew.
    async fn account(&mut self, again: bool) -> Result<Account, Failure> {
        if let (Some(account), false) = (&self.account, again) {
            return Ok(account.clone());
        }
        let http = self
            .http
            .clone()
            .map_err(|e| Failure::new(crate::logging::chain(&e)))?;
        let dir = &self.settings.dir;
        let stored = storage::load_account(dir).map_err(|e| Failure::new(e.to_string()))?;
        let builder = Account::builder_with_http(Box::new(http));
        let directory = self.settings.directory.clone();
        let (account, credentials) = match stored {
            Some(credentials) if !again => {
                let account = builder.from_credentials(credentials).await?;
                (account, None)
            }
            Some(credentials) => {
                let key = reuse_key(&credentials)?;
                let (account, credentials) = builder.create_from_key(key, directory).await?;
                (account, Some(credentials))
            }
            None => {
                let contact = self.settings.email.as_ref().map(|e| format!("mailto:{e}"));
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let new = NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                };
                let (account, credentials) = builder.create(&new, directory, None).await?;
                info!(
                    "event=acme_account_created directory={} id={}",
                    self.settings.directory,
                    account.id()
                );
                (account, Some(credentials))
            }
        };
        if let Some(credentials) = credentials {
            storage::save_account(dir, &credentials).map_err(|e| Failure::new(e.to_string()))?;
        }
        self.account = Some(account.clone());
        Ok(account)
    }

    fn failed(
        &mut self,
        host: &str,
        failure: &Failure,
        retry_after: Option<Duration>,
        service: &AcmeService,
    ) {
        let failures = self.hosts.get(host).map_or(0, |d| d.failures) + 1;
        let wait = backoff(
            failures,
            self.settings.first_retry,
            self.settings.max_retry,
            retry_after,
        );
        let result = match failure.rate_limited() {
            true => "rate_limited",
            false => "failed",
        };
        warn!(
            "event=acme_order host={host} result={result} error=\"{}\" failures={failures} retry_in_s={} note=\"the current certificate is still served\"",
            failure.message.replace('"', "'"),
            wait.as_secs()
        );
        if let Some(m) = &service.metrics {
            m.acme_order(result);
        }
        self.reschedule(host, SystemTime::now() + wait, failures, service);
    }

    fn reschedule(&mut self, host: &str, at: SystemTime, failures: u32, service: &AcmeService) {
        service.scheduled(host, at);
        if let Some(due) = self.hosts.get_mut(host) {
            *due = Due { at, failures };
        }
    }
}

fn renewal(host: &str, stored: &Stored) -> SystemTime {
    renew_at(stored.not_before, stored.not_after, jitter(host))
}

fn rfc3339(unix: i64) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64))
}

/// The stored account key, for registering it again.
fn reuse_key(credentials: &AccountCredentials) -> Result<(Key, PrivateKeyDer<'static>), Failure> {
    let pkcs8 = credentials.private_key().clone_key();
    let key = Key::from_pkcs8_der(pkcs8.clone_key())?;
    Ok((key, PrivateKeyDer::Pkcs8(pkcs8)))
}
