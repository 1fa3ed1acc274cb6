//! The access checks of the proxy phases (see `crate::auth`): the allowlist (403), the
//! failed-login counter (429), Basic credentials (401) and the sign-on service (its
//! answer, a sign-in redirect, or 503), before anything reaches the app. And on the way
//! upstream: the client's `Authorization` and any field it sent under a name the
//! sign-on service vouches for are removed, the service's fields added.

use std::net::{IpAddr, Ipv4Addr};

use http::{header, HeaderName, HeaderValue};
use log::warn;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::api_keys::{self, Denied, Found};
use super::context::RequestCtx;
use super::forwarded;
use super::limits;
use super::page::Reply;
use super::step::{answered, Checked, Step};
use crate::auth::{Outcome, RouteAccess, Verdict};
use crate::limits::client_bucket;
use crate::metrics::Reject;
use crate::state::{ActiveRoute, Shared};

/// Fields of the client's request never passed to the sign-on service: they describe
/// the client's connection or body, not who the client is, or they are the client's own
/// list of addresses (the gateway says which one it believes).
fn not_for_the_check(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "upgrade"
            | "expect"
            | "te"
            | "x-forwarded-for"
    )
}

/// Runs the route's checks, answering the client when one fails (and reading what it
/// still sends of its body, see `limits::discard_body`). On a pass, the request carries
/// who a login named and the fields the sign-on service vouched with.
pub async fn check(
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &ActiveRoute,
    shared: &Shared,
    reply: &Reply<'_>,
) -> Checked {
    let Some(access) = &route.access else {
        return Ok(Step::Next);
    };
    if api_keys::quick(session, ctx, access) {
        return Ok(Step::Next);
    }
    // Boxed: the checks' state (a sign-on request in flight) stays out of every public
    // route's request future.
    let step = Box::pin(checks(session, ctx, route, access, shared, reply)).await?;
    if let Step::Answered(_) = step {
        limits::discard_body(session).await;
    }
    Ok(step)
}

/// The allowlist, an API key (enough on its own when valid), the failed-login counter,
/// Basic credentials and the sign-on service, in this order.
async fn checks(
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &ActiveRoute,
    access: &RouteAccess,
    shared: &Shared,
    reply: &Reply<'_>,
) -> Checked {
    let client = ctx.client.unwrap_or(Ipv4Addr::UNSPECIFIED.into());
    if !access.allows(client) {
        let detail = format!("Your address may not use {}.", route.name);
        let forbidden = Some(Reject::Forbidden);
        return reply.answer(session, forbidden, 403, &detail, &[]).await;
    }
    // A key first: a valid one cannot have been guessed, so it is let through even from
    // an address blocked for failed logins (a NAT shared with someone guessing).
    if let Some(keys) = &access.keys {
        match api_keys::check(session, ctx, route, access, keys, client, reply).await {
            Found::Verified => return Ok(Step::Next),
            Found::Refused(step) => return step,
            Found::Nothing if access.basic.is_none() && access.forward.is_none() => {
                let missing = Denied::Missing;
                return api_keys::unauthorized(session, reply, &route.name, missing).await;
            }
            Found::Nothing => {}
        }
    }
    let blocked = match &access.failures {
        Some(failures) => failures.blocked(client).await,
        None => None,
    };
    if let Some(retry) = blocked {
        return too_many_failures(session, retry, reply).await;
    }
    let mut user = None;
    if let Some(basic) = &access.basic {
        let authorization = session.req_header().headers.get(header::AUTHORIZATION);
        let bucket = client_bucket(client, access.ipv6_prefix);
        let failures = access.failures.as_ref();
        match basic
            .check(authorization, bucket, failures, &shared.verifier)
            .await
        {
            Outcome::Allowed(name) => user = Some(name),
            Outcome::Busy => {
                let detail = "The login service is busy. Try again in a moment.";
                let busy = Some(Reject::AuthUnavailable);
                return reply.answer(session, busy, 503, detail, &[]).await;
            }
            Outcome::Blocked(retry) => return too_many_failures(session, retry, reply).await,
            Outcome::Missing | Outcome::Wrong => {
                let extra = [(header::WWW_AUTHENTICATE, basic.challenge.clone())];
                let detail = "This app needs a login.";
                return reply
                    .answer(session, Some(Reject::Auth), 401, detail, &extra)
                    .await;
            }
        }
    }
    let mut fields = Vec::new();
    if access.forward.is_some() {
        let verdict = sign_on(session, access, client, ctx.https, shared, reply).await?;
        fields = match verdict {
            Verdict::Allow(vouched) => vouched,
            other => return answer_sign_on(session, route, other, reply).await,
        };
        // The user the service vouches for: its first copied field named `…-user`
        // (oauth2-proxy's `X-Auth-Request-User`, Authelia's `Remote-User`).
        if let Some(name) = fields
            .iter()
            .find(|(name, _)| name.as_str().ends_with("-user"))
            .and_then(|(_, v)| v.to_str().ok())
        {
            user = Some(name.into());
        }
    }
    ctx.user = user;
    ctx.auth_fields = fields;
    Ok(Step::Next)
}

