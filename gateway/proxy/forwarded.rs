//! Headers the gateway adds on the way to the upstream (`X-Forwarded-*`, `X-Real-IP`,
//! `X-Request-Id`) and the request id it keeps or makes.

use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::Result;

/// Longest client-sent `X-Request-Id` kept as is; longer or odd ones are replaced.
const MAX_REQUEST_ID: usize = 128;

/// The client's `X-Request-Id` when it is short and made of safe characters, else a
/// fresh UUID v4.
pub fn request_id(req: &RequestHeader) -> HeaderValue {
    if let Some(v) = req.headers.get("x-request-id") {
        let ok = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
        if !v.is_empty() && v.len() <= MAX_REQUEST_ID && v.as_bytes().iter().all(ok) {
            return v.clone();
        }
    }
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    HeaderValue::from_str(text).expect("a UUID is a valid header value")
}

/// The host the client addressed: `:authority` (HTTP/2) or `Host`, port included.
pub fn client_host(req: &RequestHeader) -> Option<&[u8]> {
    req.uri
        .authority()
        .map(|a| a.as_str().as_bytes())
        .or_else(|| {
            req.headers
                .get(http::header::HOST)
                .map(HeaderValue::as_bytes)
        })
}

/// Sets the forwarding headers on the upstream request. `client_ip` is the address the
/// request came from (the TCP peer).
pub fn apply(
    up: &mut RequestHeader,
    client_ip: Option<&str>,
    host: Option<&[u8]>,
    request_id: &HeaderValue,
) -> Result<()> {
    if let Some(ip) = client_ip {
        let forwarded_for = match joined(up, "x-forwarded-for") {
            Some(prior) => format!("{prior}, {ip}"),
            None => ip.to_string(),
        };
        up.insert_header("x-forwarded-for", forwarded_for)?;
        up.insert_header("x-real-ip", ip)?;
    } else {
        up.remove_header("x-real-ip");
    }
    up.insert_header("x-forwarded-proto", "https")?;
    match host {
        Some(h) => up.insert_header("x-forwarded-host", h)?,
        None => drop(up.remove_header("x-forwarded-host")),
    }
    up.insert_header("x-request-id", request_id.clone())?;
    Ok(())
}

/// All values of a header joined with ", " (a list header may be sent several times).
fn joined(req: &RequestHeader, name: &str) -> Option<String> {
    let mut values = req
        .headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok());
    let first = values.next()?.to_string();
    Some(values.fold(first, |mut acc, v| {
        acc.push_str(", ");
        acc.push_str(v);
        acc
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&'static str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in headers {
            r.append_header(*k, *v).unwrap();
        }
        r
    }

    #[test]
    fn keeps_a_sane_request_id_and_replaces_others() {
        assert_eq!(request_id(&req(&[("x-request-id", "abc-123")])), "abc-123");
        let fresh = request_id(&req(&[("x-request-id", "has space")]));
        assert_eq!(fresh.len(), 36);
        assert_eq!(request_id(&req(&[])).len(), 36);
    }

    #[test]
    fn appends_forwarded_for() {
        let mut up = req(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-real-ip", "6.6.6.6"),
        ]);
        let id = HeaderValue::from_static("id");
        apply(&mut up, Some("10.0.0.1"), Some(b"a.example:8443"), &id).unwrap();
        assert_eq!(up.headers["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(up.headers["x-real-ip"], "10.0.0.1");
        assert_eq!(up.headers["x-forwarded-proto"], "https");
        assert_eq!(up.headers["x-forwarded-host"], "a.example:8443");
        assert_eq!(up.headers["x-request-id"], "id");
    }
}
