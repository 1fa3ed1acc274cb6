//! The API-key step of the access checks (`access::checks`), on routes with `api_keys`:
//! the key a request presents is taken out of it, whatever comes next (it never reaches
//! the app, nor the access log), then verified, then held to the key's `rate_limit` and
//! `max_concurrent`. A verified key is enough: the route's other logins are skipped. A
//! presented key that is not valid here gets 401 and counts as a failed login; it never
//! falls through to the other logins.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue};
use log::info;
use pingora::proxy::Session;

use super::context::RequestCtx;
use super::limits;
use super::page::Reply;
use super::step::{answered, Checked};
use crate::admission;
use crate::auth::RouteAccess;
use crate::keys::present::{self, Presented};
use crate::keys::{Key, Refusal, RouteKeys};
use crate::limits::Verdict;
use crate::metrics::Reject;
use crate::state::ActiveRoute;

/// What the step found.
pub enum Found {
    /// No key: the route's other logins decide (or, without any, a 401).
    Nothing,
    /// A valid key, within its limits: `ctx.key` and `ctx.user` name it.
    Verified,
    /// Refused (401, 429); the client has its answer.
    Refused(Checked),
}

/// The key a request presents, verified where it lies in the request (no copy): `None`
/// without one. Nothing is taken out yet.
fn presented(session: &Session, keys: &RouteKeys) -> Option<Result<Arc<Key>, Denied>> {
    let upgrade_req = session.as_downstream().is_upgrade_req();
    let websocket = admission::asks_websocket(upgrade_req, session.req_header());
    match present::find(session.req_header(), websocket, keys.param()) {
        Presented::Nothing => None,
        Presented::Ambiguous => Some(Err(Denied::Ambiguous)),
        Presented::Key(secret) => Some(keys.verify(&secret).cloned().map_err(Denied::from)),
    }
}

/// The common case, decided without waiting: a valid key whose own bucket (if any) is
/// this process's and has a token, with a place among its `max_concurrent`. True when
/// the request passed, its key taken out; false leaves the request untouched for
/// `check` (no key, a refusal to answer, a bucket in the shared store).
pub fn quick(session: &mut Session, ctx: &mut RequestCtx, access: &RouteAccess) -> bool {
    let Some(keys) = &access.keys else {
        return false;
    };
    let client = ctx.client.unwrap_or(Ipv4Addr::UNSPECIFIED.into());
    if !access.allows(client) {
        return false;
    }
    let Some(Ok(key)) = presented(session, keys) else {
        return false;
    };
    // The place first: given back if the bucket refuses, while a refused bucket takes
    // no token (GCRA), so the slow path's answer is the one a single check would give.
    let Ok(slot) = key.enter() else {
        return false;
    };
    let verdict = match &key.rate {
        None => None,
        Some(limiter) => match limiter.check_here() {
            Some(allowed @ Verdict::Allowed { .. }) => Some(allowed),
            _ => return false,
        },
    };
    if !present::remove(
        session.req_header_mut(),
        keys.param(),
        access.pass_authorization,
    ) {
        return false;
    }
    ctx.key_rate = verdict;
    ctx.key_slot = slot;
    ctx.user = Some(key.name.clone());
    ctx.key = Some(key);
    true
}

/// Finds, removes and checks the key of a request on a route that accepts keys.
pub async fn check(
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &ActiveRoute,
    access: &RouteAccess,
    keys: &RouteKeys,
    client: IpAddr,
    reply: &Reply<'_>,
) -> Found {
    let Some(verified) = presented(session, keys) else {
        // A key in a plain URL is not read, but it does not go on either.
        if !present::strip_query(session.req_header_mut(), keys.param()) {
            return Found::Refused(bad_request(session, reply).await);
        }
        return Found::Nothing;
    };
    let pass = access.pass_authorization;
    if !present::remove(session.req_header_mut(), keys.param(), pass) {
        return Found::Refused(bad_request(session, reply).await);
    }
    let key = match verified {
        Ok(key) => key,
        Err(denied) => {
            if let Denied::Expired(name) | Denied::NotAllowed(name) = &denied {
                info!(
                    "event=api_key_refused route={} key={name} reason={}",
                    route.name,
                    denied.code()
                );
            }
            return refuse(session, (route, access), client, reply, denied).await;
        }
    };
    // Named from here on: its refusals below are counted under it too.
    ctx.user = Some(key.name.clone());
    ctx.key = Some(key.clone());
    // A WebSocket holds its place until the app accepts the upgrade: then it is a
    // session, not a request in progress (`upgrade::tunnel` gives the place back). The
    // place before the token: a busy key is not charged one.
    match key.enter() {
        Ok(slot) => ctx.key_slot = slot,
        Err(_busy) => {
            let extra = [(header::RETRY_AFTER, HeaderValue::from_static("1"))];
            let detail = format!(
                "Key {} already has {} requests in progress. Try again in a moment.",
                key.name,
                key.max_concurrent().unwrap_or(0)
            );
            let busy = reply.answer(session, Some(Reject::ApiKeyBusy), 429, &detail, &extra);
            return Found::Refused(busy.await);
        }
    }
    if let Some(limiter) = &key.rate {
        match limiter.check_key().await {
            Some(Verdict::Limited { retry_after }) => {
                let detail = format!(
                    "Too many requests with key {}. Try again in {retry_after} s.",
                    key.name
                );
                let limited = limits::too_many(session, limiter, retry_after, &detail, reply);
                return Found::Refused(limited.await);
            }
            verdict => ctx.key_rate = verdict,
        }
    }
    Found::Verified
}

