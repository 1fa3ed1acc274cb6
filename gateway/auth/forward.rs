//! `forward_auth`: an external service (oauth2-proxy, Authelia…) decides, like nginx's
//! `auth_request`. The proxy builds the check request (the client's headers, the
//! `X-Forwarded-*` fields, no body); this module sends it over a pooled connection and
//! turns the answer into a verdict. Anything but a clear answer is a refusal (503):
//! never an open door.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderName, HeaderValue};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use crate::config::ForwardAuth;

/// Most of an answer's body kept to pass on (a sign-in page or an error message).
const MAX_BODY: usize = 64 << 10;
/// Idle pooled connections to the service are kept this long.
const IDLE: Duration = Duration::from_secs(60);

/// What the service decided.
#[derive(Debug)]
pub enum Verdict {
    /// 2xx: forward the request, with these fields from the answer.
    Allow(Vec<(HeaderName, HeaderValue)>),
    /// 401 to a browser with `sign_in` set: redirect it there.
    SignIn(HeaderValue),
    /// 401, 403 or 3xx: send this answer to the client as it is.
    Answer(Answer),
    /// No answer in time, or one that means nothing (5xx, 404…): 503.
    Unavailable(String),
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

#[derive(Debug)]
pub struct Forward {
    peer: HttpPeer,
    /// `Host` of the check request: the service's own.
    host: HeaderValue,
    path: String,
    copy: Vec<HeaderName>,
    sign_in: Option<String>,
    timeout: Duration,
    /// The URL as configured, for logs.
    pub url: String,
}

impl Forward {
    pub fn build(settings: &ForwardAuth) -> Forward {
        let url = &settings.url;
        let mut peer = HttpPeer::new(url.addr, url.tls, url.host.clone());
        peer.options.connection_timeout = Some(settings.timeout);
        peer.options.read_timeout = Some(settings.timeout);
        peer.options.write_timeout = Some(settings.timeout);
        peer.options.idle_timeout = Some(IDLE);
        let default_port = if url.tls { 443 } else { 80 };
        let host = match url.addr.port() {
            p if p == default_port => url.host.clone(),
            p => format!("{}:{p}", url.host),
        };
        Forward {
            peer,
            host: HeaderValue::from_str(&host).unwrap_or(HeaderValue::from_static("localhost")),
            path: url.path.clone(),
            copy: settings.copy_headers.clone(),
            sign_in: settings.sign_in.clone(),
            timeout: settings.timeout,
            url: url.text.clone(),
        }
    }

    /// The fields a client may not set itself: removed from its request before the check
    /// (so a forged `X-Auth-Request-User` never reaches the app).
    pub fn copied_fields(&self) -> &[HeaderName] {
        &self.copy
    }

    /// The check request's line and `Host`, for the proxy to add the client's fields to.
    pub fn request(&self) -> pingora::Result<RequestHeader> {
        let mut req = RequestHeader::build("GET", self.path.as_bytes(), None)?;
        req.insert_header(header::HOST, self.host.clone())?;
        Ok(req)
    }

    /// Sends `req` and reads the verdict. `original_url` is the client's request as an
    /// absolute URL and `browser` whether it accepts HTML (for the sign-in redirect).
    pub async fn check(
        &self,
        req: RequestHeader,
        connector: &Connector,
        original_url: &str,
        browser: bool,
    ) -> Verdict {
        let answer = match tokio::time::timeout(self.timeout, self.exchange(req, connector)).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Verdict::Unavailable(e.to_string()),
            Err(_) => return Verdict::Unavailable(format!("no answer within {:?}", self.timeout)),
        };
        match answer.status {
            200..=299 => Verdict::Allow(
                self.copy
                    .iter()
                    .flat_map(|name| {
                        answer
                            .headers
                            .iter()
                            .filter(move |(n, _)| n == name)
                            .cloned()
                    })
                    .collect(),
            ),
            401 if browser && self.sign_in.is_some() => {
                let target = self
                    .sign_in
                    .as_deref()
                    .unwrap_or_default()
                    .replace("{url}", &escape(original_url));
                match HeaderValue::from_str(&target) {
                    Ok(location) => Verdict::SignIn(location),
                    Err(_) => Verdict::Unavailable("sign_in is not a valid Location".into()),
                }
            }
            300..=399 | 401 | 403 => Verdict::Answer(answer),
            status => Verdict::Unavailable(format!("the service answered {status}")),
        }
    }

    async fn exchange(&self, req: RequestHeader, connector: &Connector) -> pingora::Result<Answer> {
        let (mut session, _reused) = connector.get_http_session(&self.peer).await?;
        session.write_request_header(Box::new(req)).await?;
        session.finish_request_body().await?;
        session.read_response_header().await?;
        let (status, headers) = match session.response_header() {
            Some(resp) => (
                resp.status.as_u16(),
                resp.headers
                    .iter()
                    .filter(|(name, _)| !hop_by_hop(name))
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect::<Vec<_>>(),
            ),
            None => {
                return pingora::Error::e_explain(
                    pingora::ErrorType::InvalidHTTPHeader,
                    "no response header",
                )
            }
        };
        let mut body = BytesMut::new();
        let mut whole = true;
        while let Some(chunk) = session.read_response_body().await? {
            if body.len() + chunk.len() > MAX_BODY {
                whole = false;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        if whole && session.response_done() {
            connector
                .release_http_session(session, &self.peer, Some(IDLE))
                .await;
        }
        Ok(Answer {
            status,
            headers,
            body: body.freeze(),
        })
    }
}

/// Fields that describe one connection or one message's framing, never passed on.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "content-length"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

/// Everything but RFC 3986's unreserved characters (letters, digits, `-._~`).
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn escape(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, NOT_UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_a_url_for_a_query() {
        assert_eq!(
            super::escape("https://a.example/x?y=1&z=a b"),
            "https%3A%2F%2Fa.example%2Fx%3Fy%3D1%26z%3Da%20b"
        );
    }
}
