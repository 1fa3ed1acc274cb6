//! The small pages the gateway answers itself (404, 413, 429, 502, 504…): HTML, no
//! internal addresses, the request id for support, the route's security headers. Every
//! answer of one request goes out through its `Reply`, which holds those last two.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use super::step::{answered, Checked};
use crate::metrics::Reject;

/// How the gateway answers one request itself: with the route's security headers (the
/// listener's when no route matched) and the request id.
#[derive(Clone, Copy)]
pub struct Reply<'a> {
    headers: &'a [(HeaderName, HeaderValue)],
    request_id: Option<&'a HeaderValue>,
}

impl<'a> Reply<'a> {
    pub fn new(
        headers: &'a [(HeaderName, HeaderValue)],
        request_id: Option<&'a HeaderValue>,
    ) -> Reply<'a> {
        Reply {
            headers,
            request_id,
        }
    }

    /// The request id the answers carry.
    pub fn request_id(&self) -> Option<&'a HeaderValue> {
        self.request_id
    }

    /// Answers for `reason` with a page (see `page`).
    pub async fn answer(
        &self,
        session: &mut Session,
        reason: Option<Reject>,
        status: u16,
        detail: &str,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Checked {
        answered(reason, self.page(session, status, detail, extra).await)
    }

    /// Writes a complete response with a short explanation. `detail` is plain text and
    /// is HTML-escaped here; `extra` are the fields of this answer (e.g. `Retry-After`).
    pub async fn page(
        self,
        session: &mut Session,
        status: u16,
        detail: &str,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<()> {
        let body = Bytes::from(html(status, detail));
        let capacity = 6 + self.headers.len() + extra.len();
        let mut resp = ResponseHeader::build(status, Some(capacity))?;
        resp.insert_header(http::header::CONTENT_TYPE, "text/html; charset=utf-8")?;
        resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
        for (name, value) in self.headers.iter().chain(extra) {
            resp.insert_header(name, value.clone())?;
        }
        write(session, resp, body, self.request_id).await
    }

    /// Writes an answer made elsewhere (a sign-on service's 401, 403 or redirect, an ACME
    /// challenge's) as it is, the security headers added where it lacks them.
    pub async fn as_is(
        self,
        session: &mut Session,
        status: u16,
        fields: &[(HeaderName, HeaderValue)],
        body: Bytes,
    ) -> Result<()> {
        let capacity = fields.len() + self.headers.len() + 2;
        let mut resp = ResponseHeader::build(status, Some(capacity))?;
        for (name, value) in fields {
            resp.append_header(name, value.clone())?;
        }
        for (name, value) in self.headers {
            if !resp.headers.contains_key(name) {
                resp.insert_header(name, value.clone())?;
            }
        }
        write(session, resp, body, self.request_id).await
    }
}

/// Sends `resp` (with its length and the request id) and `body`, unless the request was
/// a HEAD.
async fn write(
    session: &mut Session,
    mut resp: ResponseHeader,
    body: Bytes,
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    if let Some(id) = request_id {
        resp.insert_header("x-request-id", id.clone())?;
    }
    let head_only = session.req_header().method == http::Method::HEAD || body.is_empty();
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

fn html(status: u16, detail: &str) -> String {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{status} {reason}</title></head>\n\
         <body><h1>{status} {reason}</h1>\n<p>{}</p>\n</body></html>\n",
        escape(detail)
    )
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_detail() {
        let page = super::html(404, "no route for <script>");
        assert!(page.contains("<title>404 Not Found</title>"));
        assert!(page.contains("no route for &lt;script&gt;"));
    }
}