/// The sign-on service said no (or nothing): its own answer, a sign-in redirect, or 503.
async fn answer_sign_on(
    session: &mut Session,
    route: &ActiveRoute,
    verdict: Verdict,
    reply: &Reply<'_>,
) -> Checked {
    match verdict {
        Verdict::Allow(_) => Ok(Step::Next),
        Verdict::SignIn(location) => {
            let extra = [(header::LOCATION, location)];
            let detail = "Sign in to use this app.";
            reply
                .answer(session, Some(Reject::Auth), 302, detail, &extra)
                .await
        }
        Verdict::Answer(answer) => {
            let reason = match answer.status {
                403 => Reject::Forbidden,
                _ => Reject::Auth,
            };
            let written = reply
                .as_is(session, answer.status, &answer.headers, answer.body)
                .await;
            answered(Some(reason), written)
        }
        Verdict::Unavailable(why) => {
            let url = route.access.as_ref().and_then(|a| a.forward.as_ref());
            warn!(
                "event=forward_auth_unavailable route={} url={} error=\"{why}\"",
                route.name,
                url.map_or("", |f| f.url.as_str())
            );
            let detail = "The sign-in service is not answering. Try again shortly.";
            let unavailable = Some(Reject::AuthUnavailable);
            reply.answer(session, unavailable, 503, detail, &[]).await
        }
    }
}

/// 429: the client has used up its failed logins.
async fn too_many_failures(session: &mut Session, retry: u64, reply: &Reply<'_>) -> Checked {
    let detail = format!("Too many failed logins. Try again in {retry} s.");
    let extra = [(header::RETRY_AFTER, HeaderValue::from(retry))];
    let limited = Some(Reject::AuthRateLimit);
    reply.answer(session, limited, 429, &detail, &extra).await
}

/// Asks the route's sign-on service about this request.
async fn sign_on(
    session: &Session,
    access: &RouteAccess,
    client: IpAddr,
    https: bool,
    shared: &Shared,
    reply: &Reply<'_>,
) -> Result<Verdict> {
    let Some(forward) = &access.forward else {
        return Ok(Verdict::Unavailable("no service".into()));
    };
    let req = session.req_header();
    let mut check = forward.request()?;
    // Neither framing fields nor a client's own claim to the fields the service vouches
    // with (a naive service could believe them).
    for (name, value) in req.headers.iter() {
        if !not_for_the_check(name) && !forward.copied_fields().contains(name) {
            check.append_header(name.clone(), value.clone())?;
        }
    }
    let host = forwarded::client_host_value(req);
    let uri = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let original_url = format!(
        "{}://{}{uri}",
        if https { "https" } else { "http" },
        String::from_utf8_lossy(host.as_ref().map_or(&b""[..], |h| h.as_bytes()))
    );
    // The service hears of one address, the client's as the gateway decided it
    // (`trusted_proxies`): a rule on the left-most `X-Forwarded-For` entry (Authelia's)
    // then reads the real client, never a value the client wrote.
    let client_ip = Some(client);
    forwarded::apply(
        &mut check,
        client_ip,
        client_ip,
        https,
        host,
        reply.request_id(),
    )?;
    check.insert_header("x-forwarded-method", req.method.as_str())?;
    check.insert_header("x-forwarded-uri", uri)?;
    // nginx `auth_request` recipes (Authelia's legacy endpoint prefers these).
    check.insert_header("x-original-url", original_url.as_str())?;
    check.insert_header("x-original-method", req.method.as_str())?;
    let browser = req
        .headers
        .get(header::ACCEPT)
        .is_some_and(|a| a.to_str().is_ok_and(|a| a.contains("text/html")));
    Ok(forward
        .check(check, shared.connector(), &original_url, browser)
        .await)
}

/// `identity_header`: the client's own value removed (and, where another spelling can
/// arrive, any field an app reading CGI-style names would take for it: `Identity::cgi`),
/// then who a login, a key or the sign-on service vouched for, if anyone did.
pub fn identity(up: &mut RequestHeader, route: &ActiveRoute, vouched: Vouched) -> Result<()> {
    let Some(identity) = &route.identity else {
        return Ok(());
    };
    up.remove_header(&identity.name);
    if identity.cgi {
        let forged: Vec<HeaderName> = up
            .headers
            .keys()
            .filter(|k| same_to_cgi(k.as_str(), identity.name.as_str()))
            .cloned()
            .collect();
        for field in &forged {
            up.remove_header(field);
        }
    }
    let value = match vouched {
        Vouched::Key(value) => Some(value.clone()),
        Vouched::User(user) => HeaderValue::from_bytes(user.as_bytes()).ok(),
        Vouched::Nobody => None,
    };
    if let Some(value) = value {
        up.insert_header(identity.name.clone(), value)?;
    }
    Ok(())
}

/// Who a request's identity is: a key (its value made once), a user, or nobody.
pub enum Vouched<'a> {
    Key(&'a HeaderValue),
    User(&'a str),
    Nobody,
}

/// Whether two field names read the same once `-` and `_` are one (as `HTTP_X_USER`).
fn same_to_cgi(a: &str, b: &str) -> bool {
    let dash = |c: u8| if c == b'_' { b'-' } else { c };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| dash(x) == dash(y))
}

/// On the upstream request: removes what the client may not pass to the app (its
/// `Authorization` on a route with logins, unless `pass_authorization`; any field under
/// a name the sign-on service vouches for), then adds the service's `fields`.
pub fn upstream_fields(
    up: &mut RequestHeader,
    route: &ActiveRoute,
    fields: &[(HeaderName, HeaderValue)],
) -> Result<()> {
    let Some(access) = &route.access else {
        return Ok(());
    };
    let logins = access.basic.is_some() || access.forward.is_some() || access.keys.is_some();
    if logins && !access.pass_authorization && up.headers.contains_key(header::AUTHORIZATION) {
        up.remove_header(&header::AUTHORIZATION);
    }
    if let Some(forward) = &access.forward {
        for name in forward.copied_fields() {
            up.remove_header(name);
        }
    }
    for (name, value) in fields {
        up.append_header(name.clone(), value.clone())?;
    }
    Ok(())
}
