//! The small pages the gateway answers itself (404, 413, 429, 502, 504…): HTML, no
//! internal addresses, the request id for support, the route's security headers.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

/// Writes a complete response with a short explanation. `detail` is plain text and is
/// HTML-escaped here. `headers` are the route's (security) headers, `extra` those of this
/// answer (e.g. `Retry-After`).
pub async fn send(
    session: &mut Session,
    status: u16,
    detail: &str,
    headers: &[(HeaderName, HeaderValue)],
    extra: &[(HeaderName, HeaderValue)],
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    let body = Bytes::from(html(status, detail));
    let mut resp = ResponseHeader::build(status, Some(6 + headers.len() + extra.len()))?;
    resp.insert_header(http::header::CONTENT_TYPE, "text/html; charset=utf-8")?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    for (name, value) in headers.iter().chain(extra) {
        resp.insert_header(name, value.clone())?;
    }
    write(session, resp, body, request_id).await
}

/// Writes an answer made elsewhere (a sign-on service's 401, 403 or redirect) as it is,
/// the route's security headers added where it lacks them.
pub async fn send_as_is(
    session: &mut Session,
    status: u16,
    fields: &[(HeaderName, HeaderValue)],
    body: Bytes,
    headers: &[(HeaderName, HeaderValue)],
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(fields.len() + headers.len() + 2))?;
    for (name, value) in fields {
        resp.append_header(name, value.clone())?;
    }
    for (name, value) in headers {
        if !resp.headers.contains_key(name) {
            resp.insert_header(name, value.clone())?;
        }
    }
    write(session, resp, body, request_id).await
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
