//! The shared limits store (`limits_store`): rate-limit buckets and failed-login counts
//! kept in Redis (or Valkey), so that every gateway replica draws from the same ones.
//!
//! Each decision is one Lua script run atomically in one round trip, called by its SHA
//! (`EVALSHA`) and sent whole (`EVAL`) only when the server does not know it (after a
//! restart). Keys expire on their own when idle. One multiplexed connection per
//! process carries every call (redis-rs's `ConnectionManager`, which reconnects after a
//! loss); a call gets `limits_store.timeout`, and a failure puts the store in backoff
//! (`breaker`) so that requests stop waiting on a dead server. What a request gets
//! meanwhile is `on_error`'s business, decided by the callers (`limits`, `auth`).

mod breaker;
mod scripts;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, IntoConnectionInfo, ServerErrorKind, Value};

use crate::config::{LimitsStoreSettings, OnStoreError};
use crate::metrics::{Metrics, StoreError, StoreErrors};
use breaker::{Attempt, Breaker};

/// The first bytes of every key, so the gateway's keys are easy to find and never mix
/// with another program's in a shared database.
pub const KEY_PREFIX: &str = "gateway:";

/// A script and its SHA-1, computed once.
struct Script {
    source: &'static str,
    sha: String,
}

impl Script {
    fn new(source: &'static str) -> Script {
        Script {
            source,
            sha: redis::Script::new(source).get_hash().to_string(),
        }
    }
}

/// A GCRA step's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Allowed; `remaining` requests left, full again in `full_in`.
    Allowed { remaining: u32, full_in: Duration },
    /// Refused; one request passes again after `wait`.
    Limited { wait: Duration },
}

pub struct LimitsStore {
    /// What it was built from; compared on reload, never read per request.
    settings: LimitsStoreSettings,
    timeout: Duration,
    on_error: OnStoreError,
    /// The URL without its credentials, for the log.
    shown: Box<str>,
    client: redis::Client,
    /// Made on the first call, inside the runtime that runs it (the manager spawns its
    /// connection's task there); dropped when a probe fails, so the next probe starts
    /// afresh (see `failed`).
    connection: ArcSwapOption<ConnectionManager>,
    breaker: Breaker,
    errors: Option<StoreErrors>,
    gcra: Script,
    logins_blocked: Script,
    login_failed: Script,
}

