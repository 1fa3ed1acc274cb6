//! Turns a `RawConfig` into a `Config`, collecting every problem (not just the first),
//! each at the line and column of the value at fault.

use std::collections::HashMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde_yaml::{Mapping, Value};

use super::error::{Diagnostic, Pos};
use super::limits;
use super::model::*;
use super::raw::{RawCert, RawConfig, RawDefaults, RawRoute};
use super::span::Spans;
use super::units::{self, shown};

/// Collects diagnostics, positioned by YAML path.
pub(super) struct Checker<'a> {
    file: &'a Path,
    base: PathBuf,
    spans: &'a Spans,
    errors: Vec<Diagnostic>,
}

impl Checker<'_> {
    pub(super) fn error(&mut self, path: &str, message: impl Display) {
        let pos = self.spans.find(path);
        let text = if path.is_empty() {
            message.to_string()
        } else {
            format!("{path}: {message}")
        };
        self.errors.push(Diagnostic::new(self.file, pos, text));
    }

    /// Parses an optional value; `None` when absent or invalid (the error is recorded).
    pub(super) fn value<T>(
        &mut self,
        path: &str,
        v: Option<&Value>,
        parse: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Option<T> {
        match parse(v?) {
            Ok(t) => Some(t),
            Err(message) => {
                self.error(path, message);
                None
            }
        }
    }

    /// A file path, resolved against the directory of the config file.
    fn file_path(&mut self, path: &str, v: Option<&Value>) -> Option<PathBuf> {
        self.value(path, v, |v| match v {
            Value::String(s) if !s.trim().is_empty() => Ok(s.trim().into()),
            _ => Err(format!("expected a file path, found {}", shown(v))),
        })
        .map(|p: PathBuf| self.base.join(p))
    }

    fn cert_pair(
        &mut self,
        path: &str,
        cert: Option<&Value>,
        key: Option<&Value>,
    ) -> Option<CertFiles> {
        let cert_path = format!("{path}.cert");
        let key_path = format!("{path}.key");
        let (cert_file, key_file) = match (cert, key) {
            (Some(_), None) => {
                self.error(path, "a certificate needs its key: add `key`");
                return None;
            }
            (None, Some(_)) => {
                self.error(path, "a key needs its certificate: add `cert`");
                return None;
            }
            (c, k) => (self.file_path(&cert_path, c), self.file_path(&key_path, k)),
        };
        Some(CertFiles {
            cert: cert_file?,
            key: key_file?,
            pos: self.spans.find(&cert_path),
            key_pos: self.spans.find(&key_path),
            path: cert_path,
        })
    }

    /// Merges a `headers:` mapping into `into`: a value sets the header, null removes it.
    fn headers(&mut self, path: &str, map: &Mapping, into: &mut Vec<(HeaderName, HeaderValue)>) {
        for (key, value) in map {
            let Value::String(key) = key else {
                self.error(path, format!("header name {} is not text", shown(key)));
                continue;
            };
            let at = format!("{path}.{key}");
            let Ok(name) = HeaderName::from_bytes(key.as_bytes()) else {
                self.error(&at, format!("invalid header name {key:?}"));
                continue;
            };
            into.retain(|(n, _)| *n != name);
            let text = match value {
                Value::Null => continue,
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    self.error(
                        &at,
                        format!("expected a header value or null, found {}", shown(other)),
                    );
                    continue;
                }
            };
            match HeaderValue::from_str(&text) {
                Ok(v) => into.push((name, v)),
                Err(_) => self.error(&at, format!("invalid header value {text:?}")),
            }
        }
    }
}

/// The inherited settings every route starts from.
struct Inherited {
    max_body: Option<u64>,
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    headers: Vec<(HeaderName, HeaderValue)>,
    rate_limit: Option<RateLimit>,
}

