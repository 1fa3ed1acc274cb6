//! The admission checks of the proxy phases (see `crate::admission` for the rules): the
//! head's framing, target and size, the SNI/Host agreement (421), the first chunk of a
//! chunked body read before any upstream connection, and the head deadline's clock.
//! A refused request is answered with a short page and its connection closed.

use arc_swap::ArcSwap;
use http::header;
use log::error;
use pingora::proxy::Session;

use super::forwarded::client_host;
use super::page::Reply;
use super::step::{Checked, Step};
use crate::admission::{Admission, Fault};
use crate::deadline;
use crate::tls::{CertStore, Served};

/// Idle time allowed between requests on a client's keep-alive connection (nginx: 75 s),
/// HTTP/1.1 and HTTP/2. Pingora's default keeps idle connections forever.
pub const DOWNSTREAM_KEEPALIVE_SECS: u64 = 75;

/// Pingora's retry buffer, which keeps what is read of a body before the app is
/// connected: reads stop while one more could overflow it.
const RETRY_BUFFER: usize = 64 << 10;

/// A request head has been read: the head deadline stops for this request.
pub fn head_read(session: &Session) {
    deadline::head_done(session.as_downstream().stream());
}

/// HTTP/1.1 requests sent before the previous answer (pipelining, RFC 9112 9.3.2) are
/// answered in order. Pingora's default reads them with the first request and then
/// drops them with the connection: the client waits for answers that never come.
pub fn serve_pipelined(session: &mut Session) {
    session.as_downstream_mut().set_pipelining_enabled(true);
}

/// A keep-alive connection may then idle `DOWNSTREAM_KEEPALIVE_SECS` before its next
/// request (Pingora's default keeps it forever).
pub fn keep_alive(session: &mut Session) {
    if session.get_keepalive().is_some() {
        session.set_keepalive(Some(DOWNSTREAM_KEEPALIVE_SECS));
    }
}

/// The request is over: the connection's next bytes start a new head deadline.
pub fn request_over(session: &Session) {
    deadline::request_done(session.as_downstream().stream());
}

/// Framing, target and head size (see `Admission::check`).
pub async fn check_head(
    session: &mut Session,
    admission: &Admission,
    reply: &Reply<'_>,
) -> Checked {
    let raw = session
        .as_downstream()
        .as_http1()
        .map(|h1| h1.get_headers_raw_bytes());
    match admission.check(session.req_header(), raw.as_deref()) {
        Ok(()) => Ok(Step::Next),
        Err(fault) => reject(session, fault, reply).await,
    }
}

/// 421 when the request's host is not one the connection's certificate was chosen for:
/// another SNI name, served by another certificate (domain fronting from one app to
/// another). Hosts sharing the certificate pass, as browsers coalesce their connections.
pub async fn check_sni(
    session: &mut Session,
    certs: &ArcSwap<CertStore>,
    reply: &Reply<'_>,
) -> Checked {
    let host = client_host(session.req_header()).unwrap_or_default();
    let served = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|ssl| ssl.extension.get::<Served>());
    // The certificates are looked at, not held while the answer is written.
    let misdirected = served.is_some_and(|served| !served.covers(host, &certs.load()));
    match misdirected {
        true => reject(session, Fault::Misdirected, reply).await,
        false => Ok(Step::Next),
    }
}

/// For a chunked HTTP/1.1 body, reads the first chunk now, before any upstream
/// connection, and every further chunk that has already arrived with it (within
/// `RETRY_BUFFER`): malformed framing there (a bad size, bare line feeds) then reaches no
/// app at all. What is read is kept in Pingora's retry buffer, which the proxy sends
/// upstream before the rest of the body. Later chunks are checked as they stream: a
/// malformed one aborts the upstream request, which the app sees as a broken body,
/// never as a complete one.
///
/// Skipped for `Expect: 100-continue`: such a client waits for the app's 100 before it
/// sends any chunk.
pub async fn read_first_chunk(session: &mut Session, reply: &Reply<'_>) -> Checked {
    match first_chunk(session).await {
        Ok(()) => Ok(Step::Next),
        Err(fault) => reject(session, fault, reply).await,
    }
}

async fn first_chunk(session: &mut Session) -> std::result::Result<(), Fault> {
    let req = session.req_header();
    let chunked = req.headers.contains_key(header::TRANSFER_ENCODING);
    let expects_continue = req
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !chunked || expects_continue || session.as_downstream().as_http1().is_none() {
        return Ok(());
    }
    session.as_downstream_mut().enable_retry_buffering();
    let fault = |e: Box<pingora::Error>| match e.etype() {
        pingora::ErrorType::ReadTimedout => Fault::BodyTimeout,
        _ => Fault::Framing("The chunked request body is malformed."),
    };
    let mut read = match session.read_request_body().await {
        Ok(Some(chunk)) => chunk.len(),
        Ok(None) => return Ok(()),
        Err(e) => return Err(fault(e)),
    };
    // One read returns at most a TLS record; on plain TCP, up to Pingora's 64 KiB buffer.
    let most_per_read = match session.digest().and_then(|d| d.ssl_digest.as_ref()) {
        Some(_) => 16 << 10,
        None => 64 << 10,
    };
    while read + most_per_read <= RETRY_BUFFER {
        match super::context::poll_once(session.read_request_body()) {
            Some(Ok(Some(chunk))) => read += chunk.len(),
            Some(Ok(None)) | None => break,
            Some(Err(e)) => return Err(fault(e)),
        }
    }
    if session.as_downstream().retry_buffer_truncated() {
        // Cannot happen: reads stop while one more could overflow the buffer (above).
        // Refused rather than forwarded without its start.
        error!("event=first_chunk_truncated");
        return Err(Fault::Framing(
            "The chunked request body could not be read.",
        ));
    }
    Ok(())
}

/// Answers a request rejected at the door and closes its connection: after bad framing
/// nothing else on it can be trusted.
pub async fn reject(session: &mut Session, fault: Fault, reply: &Reply<'_>) -> Checked {
    session.set_keepalive(None);
    let reason = Some(fault.reason());
    reply
        .answer(session, reason, fault.status(), fault.detail(), &[])
        .await
}
