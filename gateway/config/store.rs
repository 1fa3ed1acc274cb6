//! The `limits_store` block: a Redis (or Valkey) server that several gateway replicas
//! share their rate-limit buckets and failed-login counts through. Checked without
//! contacting the server: the URL's form, the per-call timeout, and `on_error`.

use std::time::Duration;

use redis::IntoConnectionInfo;
use serde_yaml::Value;

use super::checker::Checker;
use super::units::{self, shown};

/// The environment variable giving the password when the URL has none.
pub const PASSWORD_ENV: &str = "GATEWAY_REDIS_PASSWORD";
/// Long enough for a Redis on another host of the same network, short enough that a
/// slow one costs a request little.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(20);
/// Longest per-call timeout accepted: beyond it a slow Redis would hold every limited
/// request for seconds, which is what `on_error` exists to avoid.
const MAX_TIMEOUT: Duration = Duration::from_secs(5);

const KEYS: &[&str] = &["redis", "timeout", "on_error"];
const EXAMPLE: &str = "{ redis: redis://127.0.0.1:6379/0, timeout: 20ms, on_error: local }";

/// `limits_store`: a Redis (or Valkey) server shared by the gateway's replicas.
#[derive(Clone, PartialEq, Eq)]
pub struct LimitsStoreSettings {
    /// The URL as written; it may hold a password, so it is never shown (see `shown`).
    pub url: String,
    /// `url` with its credentials hidden, for logs and `gateway check`.
    pub shown: String,
    /// From `GATEWAY_REDIS_PASSWORD` when the URL has none.
    pub password: Option<String>,
    /// Longest wait for one call; past it the request follows `on_error`.
    pub timeout: Duration,
    pub on_error: OnStoreError,
}

impl std::fmt::Debug for LimitsStoreSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitsStoreSettings")
            .field("url", &self.shown)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .field("on_error", &self.on_error)
            .finish()
    }
}

/// What a limited request gets when the shared store does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    /// This replica's own buckets and counts decide (the limit per replica).
    Local,
    /// The request passes unlimited.
    Allow,
    /// The request is refused with 429, as if over its limit.
    Deny,
}

impl OnStoreError {
    pub fn as_str(self) -> &'static str {
        match self {
            OnStoreError::Local => "local",
            OnStoreError::Allow => "allow",
            OnStoreError::Deny => "deny",
        }
    }
}

/// The `limits_store` block; `None` when absent, `off`, or wrong (reported).
pub(super) fn settings(c: &mut Checker, v: Option<&Value>) -> Option<LimitsStoreSettings> {
    let v = v.filter(|v| !v.is_null() && !units::is_off(v))?;
    let (map, known) = c.keyed("limits_store", v, KEYS, EXAMPLE)?;
    let get = |key: &str| map.get(key).filter(|v| !v.is_null());
    let url = match get("redis") {
        Some(v) => c.value("limits_store.redis", Some(v), redis_url),
        None => {
            c.error(
                "limits_store",
                "missing `redis`; expected e.g. redis: redis://127.0.0.1:6379/0",
            );
            None
        }
    };
    let timeout = c
        .value("limits_store.timeout", get("timeout"), timeout)
        .unwrap_or(DEFAULT_TIMEOUT);
    let on_error = c
        .value("limits_store.on_error", get("on_error"), on_error)
        .unwrap_or(OnStoreError::Local);
    let (url, url_password) = url?;
    let password = match url_password {
        true => None,
        false => std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()),
    };
    known.then(|| LimitsStoreSettings {
        shown: redacted(&url),
        url,
        password,
        timeout,
        on_error,
    })
}

/// The URL, and whether it carries a password itself.
fn redis_url(v: &Value) -> Result<(String, bool), String> {
    let text = v.as_str().map(str::trim).unwrap_or_default();
    let shown_url = redacted(text);
    let err = || {
        format!(
            "invalid Redis URL {shown_url:?}; expected redis://HOST:PORT/DB, rediss://HOST:PORT/DB (TLS) or unix:///PATH/redis.sock"
        )
    };
    if text.is_empty() {
        return Err(format!(
            "invalid Redis URL {}; expected e.g. redis://127.0.0.1:6379/0",
            shown(v)
        ));
    }
    if redis::parse_redis_url(text).is_none() {
        return Err(err());
    }
    let info = text.into_connection_info().map_err(|_| err())?;
    Ok((text.to_string(), info.redis_settings().password().is_some()))
}

fn timeout(v: &Value) -> Result<Duration, String> {
    let d = units::required_duration(v)?;
    if d < Duration::from_millis(1) || d > MAX_TIMEOUT {
        return Err(format!(
            "invalid timeout {}; expected from 1ms to 5s (e.g. 20ms)",
            shown(v)
        ));
    }
    Ok(d)
}

fn on_error(v: &Value) -> Result<OnStoreError, String> {
    match v.as_str().map(str::trim) {
        Some("local") => Ok(OnStoreError::Local),
        Some("allow") => Ok(OnStoreError::Allow),
        Some("deny") => Ok(OnStoreError::Deny),
        _ => Err(format!(
            "invalid on_error {}; expected local, allow or deny",
            shown(v)
        )),
    }
}

/// The URL with its credentials hidden: `redis://***@host:6379/0`, and a `pass=` query
/// parameter (unix sockets) as `pass=***`. Safe to log whatever was written.
pub fn redacted(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    // The authority ends at the first `/`, `?` or `#`; credentials end at its last `@`.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let rest = match rest[..end].rfind('@') {
        Some(at) => format!("***{}", &rest[at..]),
        None => rest.to_string(),
    };
    let rest = match rest.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k == "pass" || k == "password" => format!("{k}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => rest,
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{rest}"),
        None => rest,
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn credentials_never_shown() {
        assert_eq!(
            redacted("redis://:s3cret@10.0.0.5:6379/0"),
            "redis://***@10.0.0.5:6379/0"
        );
        assert_eq!(
            redacted("rediss://app:s3cret@redis.internal/1"),
            "rediss://***@redis.internal/1"
        );
        assert_eq!(
            redacted("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(
            redacted("unix:///run/redis.sock?db=1&pass=s3cret"),
            "unix:///run/redis.sock?db=1&pass=***"
        );
        assert_eq!(redacted("a:b@c"), "***@c");
    }
}