impl std::fmt::Debug for LimitsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitsStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The settings could not make a client (the URL was checked when the file was read,
/// so this is not expected).
#[derive(Debug, thiserror::Error)]
#[error("limits_store.redis {store}")]
pub struct SetupError {
    store: String,
    #[source]
    source: redis::RedisError,
}

impl LimitsStore {
    /// The store of `settings` (validated by `config`); nothing is connected yet.
    pub fn new(
        settings: &LimitsStoreSettings,
        metrics: Option<&Metrics>,
    ) -> Result<LimitsStore, SetupError> {
        let fail = |source| SetupError {
            store: settings.shown.clone(),
            source,
        };
        let mut info = settings.url.as_str().into_connection_info().map_err(fail)?;
        if let Some(password) = &settings.password {
            let redis = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(redis);
        }
        Ok(LimitsStore {
            settings: settings.clone(),
            timeout: settings.timeout,
            on_error: settings.on_error,
            shown: settings.shown.as_str().into(),
            client: redis::Client::open(info).map_err(fail)?,
            connection: ArcSwapOption::empty(),
            breaker: Breaker::default(),
            errors: metrics.map(Metrics::store_errors),
            gcra: Script::new(scripts::GCRA),
            logins_blocked: Script::new(scripts::LOGINS_BLOCKED),
            login_failed: Script::new(scripts::LOGIN_FAILED),
        })
    }

    /// What it was built from (a reload keeps it, and its connection, while unchanged).
    pub fn settings(&self) -> &LimitsStoreSettings {
        &self.settings
    }

    pub fn on_error(&self) -> OnStoreError {
        self.on_error
    }

    /// One request against the GCRA bucket `key`: one request comes back every
    /// `interval`, up to `burst`.
    pub async fn gcra(
        &self,
        key: &[u8],
        interval: Duration,
        burst: u32,
    ) -> Result<Bucket, StoreError> {
        let interval_us = (interval.as_micros() as u64).max(1);
        let reply = self
            .call(&self.gcra, key, [interval_us, u64::from(burst)])
            .await?;
        let (allowed, remaining, us): (i64, i64, i64) =
            redis::from_redis_value(reply).map_err(|_| self.bad_reply())?;
        let time = Duration::from_micros(us.max(0) as u64);
        Ok(match allowed {
            1 => Bucket::Allowed {
                remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
                full_in: time,
            },
            _ => Bucket::Limited { wait: time },
        })
    }

    /// How long the client counted at `key` stays blocked, when it has `limit` failed
    /// logins or more in its window.
    pub async fn logins_blocked(
        &self,
        key: &[u8],
        limit: u32,
    ) -> Result<Option<Duration>, StoreError> {
        let reply = self
            .call(&self.logins_blocked, key, [u64::from(limit), 0])
            .await?;
        let left: i64 = redis::from_redis_value(reply).map_err(|_| self.bad_reply())?;
        Ok((left >= 0).then(|| Duration::from_millis(left as u64)))
    }

    /// Counts one failed login at `key`; its window of `per` opens with the first.
    pub async fn login_failed(&self, key: &[u8], per: Duration) -> Result<(), StoreError> {
        let per_ms = (per.as_millis() as u64).max(1);
        self.call(&self.login_failed, key, [per_ms, 0]).await?;
        Ok(())
    }

    /// Runs `script` on `key` with `args` within the timeout. Every failure is counted
    /// and logged (once per outage) here; callers only pick the fallback.
    async fn call(&self, script: &Script, key: &[u8], args: [u64; 2]) -> Result<Value, StoreError> {
        let attempt = self.breaker.may_try();
        if attempt == Attempt::Skip {
            self.count(StoreError::Backoff);
            return Err(StoreError::Backoff);
        }
        let Some(mut connection) = self.connection() else {
            self.failed(
                attempt,
                StoreError::Connection,
                "no connection could be set up",
            );
            return Err(StoreError::Connection);
        };
        let run = eval(&mut connection, script, key, args);
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(value)) => {
                if let Some(probes) = self.breaker.answered() {
                    log::info!(
                        "event=limits_store_up store={} failed_probes={probes}",
                        self.shown
                    );
                }
                Ok(value)
            }
            Ok(Err(e)) => {
                let kind = match e.kind() {
                    ErrorKind::Server(_) | ErrorKind::Parse | ErrorKind::UnexpectedReturnType => {
                        StoreError::Response
                    }
                    _ if e.is_timeout() => StoreError::Timeout,
                    _ => StoreError::Connection,
                };
                self.failed(attempt, kind, &e.to_string());
                Err(kind)
            }
            Err(_) => {
                self.failed(attempt, StoreError::Timeout, "no answer in time");
                Err(StoreError::Timeout)
            }
        }
    }

    /// The connection, made now if there is none.
    fn connection(&self) -> Option<ConnectionManager> {
        if let Some(manager) = &*self.connection.load() {
            return Some(ConnectionManager::clone(manager));
        }
        let timeout = self.timeout;
        let config = ConnectionManagerConfig::new()
            // Calls are timed out by `call`; connecting gets longer (a TLS handshake),
            // and the breaker spaces the attempts.
            .set_connection_timeout(Some(Duration::from_secs(1).max(timeout)))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
            .set_pipeline_buffer_size(1024);
        match ConnectionManager::new_lazy_with_config(self.client.clone(), config) {
            Ok(manager) => {
                // Two callers may race here; the loser's manager is dropped unused.
                let new = Arc::new(manager);
                let before = self
                    .connection
                    .compare_and_swap(&None::<Arc<_>>, Some(new.clone()));
                Some(ConnectionManager::clone(before.as_ref().unwrap_or(&new)))
            }
            Err(e) => {
                log::warn!(
                    "event=limits_store_unusable store={} error=\"{e}\"",
                    self.shown
                );
                None
            }
        }
    }

    fn failed(&self, attempt: Attempt, kind: StoreError, error: &str) {
        self.count(kind);
        // The manager reconnects by itself after an I/O error only: a refused password
        // or a timed-out connect would stay its answer for good. A failed probe starts
        // the next one on a new connection.
        if attempt == Attempt::Probe {
            self.connection.store(None);
        }
        if self.breaker.failed(attempt) {
            log::warn!(
                "event=limits_store_down store={} kind={} error=\"{}\" on_error={} note=\"one request at a time probes it again\"",
                self.shown,
                kind.as_str(),
                error.replace('"', "'"),
                self.on_error.as_str()
            );
        }
    }

    fn bad_reply(&self) -> StoreError {
        self.count(StoreError::Response);
        StoreError::Response
    }

    fn count(&self, kind: StoreError) {
        if let Some(errors) = &self.errors {
            errors.inc(kind);
        }
    }
}