async fn bad_request(session: &mut Session, reply: &Reply<'_>) -> Checked {
    let bad = Some(Reject::BadRequest);
    reply.answer(session, bad, 400, "Bad request.", &[]).await
}

/// Why a key was refused.
pub enum Denied {
    /// No key, on a route with no other login.
    Missing,
    /// Two different keys, or an empty one.
    Ambiguous,
    Unknown,
    Expired(Arc<str>),
    NotAllowed(Arc<str>),
}

impl From<Refusal> for Denied {
    fn from(refusal: Refusal) -> Denied {
        match refusal {
            Refusal::Unknown => Denied::Unknown,
            Refusal::Expired(key) => Denied::Expired(key.name.clone()),
            Refusal::NotAllowed(key) => Denied::NotAllowed(key.name.clone()),
        }
    }
}

impl Denied {
    /// The `code` of the JSON answer (OpenAI's field names: its SDKs show `message`).
    fn code(&self) -> &'static str {
        match self {
            Denied::Missing => "missing_api_key",
            Denied::Ambiguous | Denied::Unknown => "invalid_api_key",
            Denied::Expired(_) => "expired_api_key",
            Denied::NotAllowed(_) => "api_key_not_allowed",
        }
    }

    fn message(&self, route: &str) -> String {
        match self {
            Denied::Missing => format!("Route {route} needs an API key: send it as Authorization: Bearer KEY or X-API-Key: KEY."),
            Denied::Ambiguous => "Two different API keys were sent; send one.".to_string(),
            Denied::Unknown => "Invalid API key.".to_string(),
            Denied::Expired(name) => format!("API key {name} has expired."),
            Denied::NotAllowed(name) => format!("API key {name} may not use route {route}."),
        }
    }
}

/// 401 for a key presented and refused, counted as a failed login of the client.
async fn refuse(
    session: &mut Session,
    (route, access): (&ActiveRoute, &RouteAccess),
    client: IpAddr,
    reply: &Reply<'_>,
    denied: Denied,
) -> Found {
    if let Some(failures) = &access.failures {
        failures.failed(client).await;
    }
    Found::Refused(unauthorized(session, reply, &route.name, denied).await)
}

/// 401 with `WWW-Authenticate: Bearer` (RFC 6750; `error="invalid_token"` for a key
/// that was presented): a small JSON body for programs, a page for browsers.
pub async fn unauthorized(
    session: &mut Session,
    reply: &Reply<'_>,
    route: &str,
    denied: Denied,
) -> Checked {
    let challenge = match denied {
        Denied::Missing => HeaderValue::from_static("Bearer"),
        _ => HeaderValue::from_static("Bearer error=\"invalid_token\""),
    };
    let message = denied.message(route);
    let reason = Some(Reject::ApiKey);
    if wants_html(session) {
        let extra = [(header::WWW_AUTHENTICATE, challenge)];
        return reply.answer(session, reason, 401, &message, &extra).await;
    }
    let body = serde_json::json!({
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "code": denied.code(),
        }
    });
    let fields = [
        (header::WWW_AUTHENTICATE, challenge),
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    let body = Bytes::from(body.to_string());
    answered(reason, reply.as_is(session, 401, &fields, body).await)
}

/// A browser's navigation (it accepts HTML) gets a page; anything else JSON.
fn wants_html(session: &Session) -> bool {
    session
        .req_header()
        .headers
        .get(header::ACCEPT)
        .is_some_and(|a| a.as_bytes().windows(9).any(|w| w == b"text/html"))
}
