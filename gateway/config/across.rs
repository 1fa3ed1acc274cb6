//! The checks across routes: a host and path, or a name, given twice, and routes of one
//! host naming different certificates. Each reports at the second place and names the
//! first.

use std::collections::HashMap;

use super::checker::Checker;
use super::error::Pos;
use super::model::*;
use super::names::{host_pattern, route_path};
use super::raw::RawRoute;
use super::span::Spans;

/// Whether an earlier route already serves this route's host and path (reported).
pub(super) fn served_twice(
    c: &mut Checker,
    served: &mut HashMap<(HostPattern, String), Option<Pos>>,
    at: &str,
    raw: &RawRoute,
    spans: &Spans,
) -> bool {
    let host = raw.host.as_ref().and_then(|v| host_pattern(v).ok());
    let path = match &raw.path {
        Some(v) => route_path(v).ok(),
        None => Some("/".to_string()),
    };
    let (Some(host), Some(path)) = (host, path) else {
        return false;
    };
    let key = match path.as_str() {
        "/" => format!("{at}.host"),
        _ => format!("{at}.path"),
    };
    let pos = spans.find(&key);
    let Some(first) = served.insert((host.clone(), path.clone()), pos) else {
        return false;
    };
    let first = first_at(first);
    let message = match path.as_str() {
        "/" => format!("duplicate host \"{host}\"{first}; expected each host once"),
        _ => format!(
            "duplicate path \"{path}\" for host \"{host}\"{first}; expected each host and path once"
        ),
    };
    c.error(&key, message);
    true
}

/// Whether an earlier route has this route's name (reported).
pub(super) fn named_twice(
    c: &mut Checker,
    names: &mut HashMap<String, Option<Pos>>,
    at: &str,
    r: &Route,
    spans: &Spans,
) -> bool {
    let name_path = format!("{at}.name");
    let name_pos = spans.get(&name_path).or(spans.find(&format!("{at}.host")));
    let Some(first) = names.insert(r.name.clone(), name_pos) else {
        return false;
    };
    c.error(
        &name_path,
        format!(
            "duplicate route name {:?}{}; names label metrics and must be unique",
            r.name,
            first_at(first)
        ),
    );
    true
}

/// Whether an earlier route of the same host names another certificate (reported).
pub(super) fn certificate_differs(c: &mut Checker, routes: &[Route], at: &str, r: &Route) -> bool {
    let Some(tls) = &r.tls else {
        return false;
    };
    let other = routes.iter().find_map(|o| match &o.tls {
        Some(t)
            if o.host == r.host && (t.cert != tls.cert || t.key != tls.key || o.acme != r.acme) =>
        {
            Some(t)
        }
        _ => None,
    });
    let Some(other) = other else {
        return false;
    };
    c.error(
        &format!("{at}.tls"),
        format!(
            "host \"{}\" is already served the certificate of {}; the routes of one host share one certificate: set `tls` on one of them, or the same files on each",
            r.host,
            other.path.trim_end_matches(".cert")
        ),
    );
    true
}

/// ` (first at FILE:LINE:COL)`, when the first place is known.
fn first_at(first: Option<Pos>) -> String {
    first
        .map(|p| format!(" (first at {p})"))
        .unwrap_or_default()
}