pub fn validate(file: &Path, raw: RawConfig, spans: &Spans) -> Result<Config, Vec<Diagnostic>> {
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut c = Checker {
        file,
        base,
        spans,
        errors: Vec::new(),
    };

    let listen = listen(&mut c, raw.listen.unwrap_or_default());
    let raw_tls = raw.tls.unwrap_or_default();
    let tls = Tls {
        default_cert: c.cert_pair("tls", raw_tls.cert.as_ref(), raw_tls.key.as_ref()),
        min_version: c
            .value("tls.min_version", raw_tls.min_version.as_ref(), tls_version)
            .unwrap_or(TlsVersion::V1_2),
    };
    let shutdown_timeout = c
        .value(
            "shutdown_timeout",
            raw.shutdown_timeout.as_ref(),
            units::required_duration,
        )
        .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
    let upgrade_grace = c
        .value(
            "upgrade_grace",
            raw.upgrade_grace.as_ref(),
            units::required_duration,
        )
        .unwrap_or(DEFAULT_UPGRADE_GRACE);
    let upgrade_sock = c.file_path("upgrade_sock", raw.upgrade_sock.as_ref());
    let threads = c
        .value("threads", raw.threads.as_ref(), threads)
        .unwrap_or(0);
    let acme_webroot = c.file_path("acme_webroot", raw.acme_webroot.as_ref());
    let trusted_proxies = limits::trusted_proxies(&mut c, raw.trusted_proxies.as_ref());
    let access_log = match raw.access_log.as_ref() {
        None => AccessLogTarget::Stdout,
        Some(v) if units::is_off(v) => AccessLogTarget::Off,
        Some(Value::String(s)) if s.trim() == "stdout" => AccessLogTarget::Stdout,
        v => c
            .file_path("access_log", v)
            .map_or(AccessLogTarget::Stdout, AccessLogTarget::File),
    };
    let head_limits = limits::head_limits(&mut c, raw.limits.unwrap_or_default());
    let inherited = defaults(&mut c, raw.defaults.unwrap_or_default());

    let mut routes = Vec::new();
    let mut hosts: HashMap<HostPattern, Option<Pos>> = HashMap::new();
    let mut names: HashMap<String, Option<Pos>> = HashMap::new();
    for (i, raw_route) in raw.routes.unwrap_or_default().into_iter().enumerate() {
        let path = format!("routes[{i}]");
        let Some(raw_route) = raw_route else {
            continue;
        };
        // Found on the host alone, so that a duplicate is reported even when something
        // else in either route is wrong too.
        let host = raw_route.host.as_ref().and_then(|v| host_pattern(v).ok());
        let host_pos = spans.find(&format!("{path}.host"));
        let duplicate = match host.and_then(|h| Some((hosts.insert(h.clone(), host_pos)?, h))) {
            Some((first, host)) => {
                let first = first
                    .map(|p| format!(" (first at {p})"))
                    .unwrap_or_default();
                c.error(
                    &format!("{path}.host"),
                    format!("duplicate host \"{host}\"{first}; expected each host once"),
                );
                true
            }
            None => false,
        };
        let Some(r) = route(&mut c, &path, raw_route, &inherited) else {
            continue;
        };
        if duplicate {
            continue;
        }
        let name_path = format!("{path}.name");
        if let Some(first) = names.insert(r.name.clone(), spans.get(&name_path).or(host_pos)) {
            let first = first
                .map(|p| format!(" (first at {p})"))
                .unwrap_or_default();
            c.error(
                &name_path,
                format!(
                    "duplicate route name {:?}{first}; names label metrics and must be unique",
                    r.name
                ),
            );
            continue;
        }
        routes.push(r);
    }

    let upgrade_sock = upgrade_sock.unwrap_or_else(|| default_upgrade_sock(&listen));
    if c.errors.is_empty() {
        Ok(Config {
            file: file.to_path_buf(),
            listen,
            tls,
            shutdown_timeout,
            upgrade_grace,
            upgrade_sock,
            threads,
            headers: inherited.headers,
            acme_webroot,
            trusted_proxies,
            access_log,
            head_limits,
            routes,
        })
    } else {
        Err(c.errors)
    }
}

/// `$TMPDIR/gateway-upgrade-PORT.sock`: one per HTTPS port, so two gateways on one
/// machine never take over each other's sockets.
fn default_upgrade_sock(listen: &Listen) -> PathBuf {
    std::env::temp_dir().join(format!("gateway-upgrade-{}.sock", listen.https.port()))
}

fn listen(c: &mut Checker, raw: super::raw::RawListen) -> Listen {
    let http = c.value("listen.http", raw.http.as_ref(), units::listen_addr);
    let https = c
        .value("listen.https", raw.https.as_ref(), units::listen_addr)
        .unwrap_or_else(|| {
            DEFAULT_HTTPS
                .parse()
                .expect("DEFAULT_HTTPS is a valid address")
        });
    let metrics = c.value("listen.metrics", raw.metrics.as_ref(), units::listen_addr);
    let clash =
        |a: Option<std::net::SocketAddr>, b| a.is_some_and(|a| a.port() == b && a.port() != 0);
    if clash(http, https.port()) {
        c.error(
            "listen.http",
            format!(
                "port {} is also listen.https; expected distinct ports",
                https.port()
            ),
        );
    }
    if clash(metrics, https.port()) || metrics.is_some_and(|m| clash(http, m.port())) {
        c.error(
            "listen.metrics",
            "port is also used by another listener; expected distinct ports",
        );
    }
    Listen {
        http,
        https,
        metrics,
    }
}

