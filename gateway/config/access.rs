//! The access-control keys of a route: `allow`, `basic_auth`, `forward_auth`,
//! `api_keys`, `pass_authorization`, `identity_header`, and `auth_failures` (in
//! `defaults` and routes). Password hashes and htpasswd files are `password`'s; the
//! keys themselves are `keys`'.

use std::net::ToSocketAddrs;
use std::time::Duration;

use http::HeaderName;
use serde_yaml::Value;

use super::checker::Checker;
use super::limits::cidr;
use super::model::*;
use super::password::{self, password_hash, valid_user};
use super::raw::{RawBasicAuth, RawForwardAuth, RawRoute};
use super::units::{self, is_off, shown};

/// Longest realm accepted: it is shown in the browser's login prompt.
const MAX_REALM: usize = 128;

/// A route's `allow`, `basic_auth`, `forward_auth`, `api_keys`, `pass_authorization`
/// and `identity_header`; `None` after an error (recorded).
pub(super) fn access(c: &mut Checker, path: &str, raw: &mut RawRoute) -> Option<Access> {
    let at = |key: &str| format!("{path}.{key}");
    let allow = match raw.allow.take() {
        Some(v) => Some(allow(c, &at("allow"), &v)?),
        None => None,
    };
    let basic_auth = match raw.basic_auth.take() {
        Some(b) => Some(basic_auth(c, &at("basic_auth"), b)?),
        None => None,
    };
    let forward_auth = match raw.forward_auth.take() {
        Some(f) => Some(forward_auth(c, &at("forward_auth"), f)?),
        None => None,
    };
    let pass_authorization = c
        .value(
            &at("pass_authorization"),
            raw.pass_authorization.as_ref(),
            units::flag,
        )
        .unwrap_or(false);
    let api_keys = match raw.api_keys.take() {
        Some(v) => c.value(&at("api_keys"), Some(&v), key_choice),
        None => Some(None),
    };
    // An invalid one is reported and the route still checked (the file fails anyway).
    let identity_header = raw
        .identity_header
        .take()
        .and_then(|v| c.value(&at("identity_header"), Some(&v), identity_header));
    Some(Access {
        allow,
        basic_auth,
        forward_auth,
        pass_authorization,
        api_keys: api_keys?,
        identity_header,
    })
}

/// `api_keys: true`, or the names of the keys the route accepts (`false`: none).
fn key_choice(v: &Value) -> Result<Option<KeyChoice>, String> {
    let err = || {
        format!(
            "invalid api_keys {}; expected true, or a list of key names like [ci-bot, notebook]",
            shown(v)
        )
    };
    match v {
        Value::Bool(true) => Ok(Some(KeyChoice::Any)),
        Value::Bool(false) => Ok(None),
        Value::Sequence(items) if !items.is_empty() => items
            .iter()
            .map(|item| {
                item.as_str()
                    .filter(|s| super::keys::valid_key_name(s))
                    .map(str::to_string)
                    .ok_or_else(err)
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|names| Some(KeyChoice::Named(names))),
        _ => Err(err()),
    }
}

/// Fields the gateway sets or frames itself, which cannot carry an identity.
const NOT_IDENTITY: &[&str] = &[
    "host",
    "connection",
    "content-length",
    "content-type",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "keep-alive",
    "proxy-authorization",
    "authorization",
    "cookie",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-real-ip",
    "forwarded",
    "x-request-id",
    "x-api-key",
];

/// `identity_header: X-Forwarded-User`: a field name of the app's choosing, not one the
/// gateway or HTTP itself gives another meaning.
fn identity_header(v: &Value) -> Result<HeaderName, String> {
    let name = v
        .as_str()
        .and_then(|s| HeaderName::from_bytes(s.trim().as_bytes()).ok())
        .ok_or_else(|| {
            format!(
                "invalid identity_header {}; expected a header name like X-Forwarded-User",
                shown(v)
            )
        })?;
    // `X_Forwarded_For` too: the field is removed in both spellings (`proxy::access`).
    let dashed = name.as_str().replace('_', "-");
    if NOT_IDENTITY.contains(&dashed.as_str()) || dashed.starts_with("sec-websocket-") {
        return Err(format!(
            "identity_header {name} is a field the gateway or HTTP gives another meaning; \
             choose the one the app reads, like X-Forwarded-User"
        ));
    }
    Ok(name)
}

/// `allow: ["10.0.0.0/8", "203.0.113.7", "2001:db8::/32"]`.
fn allow(c: &mut Checker, path: &str, v: &Value) -> Option<Vec<IpNet>> {
    let Value::Sequence(items) = v else {
        c.error(
            path,
            format!(
                "expected a list of networks like [\"10.0.0.0/8\", \"2001:db8::/32\"], found {}",
                shown(v)
            ),
        );
        return None;
    };
    if items.is_empty() {
        c.error(
            path,
            "an empty list would refuse every client; remove `allow` to allow all",
        );
        return None;
    }
    let mut nets = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match c.value(&format!("{path}[{i}]"), Some(item), cidr) {
            Some(net) => nets.push(net),
            None => ok = false,
        }
    }
    ok.then_some(nets)
}

