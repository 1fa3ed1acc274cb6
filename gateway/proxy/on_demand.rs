//! The request's app, on a route with `app:` (crate::apps, docs/on-demand.md).
//!
//! Warm: the app is ready, the request counts itself in flight (two atomic operations)
//! and goes on. Cold: the app is started (or its start joined) and
//! - a browser navigation gets the waiting page (503, `Retry-After`, reloads itself);
//! - any other request is held, its body unread, until the app is ready, then goes on;
//!   at `start_timeout` it gets 504; over `max_waiting` held, 503 at once;
//! - a failed start answers 502 with its reason, and so does every request in the
//!   backoff that follows it;
//! - a request `wake` lists (a monitor, a favicon) never starts the app: 503.
//!
//! A pool whose replicas are each an app (`app: [A, B]`) goes on when one of them is
//! ready (the placement takes a ready one, `enter_replica`); when none is, all start
//! and the request waits for the first.

use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderValue};
use pingora::proxy::Session;

use super::context::RequestCtx;
use super::page::Reply;
use super::step::{answered, Checked, Step};
use super::waiting::wait_for_client;
use crate::apps::{page, App, State, Status};
use crate::metrics::Reject;
use crate::state::ActiveRoute;

/// `Retry-After` of a 504 after `start_timeout` and of a full waiting line.
const RETRY_LATER: u32 = 5;

/// Lets the request through to a ready app, or starts the app and waits (see above).
pub async fn admit(
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &ActiveRoute,
    reply: &Reply<'_>,
) -> Checked {
    if !route.replica_apps.is_empty() {
        return replicas(session, &route.replica_apps, reply).await;
    }
    let Some(app) = &route.app else {
        return Ok(Step::Next);
    };
    let quiet = wakes_nothing(session, app);
    if let Some(entered) = app.enter(quiet) {
        ctx.app = Some(entered);
        return Ok(Step::Next);
    }
    // Boxed: the wait's state stays out of every warm request's future.
    Box::pin(cold(session, ctx, app, quiet, reply)).await
}

/// A pool whose replicas are each a managed app (`app: [A, B]`): on at once when one is
/// ready (the placement takes a ready one, `enter_replica`); else every one of them is
/// started and the request waits for the first ready.
async fn replicas(session: &mut Session, apps: &[Arc<App>], reply: &Reply<'_>) -> Checked {
    if apps.iter().any(|a| a.state() == State::Ready) {
        return Ok(Step::Next);
    }
    Box::pin(cold_replicas(session, apps, reply)).await
}

async fn cold_replicas(session: &mut Session, apps: &[Arc<App>], reply: &Reply<'_>) -> Checked {
    let Some(first) = apps.first() else {
        return Ok(Step::Next);
    };
    let quiet = wakes_nothing(session, first);
    let limit = apps.iter().map(|a| a.spec.load().start_timeout).max();
    let deadline = tokio::time::Instant::now() + limit.unwrap_or_default();
    let mut statuses: Vec<_> = apps.iter().map(|a| a.status()).collect();
    let failures_before: Vec<u64> = statuses.iter().map(|s| s.borrow().failures).collect();
    let mut held = None;
    loop {
        let now: Vec<Status> = statuses
            .iter_mut()
            .map(|s| s.borrow_and_update().clone())
            .collect();
        if apps.iter().any(|a| a.state() == State::Ready) {
            return Ok(Step::Next);
        }
        let failed_since =
            |(i, s): (usize, &Status)| s.failures > failures_before[i] || backing_off(s);
        if now.iter().enumerate().all(failed_since) {
            return failed(session, first, &now[0], reply).await;
        }
        if quiet {
            let detail = format!("{} is not running.", first.name);
            return busy(session, Reject::AppStarting, &detail, page::REFRESH, reply).await;
        }
        for app in apps {
            app.demand();
        }
        if navigation(session) {
            return waiting_page(session, first, &now[0], reply).await;
        }
        if held.is_none() {
            held = first.hold();
            if held.is_none() {
                let detail = format!("{} is starting and its waiting line is full.", first.name);
                return busy(session, Reject::AppWaitingFull, &detail, RETRY_LATER, reply).await;
            }
        }
        let any =
            futures_util::future::select_all(statuses.iter_mut().map(|s| Box::pin(s.changed())));
        let changed = tokio::time::timeout_at(deadline, any);
        match wait_for_client(session, changed).await {
            Err(left) => return Err(left.into()),
            Ok(Ok((Ok(()), _, _))) => continue,
            Ok(Ok((Err(_), _, _))) | Ok(Err(_)) => return timed_out(session, first, reply).await,
        }
    }
}

/// Counts the request in flight on its replica's app (`app: [A, B]`); false when that
/// app closed between the placement and now (the request is placed again).
pub fn enter_replica(session: &Session, ctx: &mut RequestCtx, route: &ActiveRoute) -> bool {
    if route.replica_apps.is_empty() {
        return true;
    }
    let Some(lease) = &ctx.lease else {
        return true;
    };
    let Some(app) = route.pool.app_of(lease.replica()) else {
        return true;
    };
    match app.enter(wakes_nothing(session, app)) {
        Some(entered) => {
            ctx.app = Some(entered);
            true
        }
        None => false,
    }
}