/// `EVALSHA`, then `EVAL` when the server has lost the script (a restart, `SCRIPT
/// FLUSH`); `EVAL` caches it again for the next calls.
async fn eval(
    connection: &mut ConnectionManager,
    script: &Script,
    key: &[u8],
    args: [u64; 2],
) -> redis::RedisResult<Value> {
    let call = |command: &str, body: &str| {
        let mut cmd = redis::cmd(command);
        cmd.arg(body).arg(1).arg(key).arg(args[0]).arg(args[1]);
        cmd
    };
    let by_sha = call("EVALSHA", &script.sha).query_async(connection).await;
    match by_sha {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            call("EVAL", script.source).query_async(connection).await
        }
        other => other,
    }
}

/// Whether two optional stores are the same one (a reload keeps a limiter or a failure
/// counter only with the store it was built for).
pub fn same(a: Option<&Arc<LimitsStore>>, b: Option<&Arc<LimitsStore>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    }
}

/// The key of a rate bucket: `gateway:rate:ROUTE:INTERVAL_US:BURST:` then the client
/// (see `client_key`). The settings are part of it, so a reload that changes a route's
/// rate starts its clients on new buckets (as the local store does) and the old keys
/// expire on their own.
pub fn rate_prefix(route: &str, interval: Duration, burst: u32) -> Vec<u8> {
    format!(
        "{KEY_PREFIX}rate:{route}:{}:{burst}:",
        (interval.as_micros() as u64).max(1)
    )
    .into_bytes()
}

/// The prefix of an API key's own bucket: `gateway:keyrate:NAME:INTERVAL_US:BURST:`
/// (key names are letters, digits, `-`, `_` and `.`: never a route's prefix).
pub fn key_rate_prefix(name: &str, interval: Duration, burst: u32) -> Vec<u8> {
    format!(
        "{KEY_PREFIX}keyrate:{name}:{}:{burst}:",
        (interval.as_micros() as u64).max(1)
    )
    .into_bytes()
}

/// The key of a failed-login count: `gateway:logins:ROUTE:LIMIT:PER_MS:` then the client.
pub fn logins_prefix(route: &str, limit: u32, per: Duration) -> Vec<u8> {
    format!("{KEY_PREFIX}logins:{route}:{limit}:{}:", per.as_millis()).into_bytes()
}

/// `prefix` followed by the client: `ip:ADDRESS`, or `h:` and the first 16 bytes of the
/// SHA-256 of a header value in hex (an API key never lands in Redis as written).
pub fn client_key(prefix: &[u8], client: std::net::IpAddr, header: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut key = Vec::with_capacity(prefix.len() + 40);
    key.extend_from_slice(prefix);
    match header {
        Some(value) => {
            key.extend_from_slice(b"h:");
            for b in &openssl::sha::sha256(value)[..16] {
                let _ = write!(key, "{b:02x}");
            }
        }
        None => {
            let _ = write!(key, "ip:{client}");
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn keys_name_route_settings_and_client() {
        let prefix = rate_prefix("chat", Duration::from_millis(50), 40);
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(
            client_key(&prefix, ip, None),
            b"gateway:rate:chat:50000:40:ip:192.0.2.7".to_vec()
        );
        let hashed = client_key(&prefix, ip, Some(b"secret-api-key"));
        let text = String::from_utf8(hashed).unwrap();
        assert!(text.starts_with("gateway:rate:chat:50000:40:h:"), "{text}");
        assert_eq!(text.len(), "gateway:rate:chat:50000:40:h:".len() + 32);
        assert!(!text.contains("secret"));
        assert_eq!(
            logins_prefix("admin", 10, Duration::from_secs(60)),
            b"gateway:logins:admin:10:60000:".to_vec()
        );
    }
}
