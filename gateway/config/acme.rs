//! The `acme` block and `tls: acme` routes: where certificates are ordered and kept.
//! Checked without contacting the server: the e-mail's form, the directory URL, the
//! extra root's file, and that `storage` is (or can be made) a writable directory.

use std::path::Path;
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::checker::Checker;
use super::files;
use super::model::{AcmeSettings, HostPattern, Listen, Route, StateDir};
use super::units::{self, shown};

pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
/// `acme.storage` when not set: this directory of the state directory.
pub const DEFAULT_STORAGE: &str = "acme";
pub const DEFAULT_FIRST_RETRY: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_RETRY: Duration = Duration::from_secs(4 * 3600);

const KEYS: &[&str] = &[
    "email",
    "directory",
    "storage",
    "ca_bundle",
    "first_retry",
    "max_retry",
];

/// The `acme` block, with defaults when it is absent but a route says `tls: acme`;
/// `None` when neither. Fills in each `tls: acme` route's certificate files. A block
/// without `tls: acme` routes still serves the challenge answers other replicas sharing
/// its storage write.
pub(super) fn settings(
    c: &mut Checker,
    v: Option<&Value>,
    listen: &Listen,
    state: &StateDir,
    routes: &mut [Route],
) -> Option<AcmeSettings> {
    let used = routes.iter().any(|r| r.acme);
    let empty = Mapping::new();
    let map = match v {
        None | Some(Value::Null) => &empty,
        Some(v @ Value::Mapping(_)) => c.keyed("acme", v, KEYS, "{ email: ops@example.com }")?.0,
        Some(v) => {
            c.error(
                "acme",
                format!(
                    "expected a mapping like {{ email: ops@example.com, directory: staging }}, found {}",
                    shown(v)
                ),
            );
            return None;
        }
    };
    let get = |key: &str| map.get(key).filter(|v| !v.is_null());
    let email = c.value("acme.email", get("email"), email);
    let directory = match get("directory") {
        None => Some(LETS_ENCRYPT.to_string()),
        v => c.value("acme.directory", v, directory),
    };
    let storage = c.file_path("acme.storage", get("storage"));
    let ca_bundle = c.file_path("acme.ca_bundle", get("ca_bundle"));
    let (first_retry, max_retry) = retries(c, get("first_retry"), get("max_retry"));
    if let Some(bundle) = &ca_bundle {
        if let Err(e) = check_bundle(bundle) {
            c.error("acme.ca_bundle", e);
        }
    }
    if !used && v.is_none() {
        return None;
    }
    let what = "the ACME account and certificates";
    let storage = match storage {
        Some(storage) => {
            if let Err(e) = files::writable_dir(&storage) {
                c.error(
                    "acme.storage",
                    format!("{e}; the gateway keeps {what} there"),
                );
            }
            storage
        }
        None => {
            let first = routes.iter().position(|r| r.acme).unwrap_or(0);
            let at = match v {
                Some(_) => "acme".to_string(),
                None => format!("routes[{first}].tls"),
            };
            files::check_state_dir(c, state, Some(DEFAULT_STORAGE), &at, what);
            state.path.join(DEFAULT_STORAGE)
        }
    };
    if used && listen.http.is_none() {
        let at = routes.iter().position(|r| r.acme).unwrap_or(0);
        c.error(
            &format!("routes[{at}].tls"),
            "`tls: acme` answers the ACME server's HTTP-01 challenges on the plain-HTTP listener: set `listen.http` (port 80 for a public ACME server)",
        );
    }
    let directory = directory?;
    let settings = AcmeSettings {
        email,
        dir: storage.join(directory_key(&directory)),
        directory,
        storage,
        ca_bundle,
        first_retry,
        max_retry,
    };
    fill_cert_files(routes, &settings);
    Some(settings)
}

/// `first_retry` and `max_retry`: the first wait above 0 and not above the longest.
fn retries(c: &mut Checker, first: Option<&Value>, max: Option<&Value>) -> (Duration, Duration) {
    let first_retry = c
        .value("acme.first_retry", first, units::required_duration)
        .unwrap_or(DEFAULT_FIRST_RETRY);
    let max_retry = c
        .value("acme.max_retry", max, units::required_duration)
        .unwrap_or(DEFAULT_MAX_RETRY);
    if first_retry.is_zero() || first_retry > max_retry {
        c.error(
            "acme.first_retry",
            "expected a wait above 0 and not above `max_retry`",
        );
    }
    (first_retry, max_retry)
}

/// Each `tls: acme` route's certificate files: in its host's directory of the storage.
fn fill_cert_files(routes: &mut [Route], settings: &AcmeSettings) {
    for route in routes.iter_mut().filter(|r| r.acme) {
        let HostPattern::Exact(host) = &route.host else {
            continue; // reported by `route`
        };
        if let Some(files) = &mut route.tls {
            (files.cert, files.key) = AcmeSettings::cert_files(&settings.host_dir(host));
        }
    }
}

/// `tls: acme` on a wildcard host: HTTP-01 cannot prove a wildcard.
pub(super) fn wildcard_error(c: &mut Checker, path: &str, host: &HostPattern) {
    c.error(
        path,
        format!(
            "`tls: acme` needs an exact host name; a certificate for {host} needs the DNS-01 challenge, which the gateway does not answer: give each host its own route, or use certbot's files"
        ),
    );
}

fn email(v: &Value) -> Result<String, String> {
    let Value::String(text) = v else {
        return Err(format!(
            "expected an e-mail address like ops@example.com, found {}",
            shown(v)
        ));
    };
    let text = text.trim();
    let bad_char = |c: char| c.is_whitespace() || c.is_control() || ",:;<>\"".contains(c);
    let valid = match text.split_once('@') {
        Some((user, domain)) => {
            !user.is_empty()
                && domain.contains('.')
                && !domain.contains('@')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !text.chars().any(bad_char)
        }
        None => false,
    };
    match valid {
        true => Ok(text.to_string()),
        false => Err(format!(
            "invalid e-mail address {text:?}; expected one address like ops@example.com"
        )),
    }
}

fn directory(v: &Value) -> Result<String, String> {
    const EXPECTED: &str = "expected `staging`, `production` (Let's Encrypt) or an https:// directory URL like https://acme-v02.api.letsencrypt.org/directory";
    let Value::String(text) = v else {
        return Err(format!("invalid directory {}; {EXPECTED}", shown(v)));
    };
    let text = text.trim();
    match text {
        "staging" => return Ok(LETS_ENCRYPT_STAGING.to_string()),
        "production" => return Ok(LETS_ENCRYPT.to_string()),
        _ => {}
    }
    let uri: http::Uri = text
        .parse()
        .map_err(|_| format!("invalid directory URL {text:?}; {EXPECTED}"))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none_or(str::is_empty) {
        return Err(format!(
            "directory URL {text:?} is not https://; ACME servers are reached over HTTPS only"
        ));
    }
    Ok(text.to_string())
}

/// The storage sub-directory of one ACME directory: its host and port, so accounts and
/// certificates of Let's Encrypt's staging and production never mix.
fn directory_key(url: &str) -> String {
    let authority = url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().to_string()))
        .unwrap_or_default();
    let key: String = authority
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect();
    match key.trim_matches('.') {
        "" => "directory".to_string(),
        k => k.to_string(),
    }
}

/// A PEM file of one or more certificates.
fn check_bundle(path: &Path) -> Result<(), String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    match openssl::x509::X509::stack_from_pem(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(()),
        _ => Err(format!(
            "{} holds no PEM certificate; expected the root that signs the ACME server's HTTPS certificate",
            path.display()
        )),
    }
}