fn defaults(c: &mut Checker, raw: RawDefaults) -> Inherited {
    let mut headers = Vec::new();
    match &raw.headers {
        Some(map) => c.headers("defaults.headers", map, &mut headers),
        None => headers.extend([
            (
                http::header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000"),
            ),
            (
                http::header::X_FRAME_OPTIONS,
                HeaderValue::from_static("SAMEORIGIN"),
            ),
            (
                http::header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ]),
    }
    Inherited {
        max_body: c
            .value("defaults.max_body", raw.max_body.as_ref(), units::size)
            .unwrap_or(Some(DEFAULT_MAX_BODY)),
        connect_timeout: c
            .value(
                "defaults.connect_timeout",
                raw.connect_timeout.as_ref(),
                units::duration,
            )
            .unwrap_or(Some(DEFAULT_CONNECT_TIMEOUT)),
        read_timeout: c
            .value(
                "defaults.read_timeout",
                raw.read_timeout.as_ref(),
                units::duration,
            )
            .unwrap_or(Some(DEFAULT_READ_TIMEOUT)),
        write_timeout: c
            .value(
                "defaults.write_timeout",
                raw.write_timeout.as_ref(),
                units::duration,
            )
            .unwrap_or(Some(DEFAULT_WRITE_TIMEOUT)),
        headers,
        rate_limit: raw
            .rate_limit
            .as_ref()
            .and_then(|v| limits::rate_limit(c, "defaults.rate_limit", v))
            .flatten(),
    }
}

fn route(c: &mut Checker, path: &str, raw: RawRoute, inherited: &Inherited) -> Option<Route> {
    let at = |key: &str| format!("{path}.{key}");
    if raw.host.is_none() {
        c.error(
            path,
            "missing `host`; expected e.g. host: voice.example.com",
        );
    }
    if raw.upstream.is_none() {
        c.error(
            path,
            "missing `upstream`; expected e.g. upstream: 127.0.0.1:7860",
        );
    }
    let host = c.value(&at("host"), raw.host.as_ref(), host_pattern);
    let upstream = c.value(&at("upstream"), raw.upstream.as_ref(), units::upstream_addr);
    let name = c.value(&at("name"), raw.name.as_ref(), route_name);
    let max_body = c.value(&at("max_body"), raw.max_body.as_ref(), units::size);
    let connect_timeout = c.value(
        &at("connect_timeout"),
        raw.connect_timeout.as_ref(),
        units::duration,
    );
    let read_timeout = c.value(
        &at("read_timeout"),
        raw.read_timeout.as_ref(),
        units::duration,
    );
    let write_timeout = c.value(
        &at("write_timeout"),
        raw.write_timeout.as_ref(),
        units::duration,
    );
    let rate_limit = match &raw.rate_limit {
        Some(v) => limits::rate_limit(c, &at("rate_limit"), v),
        None => Some(inherited.rate_limit.clone()),
    };
    let mut headers = inherited.headers.clone();
    if let Some(map) = &raw.headers {
        c.headers(&at("headers"), map, &mut headers);
    }
    let tls = raw.tls.and_then(|RawCert { cert, key }| {
        if cert.is_none() && key.is_none() {
            c.error(&at("tls"), "expected `cert` and `key`");
        }
        c.cert_pair(&at("tls"), cert.as_ref(), key.as_ref())
    });
    let host = host?;
    Some(Route {
        name: name.unwrap_or_else(|| host.to_string()),
        host,
        upstream: upstream?,
        max_body: max_body.unwrap_or(inherited.max_body),
        connect_timeout: connect_timeout.unwrap_or(inherited.connect_timeout),
        read_timeout: read_timeout.unwrap_or(inherited.read_timeout),
        write_timeout: write_timeout.unwrap_or(inherited.write_timeout),
        headers,
        tls,
        rate_limit: rate_limit?,
    })
}

/// `voice.example.com` or `*.example.com`; case-insensitive, a trailing dot ignored.
fn host_pattern(v: &Value) -> Result<HostPattern, String> {
    const EXPECTED: &str =
        "expected a host name like voice.example.com or *.example.com, without port";
    let Value::String(text) = v else {
        return Err(format!("invalid host {}; {EXPECTED}", shown(v)));
    };
    let host = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let (wildcard, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host.as_str()),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!("invalid host {}; {EXPECTED}", shown(v)));
    }
    Ok(if wildcard {
        HostPattern::Wildcard(name.to_string())
    } else {
        HostPattern::Exact(name.to_string())
    })
}

fn route_name(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s)
            if !s.trim().is_empty()
                && s.len() <= 64
                && !s.chars().any(char::is_control)
                && s != "_unmatched" =>
        {
            Ok(s.trim().to_string())
        }
        _ => Err(format!(
            "invalid name {}; expected a short label (at most 64 characters, not \"_unmatched\")",
            shown(v)
        )),
    }
}

fn tls_version(v: &Value) -> Result<TlsVersion, String> {
    let text = match v {
        Value::String(s) => s.trim().trim_start_matches("TLSv").to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    match text.as_str() {
        "1.2" => Ok(TlsVersion::V1_2),
        "1.3" => Ok(TlsVersion::V1_3),
        _ => Err(format!(
            "invalid TLS version {}; expected \"1.2\" or \"1.3\"",
            shown(v)
        )),
    }
}

fn threads(v: &Value) -> Result<usize, String> {
    match v.as_u64() {
        Some(n) if n <= 1024 => Ok(n as usize),
        _ => Err(format!(
            "invalid thread count {}; expected 0 (one per CPU) to 1024",
            shown(v)
        )),
    }
}