fn basic_auth(c: &mut Checker, path: &str, raw: RawBasicAuth) -> Option<BasicAuth> {
    let realm = c
        .value(&format!("{path}.realm"), raw.realm.as_ref(), parse_realm)
        .unwrap_or_else(|| "restricted".to_string());
    let (mut users, mut ok) = listed_users(c, path, &raw);
    let htpasswd_at = format!("{path}.htpasswd");
    let htpasswd = match &raw.htpasswd {
        Some(v) => Some(c.file_path(&htpasswd_at, Some(v))?),
        None => None,
    };
    if let Some(file) = &htpasswd {
        let from_file = password::read_htpasswd(c, &htpasswd_at, file)?;
        for user in from_file {
            if users.iter().any(|u| u.name == user.name) {
                c.error(
                    &htpasswd_at,
                    format!(
                        "user {:?} is both in `users` and in {}; give each user once",
                        user.name,
                        file.display()
                    ),
                );
                ok = false;
            } else {
                users.push(user);
            }
        }
    }
    if users.is_empty() && ok {
        c.error(
            path,
            "no users: add `users: { NAME: HASH }` or an `htpasswd` file with users in it",
        );
        return None;
    }
    ok.then_some(BasicAuth {
        realm,
        users,
        htpasswd,
    })
}

/// `realm`: printable ASCII without quotes (it goes into `WWW-Authenticate` as it is).
fn parse_realm(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s)
            if !s.is_empty()
                && s.len() <= MAX_REALM
                && s.chars().all(|ch| ch.is_ascii_graphic() || ch == ' ')
                && !s.contains(['"', '\\']) =>
        {
            Ok(s.clone())
        }
        _ => Err(format!(
            "invalid realm {}; expected printable ASCII text without quotes, at most {MAX_REALM} characters",
            shown(v)
        )),
    }
}

/// `users`: each name with its hash; also whether every entry was valid.
fn listed_users(c: &mut Checker, path: &str, raw: &RawBasicAuth) -> (Vec<User>, bool) {
    let mut ok = true;
    let mut users = Vec::new();
    for (name, hash) in raw.users.iter().flatten() {
        let Some(name) = name.as_str().filter(|n| valid_user(n)) else {
            c.error(
                &format!("{path}.users"),
                format!(
                    "invalid user name {}; expected text without `:` or control characters",
                    shown(name)
                ),
            );
            ok = false;
            continue;
        };
        let at = format!("{path}.users.{name}");
        match c.value(&at, Some(hash), |v| match v {
            Value::String(s) => password_hash(s),
            _ => Err(format!("expected a password hash, found {}", shown(v))),
        }) {
            Some(hash) => users.push(User {
                name: name.to_string(),
                hash,
            }),
            None => ok = false,
        }
    }
    (users, ok)
}

fn forward_auth(c: &mut Checker, path: &str, raw: RawForwardAuth) -> Option<ForwardAuth> {
    let at = |key: &str| format!("{path}.{key}");
    if raw.url.is_none() {
        c.error(
            path,
            "missing `url`; expected e.g. url: http://127.0.0.1:4180/oauth2/auth",
        );
    }
    let url = c.value(&at("url"), raw.url.as_ref(), auth_url);
    let copy_headers = match &raw.copy_headers {
        None => Some(Vec::new()),
        Some(v) => copy_headers(c, &at("copy_headers"), v),
    };
    let sign_in = c.value(&at("sign_in"), raw.sign_in.as_ref(), sign_in_url);
    let timeout = c
        .value(&at("timeout"), raw.timeout.as_ref(), auth_timeout)
        .unwrap_or(DEFAULT_AUTH_TIMEOUT);
    if raw.sign_in.is_some() && sign_in.is_none() {
        return None;
    }
    Some(ForwardAuth {
        url: url?,
        copy_headers: copy_headers?,
        sign_in,
        timeout,
    })
}

