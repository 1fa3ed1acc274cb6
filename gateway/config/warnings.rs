//! Findings that do not stop the gateway: the file is valid, but a setting in it does
//! not do what it seems to. `gateway check` prints them as `FILE:LINE:COL: warning: …`
//! (exit 0), and `run` and every reload log them.

use super::checker::Checker;
use super::model::{RateKey, RateLimit, Route};

/// Rate limits keyed by a request field that cannot work as written: on a route without
/// access control the client writes the field itself, so it escapes the limit by
/// inventing values; and a field whose name has `_` never arrives unless
/// `underscores_in_headers` (such fields are removed as requests arrive).
pub(super) fn rate_keys(c: &mut Checker, routes: &[Route], underscores_in_headers: bool) {
    for route in routes {
        let i = route.index;
        let keyed_by_api_key = route
            .rate_limit
            .as_ref()
            .is_some_and(|r| r.key == RateKey::ApiKey);
        if keyed_by_api_key && route.access.api_keys.is_none() {
            let mut at = format!("routes[{i}].rate_limit.key");
            if c.pos(&at).is_none() {
                at = "defaults.rate_limit.key".to_string();
            }
            c.warn(
                &at,
                "the route accepts no API keys (`api_keys`): every request is limited by the client's address",
            );
        }
        let Some(RateLimit {
            key: RateKey::Header(name),
            ..
        }) = &route.rate_limit
        else {
            continue;
        };
        let key_field = *name == http::header::AUTHORIZATION || name.as_str() == "x-api-key";
        if key_field && route.access.api_keys.is_some() {
            let mut at = format!("routes[{i}].rate_limit.key");
            if c.pos(&at).is_none() {
                at = "defaults.rate_limit.key".to_string();
            }
            c.warn(
                &at,
                format!(
                    "the API key is taken out of {name} before the rate limit: every request \
                     is limited by the client's address; write key: api_key"
                ),
            );
            continue;
        }
        // Written in the route, or inherited from `defaults`.
        let mut at = format!("routes[{i}].rate_limit.key");
        if c.pos(&at).is_none() {
            at = "defaults.rate_limit.key".to_string();
        }
        if route.access.is_public() {
            c.warn(
                &at,
                format!(
                    "the client writes {name} itself and escapes the limit by inventing values; \
                     on a route without access control, key by client_ip (or verify the header)"
                ),
            );
        }
        if !underscores_in_headers && name.as_str().contains('_') {
            c.warn(
                &at,
                format!(
                    "requests never carry {name}: fields with `_` are removed (set \
                     limits.underscores_in_headers: true to keep them)"
                ),
            );
        }
    }
}

/// A key named like a Basic user of the same route: the app would read the same name in
/// `identity_header` for a program and for that person.
pub(super) fn identities(c: &mut Checker, routes: &[Route], keys: &[super::model::ApiKey]) {
    for route in routes {
        let i = route.index;
        let (Some(choice), Some(_), Some(basic)) = (
            &route.access.api_keys,
            &route.access.identity_header,
            &route.access.basic_auth,
        ) else {
            continue;
        };
        for key in keys {
            let accepted = choice.accepts(&key.name) && key.allows_route(&route.name);
            if accepted && basic.users.iter().any(|u| u.name == key.name) {
                c.warn(
                    &format!("routes[{i}].identity_header"),
                    format!(
                        "key {:?} and the Basic user {:?} would reach the app as the same \
                         identity; rename the key",
                        key.name, key.name
                    ),
                );
            }
        }
    }
}
