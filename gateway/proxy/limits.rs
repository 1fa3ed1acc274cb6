//! The limit checks of the proxy phases: a declared body over `max_body` (413 before any
//! byte goes upstream), the rate limit (429), the streamed body count (413 and an
//! aborted upstream request), and the body's pace (408 and an aborted upstream request:
//! `limits.body_timeout`, `limits.body_min_rate`). Every answer here is made before the
//! app does any work, or stops the work it was doing for nobody.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use http::{header, HeaderName, HeaderValue};
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};

use super::context::RequestCtx;
use super::page::Reply;
use super::step::{Checked, Step};
use crate::limits::{RateLimiter, Verdict};
use crate::metrics::Reject;
use crate::state::ActiveRoute;
use crate::state::BodyDeadline;

/// Longest the gateway keeps reading a rejected body so the client sees the answer.
const LINGER: Duration = Duration::from_secs(5);
/// What an HTTP/2 stream may still send after an early answer before it is let go.
const H2_DRAIN: usize = 256 << 10;

/// The request's declared body length, when it has a valid one.
fn content_length(session: &Session) -> Option<u64> {
    let value = session.req_header().headers.get(header::CONTENT_LENGTH)?;
    value.to_str().ok()?.trim().parse().ok()
}

/// After an early answer (413, 429), reads and discards what the client is still sending
/// of its body, for at most `LINGER`.
///
/// HTTP/1.1: closing with unread bytes in the socket makes the kernel send a reset, which
/// destroys the answer before the client reads it (nginx's `lingering_close` solves the
/// same problem). A body read to its end leaves the connection reusable; otherwise it is
/// closed.
///
/// HTTP/2: when the stream is let go, h2 resets it with `NO_ERROR` after the answer, as
/// RFC 9113 §8.1 says. Let go at once, the reset leaves in the same write as the answer,
/// and curl 7.88 (Debian 12's) closes the stream before it reads the status: exit 92, no
/// 413. Drained, the stream ends when the client stops sending (curl does on the answer)
/// or finishes, and its reset comes after the answer was read. At most `H2_DRAIN` bytes:
/// past them the stream is let go (a client that keeps sending after an answer is not
/// reading it), so a refused client cannot keep a hundred streams busy for 5 s each.
///
/// An `Expect: 100-continue` client that has not started its body will not send it: the
/// connection is closed at once instead.
pub async fn discard_body(session: &mut Session) {
    let expects_continue = session
        .req_header()
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue && session.as_downstream().body_bytes_read() == 0 {
        session.set_keepalive(None);
        return;
    }
    let deadline = tokio::time::Instant::now() + LINGER;
    let limit = match session.as_downstream().is_http2() {
        true => H2_DRAIN,
        false => usize::MAX,
    };
    let mut drained = 0usize;
    loop {
        match tokio::time::timeout_at(deadline, session.read_request_body()).await {
            Ok(Ok(Some(chunk))) => {
                drained = drained.saturating_add(chunk.len());
                if drained > limit {
                    return;
                }
            }
            Ok(Ok(None)) => return,
            Ok(Err(_)) | Err(_) => {
                session.set_keepalive(None);
                return;
            }
        }
    }
}

/// 413 when the declared `Content-Length` is over the route's limit. An `Expect:
/// 100-continue` client gets this instead of the 100 and never sends the body.
pub async fn declared_body(
    session: &mut Session,
    route: &ActiveRoute,
    reply: &Reply<'_>,
) -> Checked {
    let (Some(max), Some(len)) = (route.max_body, content_length(session)) else {
        return Ok(Step::Next);
    };
    if len <= max {
        return Ok(Step::Next);
    }
    let detail = too_large(&route.name, max);
    let too_large = Some(Reject::BodyTooLarge);
    let step = reply.answer(session, too_large, 413, &detail, &[]).await?;
    discard_body(session).await;
    Ok(step)
}

/// Takes a token from the route's limiter, answering 429 when there is none. A request
/// that passes carries the limiter's word for the response's `RateLimit` field.
pub async fn rate(
    session: &mut Session,
    ctx: &mut RequestCtx,
    route: &ActiveRoute,
    reply: &Reply<'_>,
) -> Checked {
    let Some(limiter) = &route.rate_limit else {
        return Ok(Step::Next);
    };
    let header = match limiter.by_api_key() {
        true => ctx.key.as_ref().map(|key| key.name.as_bytes()),
        false => limiter
            .key_header()
            .and_then(|name| session.req_header().headers.get(name))
            .map(HeaderValue::as_bytes),
    };
    let client = ctx.client.unwrap_or(Ipv4Addr::UNSPECIFIED.into());
    let verdict = limiter.check(client, header).await;
    let Some(Verdict::Limited { retry_after }) = verdict else {
        ctx.rate = verdict;
        return Ok(Step::Next);
    };
    let detail = format!(
        "Too many requests to route {}. Try again in {retry_after} s.",
        route.name
    );
    let step = too_many(session, limiter, retry_after, &detail, reply).await?;
    discard_body(session).await;
    Ok(step)
}

