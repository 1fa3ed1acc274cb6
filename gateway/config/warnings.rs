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
    for (i, route) in routes.iter().enumerate() {
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