/// `copy_headers`: a list of header names.
fn copy_headers(c: &mut Checker, at: &str, v: &Value) -> Option<Vec<HeaderName>> {
    let Value::Sequence(items) = v else {
        c.error(
            at,
            format!(
                "expected a list of header names like [X-Auth-Request-User], found {}",
                shown(v)
            ),
        );
        return None;
    };
    let mut names = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let name = c.value(&format!("{at}[{i}]"), Some(item), |v| {
            v.as_str()
                .and_then(|s| HeaderName::from_bytes(s.trim().as_bytes()).ok())
                .ok_or_else(|| format!("invalid header name {}", shown(v)))
        });
        match name {
            Some(n) => names.push(n),
            None => ok = false,
        }
    }
    ok.then_some(names)
}

/// `sign_in`: an absolute URL, where `{url}` stands for the request's own.
fn sign_in_url(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s)
            if (s.starts_with("https://") || s.starts_with("http://"))
                && !s.chars().any(|ch| ch.is_control() || ch == ' ') =>
        {
            Ok(s.clone())
        }
        _ => Err(format!(
            "invalid sign_in {}; expected an absolute URL, `{{url}}` standing for the request's own (e.g. https://auth.example.com/oauth2/start?rd={{url}})",
            shown(v)
        )),
    }
}

/// `timeout`: a duration up to 60 s, never off.
fn auth_timeout(v: &Value) -> Result<Duration, String> {
    match units::duration(v)? {
        Some(d) if d <= Duration::from_secs(60) => Ok(d),
        _ => Err(format!(
            "invalid timeout {}; expected a duration up to 60s (it cannot be off)",
            shown(v)
        )),
    }
}

/// `http://127.0.0.1:4180/oauth2/auth` or `https://auth.internal/api/verify`, resolved now.
pub(super) fn auth_url(v: &Value) -> Result<AuthUrl, String> {
    let err = || {
        format!(
            "invalid url {}; expected http:// or https:// with a host and a path, e.g. http://127.0.0.1:4180/oauth2/auth",
            shown(v)
        )
    };
    let text = v.as_str().ok_or_else(err)?.trim();
    let uri: http::Uri = text.parse().map_err(|_| err())?;
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(err()),
    };
    let authority = uri.authority().ok_or_else(err)?;
    if authority.as_str().contains('@') {
        return Err(err());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addr = (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .or_else(|| units::loopback_name(&format!("{host}:{port}")))
        .ok_or_else(|| format!("url {} does not resolve", shown(v)))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    Ok(AuthUrl {
        text: text.to_string(),
        tls,
        host: host.to_string(),
        addr,
        path,
    })
}

/// `auth_failures`: `off`, or `{ limit: 10, per: 1m }`. `Some(None)` for off.
pub(super) fn failure_limit(
    c: &mut Checker,
    path: &str,
    v: &Value,
) -> Option<Option<FailureLimit>> {
    if is_off(v) {
        return Some(None);
    }
    let (map, ok) = c.keyed(path, v, &["limit", "per"], "{ limit: 10, per: 1m }")?;
    let limit = c.value(&format!("{path}.limit"), map.get("limit"), |v| {
        match v.as_u64() {
            Some(n) if (1..=10_000).contains(&n) => Ok(n as u32),
            _ => Err(format!(
                "invalid limit {}; expected a number of failed logins from 1 to 10000",
                shown(v)
            )),
        }
    });
    let per = c.value(
        &format!("{path}.per"),
        map.get("per"),
        |v| match units::duration(v)? {
            Some(d) if (Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&d) => Ok(d),
            _ => Err(format!(
                "invalid per {}; expected a window from 1s to 24h",
                shown(v)
            )),
        },
    );
    let d = DEFAULT_AUTH_FAILURES;
    let limit = match map.get("limit") {
        Some(_) => limit?,
        None => d.limit,
    };
    let per = match map.get("per") {
        Some(_) => per?,
        None => d.per,
    };
    ok.then_some(Some(FailureLimit { limit, per }))
}
