//! The request's replica: placed once the request is admitted (`pool::Pool::place`,
//! which may wait in the route's queue), connected through its prebuilt peer, replaced
//! once when the connect fails, and named in the sticky cookie of the response.

use std::sync::Arc;

use http::header;
use http::HeaderValue;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};

use super::context::RequestCtx;
use super::page::Reply;
use super::step::{answered, Checked, Step};
use super::waiting::wait_for_client;
use super::{limits, observe, on_demand};
use crate::metrics::Reject;
use crate::pool::{Pending, Placed, Pool, Unavailable};
use crate::state::ActiveRoute;

/// Places the request on a replica of its route, or answers 503 when none can be given.
pub async fn place(
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &ActiveRoute,
    reply: &Reply<'_>,
) -> Checked {
    let client = ctx.client.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let placed = match route.pool.place(session.req_header(), client) {
        Ok(placed) => Ok(placed),
        Err(Pending::Unavailable(why)) => Err(why),
        // Boxed: the queue's state stays out of every other request's future.
        Err(Pending::Wait(waiting)) => {
            Box::pin(wait_for_client(session, route.pool.wait(waiting))).await?
        }
    };
    match placed {
        Ok(placed) => match take(session, ctx, route, placed) {
            true => Ok(Step::Next),
            // Its replica's app closed a moment ago (an idle stop): placed again, among
            // the replicas whose app is ready.
            false => Box::pin(place_again(session, ctx, route, reply)).await,
        },
        Err(why) => refuse(session, route, why, reply).await,
    }
}

/// Takes the placed replica and, for a replica that is a managed app (`app: [A, B]`),
/// counts the request in flight on that app; false when the app closed a moment ago.
fn take(session: &Session, ctx: &mut RequestCtx, route: &ActiveRoute, placed: Placed) -> bool {
    ctx.lease = Some(placed.lease);
    ctx.set_cookie = placed.set_cookie;
    if on_demand::enter_replica(session, ctx, route) {
        return true;
    }
    ctx.lease = None;
    false
}

/// `place` once more, after the app of the replica first placed closed: a few tries,
/// then the "starting or down" page.
async fn place_again(
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &ActiveRoute,
    reply: &Reply<'_>,
) -> Checked {
    let client = ctx.client.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    for _ in 0..3 {
        if let Ok(placed) = route.pool.place(session.req_header(), client) {
            if take(session, ctx, route, placed) {
                return Ok(Step::Next);
            }
        }
    }
    refuse(session, route, Unavailable::Down, reply).await
}

/// The 503 for `why`, the rest of the body read and dropped.
async fn refuse(
    session: &mut Session,
    route: &ActiveRoute,
    why: Unavailable,
    reply: &Reply<'_>,
) -> Checked {
    let written = unavailable(session, route, why, reply).await;
    let step = answered(Some(reason(why)), written)?;
    limits::discard_body(session).await;
    Ok(step)
}

fn reason(why: Unavailable) -> Reject {
    match why {
        Unavailable::Down => Reject::UpstreamDown,
        Unavailable::Full => Reject::QueueFull,
        Unavailable::Timeout => Reject::QueueTimeout,
    }
}

/// The 503 page: the app is busy (queue) or starting or down, with `Retry-After`.
pub async fn unavailable(
    session: &mut Session,
    route: &ActiveRoute,
    why: Unavailable,
    reply: &Reply<'_>,
) -> Result<()> {
    let retry = route.pool.retry_after(why);
    let name = &route.name;
    let detail = match why {
        Unavailable::Down => {
            format!("The app for route {name} is starting or down. Try again in {retry} s.")
        }
        Unavailable::Full | Unavailable::Timeout => {
            format!("The app for route {name} is busy with other requests. Try again in {retry} s.")
        }
    };
    let extra = [(header::RETRY_AFTER, HeaderValue::from(retry))];
    reply.page(session, 503, &detail, &extra).await
}

/// The placed replica's connection settings.
pub fn peer(ctx: &RequestCtx) -> Result<Box<HttpPeer>> {
    match (&ctx.route, &ctx.lease) {
        (Some(route), Some(lease)) => Ok(Box::new(route.pool.peer(lease.replica()))),
        _ => Error::e_explain(ErrorType::InternalError, "upstream_peer without a replica"),
    }
}

/// A connect to the placed replica failed: it is ejected, and the request (which the
/// app never saw) is retried once on another replica, if one is up with room. With none
/// and every replica now down, the request gets the "starting or down" page.
pub fn connect_failed(ctx: &mut RequestCtx, mut e: Box<Error>) -> Box<Error> {
    let (Some(route), Some(lease)) = (ctx.route.clone(), ctx.lease.take()) else {
        return e;
    };
    let pool: &Pool = &route.pool;
    let failed = lease.replica().clone();
    let kind = observe::upstream_kind(&e);
    if failed.connect_failed(
        &format!("connect failed: {}", e.etype().as_str()),
        pool.passive_retry(),
    ) {
        pool.health_changed(&failed);
    }
    // Given back before the retry takes a slot.
    drop(lease);
    if !ctx.retried {
        if let Some(placed) = pool.replace(&failed) {
            ctx.retried = true;
            if let Some(m) = &ctx.metrics {
                m.upstream_error(kind);
            }
            log::info!(
                "event=upstream_retry route={} failed={} retry={} error_type={}",
                route.name,
                failed.addr,
                placed.lease.replica().addr,
                e.etype().as_str()
            );
            let placed_replica = &placed.lease.replica().clone();
            ctx.lease = Some(placed.lease);
            ctx.set_cookie = placed.set_cookie;
            // The other replica's app (`app: [A, B]`), if it is one.
            ctx.app = None;
            if let Some(app) = route.pool.app_of(placed_replica) {
                ctx.app = app.enter(false);
            }
            e.set_retry(true);
            return e;
        }
    }
    if !pool.replicas().any(|r| r.serving()) {
        ctx.all_down = true;
    }
    ctx.failed = Some(failed);
    e.set_retry(false);
    e
}

/// A connect worked: a replica on trial (no active checks) is back.
pub fn connected(ctx: &RequestCtx) {
    if let (Some(route), Some(lease)) = (&ctx.route, &ctx.lease) {
        let replica = lease.replica();
        if !replica.is_up() && route.pool.passive_retry().is_some() && replica.connected() {
            route.pool.health_changed(replica);
        }
    }
}

/// The sticky cookie on the response, when the request did not carry it; without its
/// `Secure` attribute for a client on plain HTTP (a browser would refuse it).
pub fn response(resp: &mut ResponseHeader, ctx: &RequestCtx) -> Result<()> {
    if let Some(cookie) = &ctx.set_cookie {
        let cookie = match ctx.https {
            true => cookie.clone(),
            false => crate::pool::Sticky::for_plain_http(cookie),
        };
        resp.append_header(header::SET_COOKIE, cookie)?;
    }
    Ok(())
}

/// Whether a failed request should get the "starting or down" page instead of a 502.
pub fn all_down(ctx: &RequestCtx) -> Option<Arc<ActiveRoute>> {
    ctx.all_down.then(|| ctx.route.clone()).flatten()
}