/// 429 from `limiter`: `Retry-After` and the `RateLimit` fields.
pub async fn too_many(
    session: &mut Session,
    limiter: &RateLimiter,
    retry_after: u64,
    detail: &str,
    reply: &Reply<'_>,
) -> Checked {
    let verdict = Verdict::Limited { retry_after };
    let extra = [
        (header::RETRY_AFTER, HeaderValue::from(retry_after)),
        (policy_name(), limiter.policy_header().clone()),
        (ratelimit_name(), verdict.header()),
    ];
    let limited = Some(Reject::RateLimit);
    reply.answer(session, limited, 429, detail, &extra).await
}

/// The HTTP/1.1 body's silence limit: a read of the body that waits `timeout` for a byte
/// fails (Pingora's read timeout on the client's side; `failure` answers 408). Pingora
/// reads the body only as fast as the app takes it, so an app that is slow to read does
/// not count against the client. HTTP/2 streams have no such read timeout in Pingora
/// 0.9: their bodies are held to `min_rate` only (`check_pace`).
pub fn body_deadline(session: &mut Session, deadline: &BodyDeadline) {
    session
        .as_downstream_mut()
        .set_read_timeout(Some(deadline.timeout));
}

/// The body's pace: once `timeout` has passed since its first byte came, it must have
/// come at `min_rate` bytes per second on average.
/// Slower, the request fails with 408, which aborts the upstream request; a body that
/// trickles a byte every few seconds never holds the app's connection for long.
pub fn check_pace(deadline: &BodyDeadline, since: Instant, seen: u64) -> Result<()> {
    let Some(rate) = deadline.min_rate else {
        return Ok(());
    };
    let elapsed = since.elapsed();
    if elapsed <= deadline.timeout || seen as f64 >= rate as f64 * elapsed.as_secs_f64() {
        return Ok(());
    }
    Error::e_explain(
        ErrorType::HTTPStatus(408),
        format!("request body below body_min_rate ({rate} bytes/s): {seen} bytes in {elapsed:?}"),
    )
}

/// Counts a streamed body chunk; past `max_body` the request fails with 413, which
/// aborts the upstream request mid-body (the app sees a broken upload, never a
/// complete one) and answers the client if its response has not started.
pub fn count_body(
    session: &Session,
    route: &ActiveRoute,
    seen: &mut u64,
    chunk: Option<&bytes::Bytes>,
) -> Result<()> {
    // After a WebSocket upgrade the "body" is the socket's traffic, not an upload.
    let Some(chunk) = chunk.filter(|_| !session.was_upgraded()) else {
        return Ok(());
    };
    *seen += chunk.len() as u64;
    let Some(max) = route.max_body else {
        return Ok(());
    };
    if *seen > max {
        return Error::e_explain(
            ErrorType::HTTPStatus(413),
            format!("request body over max_body ({max} bytes)"),
        );
    }
    Ok(())
}

/// The explanation on a 413 page.
pub fn too_large(route: &str, max: u64) -> String {
    format!(
        "The request body is larger than the {} that route {route} accepts.",
        human_size(max)
    )
}

/// Adds the rate-limit fields to an allowed response: the route's limiter's, else the
/// API key's.
pub fn response_headers(
    resp: &mut pingora::http::ResponseHeader,
    route: &ActiveRoute,
    ctx: &RequestCtx,
) -> Result<()> {
    let limiter = match (&route.rate_limit, &ctx.key) {
        (Some(limiter), _) => Some((limiter, &ctx.rate)),
        (None, Some(key)) => key.rate.as_ref().map(|limiter| (limiter, &ctx.key_rate)),
        (None, None) => None,
    };
    if let Some((limiter, Some(verdict))) = limiter {
        resp.insert_header(policy_name(), limiter.policy_header().clone())?;
        resp.insert_header(ratelimit_name(), verdict.header())?;
    }
    Ok(())
}

fn policy_name() -> HeaderName {
    HeaderName::from_static("ratelimit-policy")
}

fn ratelimit_name() -> HeaderName {
    HeaderName::from_static("ratelimit")
}

/// `1 GiB`, `500 MiB`, `1536 KiB`, `100 bytes`: exact, in the largest unit that divides.
fn human_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    UNITS
        .iter()
        .find(|(size, _)| bytes.is_multiple_of(*size))
        .map(|(size, unit)| format!("{} {unit}", bytes / size))
        .unwrap_or_else(|| format!("{bytes} bytes"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_read_like_the_config() {
        assert_eq!(super::human_size(1 << 30), "1 GiB");
        assert_eq!(super::human_size(500 << 20), "500 MiB");
        assert_eq!(super::human_size(1536 << 10), "1536 KiB");
        assert_eq!(super::human_size(1000), "1000 bytes");
    }
}
