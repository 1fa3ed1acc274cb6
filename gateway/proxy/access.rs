//! The access checks of the proxy phases (see `crate::auth`): the allowlist (403), the
//! failed-login counter (429), Basic credentials (401) and the sign-on service (its
//! answer, a sign-in redirect, or 503), before anything reaches the app. And on the way
//! upstream: the client's `Authorization` and any field it sent under a name the
//! sign-on service vouches for are removed, the service's fields added.

use std::net::IpAddr;
use std::sync::Arc;

use http::{header, HeaderName, HeaderValue};
use log::warn;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::{forwarded, page};
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

/// The outcome of the access checks.
pub enum Access {
    /// Go on, as `user` (if a login named one), adding `fields` upstream.
    Pass {
        user: Option<Arc<str>>,
        fields: Vec<(HeaderName, HeaderValue)>,
    },
    /// The gateway has answered, for this reason.
    Answered(Reject),
}

/// Runs the route's checks, answering the client when one fails. `https`: the client's
/// scheme (see `forwarded::client_https`).
pub async fn check(
    session: &mut Session,
    route: &ActiveRoute,
    client: IpAddr,
    https: bool,
    shared: &Shared,
    request_id: &HeaderValue,
) -> Result<Access> {
    let Some(access) = &route.access else {
        return Ok(Access::Pass {
            user: None,
            fields: Vec::new(),
        });
    };
    if !access.allows(client) {
        let detail = format!("Your address may not use {}.", route.name);
        page::send(session, 403, &detail, &route.headers, &[], Some(request_id)).await?;
        return Ok(Access::Answered(Reject::Forbidden));
    }
    let blocked = match &access.failures {
        Some(failures) => failures.blocked(client).await,
        None => None,
    };
    if let Some(retry) = blocked {
        too_many_failures(session, route, retry, request_id).await?;
        return Ok(Access::Answered(Reject::AuthRateLimit));
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
                page::send(session, 503, detail, &route.headers, &[], Some(request_id)).await?;
                return Ok(Access::Answered(Reject::AuthUnavailable));
            }
            Outcome::Blocked(retry) => {
                too_many_failures(session, route, retry, request_id).await?;
                return Ok(Access::Answered(Reject::AuthRateLimit));
            }
            Outcome::Missing | Outcome::Wrong => {
                let extra = [(header::WWW_AUTHENTICATE, basic.challenge.clone())];
                let detail = "This app needs a login.";
                page::send(
                    session,
                    401,
                    detail,
                    &route.headers,
                    &extra,
                    Some(request_id),
                )
                .await?;
                return Ok(Access::Answered(Reject::Auth));
            }
        }
    }
    let mut fields = Vec::new();
    if let Some(forward) = &access.forward {
        match sign_on(session, access, client, https, shared, request_id).await? {
            Verdict::Allow(vouched) => fields = vouched,
            Verdict::SignIn(location) => {
                let extra = [(header::LOCATION, location)];
                let detail = "Sign in to use this app.";
                page::send(
                    session,
                    302,
                    detail,
                    &route.headers,
                    &extra,
                    Some(request_id),
                )
                .await?;
                return Ok(Access::Answered(Reject::Auth));
            }
            Verdict::Answer(answer) => {
                let reason = match answer.status {
                    403 => Reject::Forbidden,
                    _ => Reject::Auth,
                };
                page::send_as_is(
                    session,
                    answer.status,
                    &answer.headers,
                    answer.body,
                    &route.headers,
                    Some(request_id),
                )
                .await?;
                return Ok(Access::Answered(reason));
            }
            Verdict::Unavailable(why) => {
                warn!(
                    "event=forward_auth_unavailable route={} url={} error=\"{why}\"",
                    route.name, forward.url
                );
                let detail = "The sign-in service is not answering. Try again shortly.";
                page::send(session, 503, detail, &route.headers, &[], Some(request_id)).await?;
                return Ok(Access::Answered(Reject::AuthUnavailable));
            }
        }
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
    Ok(Access::Pass { user, fields })
}

/// 429: the client has used up its failed logins.
async fn too_many_failures(
    session: &mut Session,
    route: &ActiveRoute,
    retry: u64,
    request_id: &HeaderValue,
) -> Result<()> {
    let detail = format!("Too many failed logins. Try again in {retry} s.");
    let extra = [(header::RETRY_AFTER, HeaderValue::from(retry))];
    page::send(
        session,
        429,
        &detail,
        &route.headers,
        &extra,
        Some(request_id),
    )
    .await
}

/// Asks the route's sign-on service about this request.
async fn sign_on(
    session: &Session,
    access: &RouteAccess,
    client: IpAddr,
    https: bool,
    shared: &Shared,
    request_id: &HeaderValue,
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
    forwarded::apply(&mut check, client_ip, client_ip, https, host, request_id)?;
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
    let logins = access.basic.is_some() || access.forward.is_some();
    if logins && !access.pass_authorization {
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
