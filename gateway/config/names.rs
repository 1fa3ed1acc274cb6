//! The values that say where a route applies and what it is called: its host pattern,
//! its path prefix, its name, and the `Host` its app is sent (`upstream_host`).

use serde_yaml::Value;

use super::model::HostPattern;
use super::units::shown;

/// `voice.example.com` or `*.example.com`; case-insensitive, a trailing dot ignored.
pub(super) fn host_pattern(v: &Value) -> Result<HostPattern, String> {
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

/// `/voice/` (or `/voice`, the same prefix): the part of a host's paths a route serves.
/// Plain characters only (letters, digits, `-._~`), so that the raw path a client sends
/// and the path an app decodes agree on it; no empty, `.` or `..` segment. Stored with
/// its trailing slash.
pub(super) fn route_path(v: &Value) -> Result<String, String> {
    const EXPECTED: &str =
        "expected a path prefix like /voice/ (letters, digits, -._~ between slashes)";
    let Value::String(text) = v else {
        return Err(format!("invalid path {}; {EXPECTED}", shown(v)));
    };
    let text = text.trim();
    let Some(inner) = text.strip_prefix('/') else {
        return Err(format!(
            "path {} does not start with /; {EXPECTED}",
            shown(v)
        ));
    };
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
    };
    let malformed = text.contains("//") || (!inner.is_empty() && !inner.split('/').all(segment_ok));
    if text.len() > 256 || malformed {
        return Err(format!("invalid path {}; {EXPECTED}", shown(v)));
    }
    Ok(match inner {
        "" => "/".to_string(),
        inner => format!("/{inner}/"),
    })
}

/// `upstream_host`: a host name or address, with or without a port, as a `Host` field
/// carries it (`localhost:11434`, `127.0.0.1`, `[::1]:8080`, `app.internal`).
pub(super) fn upstream_host(v: &Value) -> Result<http::HeaderValue, String> {
    const EXPECTED: &str =
        "expected a host name or address with an optional port, e.g. localhost:11434";
    let Value::String(s) = v else {
        return Err(format!("invalid upstream_host {}; {EXPECTED}", shown(v)));
    };
    let s = s.trim();
    let authority = s.parse::<http::uri::Authority>().ok();
    let bare = authority.filter(|a| a.as_str() == s && !s.contains('@') && !a.host().is_empty());
    match bare.and_then(|_| http::HeaderValue::from_str(s).ok()) {
        Some(value) => Ok(value),
        None => Err(format!("invalid upstream_host {}; {EXPECTED}", shown(v))),
    }
}

pub(super) fn route_name(v: &Value) -> Result<String, String> {
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
