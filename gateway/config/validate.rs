//! Turns a `RawConfig` into a `Config`, collecting every problem (not just the first),
//! each at the line and column of the value at fault.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

use super::acme;
use super::apps;
use super::checker::Checker;
use super::connections;
use super::error::Diagnostic;
use super::files;
use super::keys;
use super::limits;
use super::model::*;
use super::raw::{RawConfig, RawTls};
use super::route;
use super::span::Spans;
use super::store;
use super::units::{self, shown};
use super::warnings;

pub fn validate(file: &Path, raw: RawConfig, spans: &Spans) -> Result<Config, Vec<Diagnostic>> {
    let mut c = Checker::new(file, spans);

    let listen = listen(&mut c, raw.listen.unwrap_or_default());
    let tls = tls(&mut c, raw.tls.unwrap_or_default());
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
    let access_log = access_log(&mut c, raw.access_log.as_ref());
    let state_dir = files::state_dir(&mut c, raw.state_dir.as_ref());
    if tls.default_cert.is_none() {
        let what = "the self-signed certificate (`tls` names none)";
        files::check_state_dir(&mut c, &state_dir, None, "tls", what);
    }
    let raw_limits = raw.limits.unwrap_or_default();
    let conn_limits = connections::conn_limits(&mut c, &raw_limits);
    let (head_limits, body_deadline, ipv6_prefix) = limits::limits(&mut c, raw_limits);
    let mut inherited = route::defaults(&mut c, raw.defaults.unwrap_or_default());
    inherited.apps = apps::names(raw.apps.as_ref());

    let mut routes = route::routes(&mut c, raw.routes.unwrap_or_default(), &inherited, spans);
    let acme = acme::settings(&mut c, raw.acme.as_ref(), &listen, &state_dir, &mut routes);
    let limits_store = store::settings(&mut c, raw.limits_store.as_ref());
    let apps = apps::apps(
        &mut c,
        (raw.apps.as_ref(), raw.groups.as_ref(), raw.gpus.as_ref()),
        &routes,
        &state_dir,
    );

    let api_keys = keys::api_keys(&mut c, raw.api_keys.as_ref(), &routes);
    warnings::rate_keys(&mut c, &routes, head_limits.underscores_in_headers);
    warnings::identities(&mut c, &routes, &api_keys.keys);
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
            headers: inherited.headers().to_vec(),
            acme_webroot,
            trusted_proxies,
            access_log,
            head_limits,
            body_deadline,
            ipv6_prefix,
            conn_limits,
            warnings: c.warnings,
            state_dir,
            acme,
            limits_store,
            routes,
            apps,
            api_keys,
        })
    } else {
        Err(c.errors)
    }
}

/// `tls`: the default certificate (else a self-signed one) and the lowest version.
fn tls(c: &mut Checker, raw: RawTls) -> Tls {
    Tls {
        default_cert: c.cert_pair("tls", raw.cert.as_ref(), raw.key.as_ref()),
        min_version: c
            .value("tls.min_version", raw.min_version.as_ref(), tls_version)
            .unwrap_or(TlsVersion::V1_2),
    }
}

/// `access_log`: `stdout` (the default), `off`, or a file.
fn access_log(c: &mut Checker, v: Option<&Value>) -> AccessLogTarget {
    match v {
        None => AccessLogTarget::Stdout,
        Some(v) if units::is_off(v) => AccessLogTarget::Off,
        Some(Value::String(s)) if s.trim() == "stdout" => AccessLogTarget::Stdout,
        v => match c.file_path("access_log", v) {
            Some(file) => {
                files::check_appendable(c, "access_log", &file);
                AccessLogTarget::File(file)
            }
            None => AccessLogTarget::Stdout,
        },
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
    let metrics_hosts = c
        .value(
            "listen.metrics_hosts",
            raw.metrics_hosts.as_ref(),
            metrics_hosts,
        )
        .unwrap_or_default();
    let http_mode = c
        .value("listen.http_mode", raw.http_mode.as_ref(), http_mode)
        .unwrap_or_default();
    if http_mode == HttpMode::Proxy && http.is_none() && raw.http.is_none() {
        c.error(
            "listen.http_mode",
            "`proxy` needs a plain-HTTP listener; add listen.http (e.g. http: 80)",
        );
    }
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
        http_mode,
        https,
        metrics,
        metrics_hosts,
    }
}

/// `metrics_hosts: [gateway.internal]`: DNS names, lower-cased, without port.
fn metrics_hosts(v: &Value) -> Result<Vec<String>, String> {
    const EXPECTED: &str = "expected a list of host names like [gateway.internal]";
    let items = match v {
        Value::Sequence(items) => items,
        Value::Null => return Ok(Vec::new()),
        _ => return Err(format!("{EXPECTED}, found {}", shown(v))),
    };
    let dns = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    items
        .iter()
        .map(|item| match item.as_str().map(str::trim) {
            Some(s) if dns(s) => Ok(s.to_ascii_lowercase()),
            _ => Err(format!("invalid host name {}; {EXPECTED}", shown(item))),
        })
        .collect()
}

fn http_mode(v: &Value) -> Result<HttpMode, String> {
    match v.as_str().map(str::trim) {
        Some("redirect") => Ok(HttpMode::Redirect),
        Some("proxy") => Ok(HttpMode::Proxy),
        _ => Err(format!(
            "invalid http_mode {}; expected redirect (to HTTPS) or proxy (serve the routes on plain HTTP)",
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
