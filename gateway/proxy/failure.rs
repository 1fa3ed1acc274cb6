//! `fail_to_proxy`: the page a failed request gets (413, 502, 504, or 503 when every
//! replica turned out to be down) and the status it is recorded with.

use log::debug;
use pingora::proxy::{FailToProxy, Session};
use pingora::{Error, ErrorSource, ErrorType};

use super::context::RequestCtx;
use super::{limits, upstream};
use crate::conn::upload::UploadWatch;
use crate::pool::Unavailable;

/// Answers a request that failed before its response started.
pub async fn answer(session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
    let mut code = status_for(e);
    if let Some(cut) = ctx.upload.as_ref().and_then(UploadWatch::cut) {
        code = cut.status();
    }
    if code == 408 {
        ctx.reason = Some(crate::metrics::Reject::BodyTimeout);
    }
    // After an informational answer (the app's `100 Continue`) a final one may follow.
    let answered = session
        .response_written()
        .is_some_and(|r| !r.status.is_informational());
    if code > 0 && !answered {
        // The connection ends after this answer (`can_reuse_downstream` below): say so,
        // or a client may send its next request into the closing connection.
        session.set_keepalive(None);
        if let Some(route) = upstream::all_down(ctx).filter(|_| code == 502 || code == 504) {
            // The connect failed and no replica is left: the app is starting or down.
            code = 503;
            let reply = ctx.reply();
            let down = upstream::unavailable(session, &route, Unavailable::Down, &reply);
            if let Err(e) = down.await {
                debug!("event=error_page_failed error={e}");
            }
            return FailToProxy {
                error_code: code,
                can_reuse_downstream: false,
            };
        }
        let name = ctx.route.as_ref().map_or("this app", |r| r.name.as_str());
        let detail = match (code, ctx.route.as_ref().and_then(|r| r.max_body)) {
            (413, Some(max)) => limits::too_large(name, max),
            (502, _) => {
                format!("The app for route {name} is not answering. Try again shortly.")
            }
            (504, _) => format!("The app for route {name} took too long to answer."),
            _ => String::new(),
        };
        if let Err(e) = ctx.reply().page(session, code, &detail, &[]).await {
            debug!("event=error_page_failed error={e}");
        } else if code == 413 {
            limits::discard_body(session).await;
        }
    }
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}

/// The status a failed request gets: ours for `HTTPStatus`, 504 for an upstream timeout,
/// 502 for other upstream failures, 0 when the client is gone.
pub fn status_for(e: &Error) -> u16 {
    use ErrorType::*;
    match (e.etype(), e.esource()) {
        (HTTPStatus(code), _) => *code,
        // The client's side timed out mid-body (`limits::body_deadline`).
        (ReadTimedout, ErrorSource::Downstream) => 408,
        (
            ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout,
            ErrorSource::Upstream,
        ) => 504,
        (_, ErrorSource::Upstream) => 502,
        (ReadError | WriteError | ConnectionClosed, ErrorSource::Downstream) => 0,
        (_, ErrorSource::Downstream) => 400,
        _ => 500,
    }
}