/// A request `wake` says must neither start the app nor count as its use.
fn wakes_nothing(session: &Session, app: &App) -> bool {
    let spec = app.spec.load();
    let wake = &spec.wake;
    if wake.ignore_user_agents.is_empty() && wake.ignore_paths.is_empty() {
        return false;
    }
    let req = session.req_header();
    let agent = req
        .headers
        .get(header::USER_AGENT)
        .map(HeaderValue::as_bytes);
    wake.ignores(agent, req.uri.path())
}

/// A browser loading a page (a `GET` or `HEAD`: a form's `POST` is held, its body kept):
/// it gets the waiting page rather than a held request.
fn navigation(session: &Session) -> bool {
    let req = session.req_header();
    if req.method != http::Method::GET && req.method != http::Method::HEAD {
        return false;
    }
    let field = |name| req.headers.get(name).map(HeaderValue::as_bytes);
    if let Some(mode) = field(header::HeaderName::from_static("sec-fetch-mode")) {
        return mode.eq_ignore_ascii_case(b"navigate");
    }
    !session.as_downstream().is_upgrade_req()
        && field(header::ACCEPT).is_some_and(|accept| {
            accept
                .windows(9)
                .any(|w| w.eq_ignore_ascii_case(b"text/html"))
        })
}

async fn cold(
    session: &mut Session,
    ctx: &mut RequestCtx,
    app: &Arc<App>,
    quiet: bool,
    reply: &Reply<'_>,
) -> Checked {
    let spec = app.spec.load_full();
    let deadline = tokio::time::Instant::now() + spec.start_timeout;
    let mut status = app.status();
    let failures_before = status.borrow().failures;
    let mut held = None;
    loop {
        // The status first, then the state: the coordinator stores the state before it
        // publishes, so a Ready published after this read wakes `changed` below.
        let now = status.borrow_and_update().clone();
        if let Some(entered) = app.enter(quiet) {
            ctx.app = Some(entered);
            return Ok(Step::Next);
        }
        if now.state == State::Ready {
            // Closed for an instant (an idle check that found a request in flight and
            // opened it again): look again shortly, within the deadline.
            if tokio::time::Instant::now() >= deadline {
                return timed_out(session, app, reply).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            continue;
        }
        if now.failures > failures_before || backing_off(&now) {
            return failed(session, app, &now, reply).await;
        }
        if quiet {
            let detail = format!("{} is not running.", app.name);
            return busy(session, Reject::AppStarting, &detail, page::REFRESH, reply).await;
        }
        app.demand();
        if navigation(session) {
            return waiting_page(session, app, &now, reply).await;
        }
        if held.is_none() {
            held = app.hold();
            if held.is_none() {
                let detail = format!(
                    "{} is starting and {} requests already wait for it.",
                    app.name, spec.max_waiting
                );
                return busy(session, Reject::AppWaitingFull, &detail, RETRY_LATER, reply).await;
            }
        }
        let changed = tokio::time::timeout_at(deadline, status.changed());
        match wait_for_client(session, changed).await {
            Err(left) => return Err(left.into()),
            Ok(Ok(Ok(()))) => continue,
            // The coordinator is gone: only at exit.
            Ok(Ok(Err(_))) => return timed_out(session, app, reply).await,
            Ok(Err(_)) => return timed_out(session, app, reply).await,
        }
    }
}

fn backing_off(status: &Status) -> bool {
    status.state == State::Stopped && status.retry_at.is_some_and(|at| at > Instant::now())
}

/// 502 with the failed start's reason (504 when it was not ready within
/// `start_timeout`); `Retry-After` says when a start is tried again.
async fn failed(session: &mut Session, app: &App, status: &Status, reply: &Reply<'_>) -> Checked {
    if status.timed_out {
        return timed_out(session, app, reply).await;
    }
    let retry = status.retry_at.map_or(1, |at| {
        at.saturating_duration_since(Instant::now()).as_secs() + 1
    });
    let reason = status.failure.as_deref().unwrap_or("it stopped");
    let detail = format!(
        "{} could not start: {reason}. It is tried again on a request after {retry} s.",
        app.name
    );
    let extra = [(header::RETRY_AFTER, HeaderValue::from(retry))];
    let written = reply.page(session, 502, &detail, &extra).await;
    answered(Some(Reject::AppFailed), written)
}

async fn timed_out(session: &mut Session, app: &App, reply: &Reply<'_>) -> Checked {
    let limit = humantime::format_duration(app.spec.load().start_timeout);
    let detail = format!("{} was not ready within {limit}.", app.name);
    let extra = [(header::RETRY_AFTER, HeaderValue::from(RETRY_LATER))];
    let written = reply.page(session, 504, &detail, &extra).await;
    answered(Some(Reject::AppTimeout), written)
}

async fn busy(
    session: &mut Session,
    reason: Reject,
    detail: &str,
    retry: u32,
    reply: &Reply<'_>,
) -> Checked {
    let extra = [(header::RETRY_AFTER, HeaderValue::from(retry))];
    let written = reply.page(session, 503, detail, &extra).await;
    answered(Some(reason), written)
}

async fn waiting_page(
    session: &mut Session,
    app: &App,
    status: &Status,
    reply: &Reply<'_>,
) -> Checked {
    let body = bytes::Bytes::from(page::waiting(&app.name, status));
    let fields = [
        (header::RETRY_AFTER, HeaderValue::from(page::REFRESH)),
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ];
    let written = reply.as_is(session, 503, &fields, body).await;
    answered(Some(Reject::AppStarting), written)
}
