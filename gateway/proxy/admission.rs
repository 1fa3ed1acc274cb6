//! The admission checks of the proxy phases (see `crate::admission` for the rules): the
//! head's framing, target and size, the SNI/Host agreement (421), the first chunk of a
//! chunked body read before any upstream connection, and the head deadline's clock.
//! A refused request is answered with a short page and its connection closed.

use http::{header, HeaderName, HeaderValue};
use log::error;
use pingora::proxy::Session;
use pingora::Result;

use super::page;
use crate::admission::{Admission, Refusal};
use crate::deadline;
use crate::tls::{CertStore, Served};

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

/// The request is over: the connection's next bytes start a new head deadline.
pub fn request_over(session: &Session) {
    deadline::request_done(session.as_downstream().stream());
}

/// Framing, target and head size (see `Admission::check`).
pub fn check_head(session: &Session, admission: &Admission) -> std::result::Result<(), Refusal> {
    let raw = session
        .as_downstream()
        .as_http1()
        .map(|h1| h1.get_headers_raw_bytes());
    admission.check(session.req_header(), raw.as_deref())
}

/// 421 when the request's host is not one the connection's certificate was chosen for:
/// another SNI name, served by another certificate (domain fronting from one app to
/// another). Hosts sharing the certificate pass, as browsers coalesce their connections.
pub fn check_sni(
    session: &Session,
    host: &[u8],
    certs: &CertStore,
) -> std::result::Result<(), Refusal> {
    let served = session
        .digest()
        .and_then(|d| d.ssl_digest.as_ref())
        .and_then(|ssl| ssl.extension.get::<Served>());
    match served {
        Some(served) if !served.covers(host, certs) => Err(Refusal::Misdirected),
        _ => Ok(()),
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
pub async fn read_first_chunk(session: &mut Session) -> std::result::Result<(), Refusal> {
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
    let refusal = |e: Box<pingora::Error>| match e.etype() {
        pingora::ErrorType::ReadTimedout => Refusal::BodyTimeout,
        _ => Refusal::Framing("The chunked request body is malformed."),
    };
    let mut read = match session.read_request_body().await {
        Ok(Some(chunk)) => chunk.len(),
        Ok(None) => return Ok(()),
        Err(e) => return Err(refusal(e)),
    };
    // One read returns at most a TLS record; on plain TCP, up to Pingora's 64 KiB buffer.
    let most_per_read = match session.digest().and_then(|d| d.ssl_digest.as_ref()) {
        Some(_) => 16 << 10,
        None => 64 << 10,
    };
    while read + most_per_read <= RETRY_BUFFER {
        match super::poll_once(session.read_request_body()) {
            Some(Ok(Some(chunk))) => read += chunk.len(),
            Some(Ok(None)) | None => break,
            Some(Err(e)) => return Err(refusal(e)),
        }
    }
    if session.as_downstream().retry_buffer_truncated() {
        // Cannot happen: reads stop while one more could overflow the buffer (above).
        // Refused rather than forwarded without its start.
        error!("event=first_chunk_truncated");
        return Err(Refusal::Framing(
            "The chunked request body could not be read.",
        ));
    }
    Ok(())
}

/// Answers a refused request and closes its connection: after bad framing nothing else
/// on it can be trusted.
pub async fn refuse(
    session: &mut Session,
    refusal: Refusal,
    headers: &[(HeaderName, HeaderValue)],
    request_id: &HeaderValue,
) -> Result<()> {
    session.set_keepalive(None);
    page::send(
        session,
        refusal.status(),
        refusal.detail(),
        headers,
        &[],
        Some(request_id),
    )
    .await
}
