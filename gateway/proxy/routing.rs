//! Finding a request's route by host, then path, and the gateway's own answers when
//! there is none: `301` to a path route's prefix, `404` for a host or path nobody
//! serves, `400` for a request without a host or with a path that reads as another
//! route's once decoded.

use std::sync::Arc;

use http::HeaderValue;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

use super::forwarded::client_host;
use super::page::Reply;
use super::step::{answered, Checked, Step};
use crate::metrics::Reject;
use crate::router::{origin_form, request_path, PathMatch, RouteTable};
use crate::state::{ActiveRoute, Shared, Snapshot};

/// Where a request goes.
pub enum Routed {
    Route(Arc<ActiveRoute>),
    /// The path is this route's prefix without its trailing slash: `301` to it.
    AddSlash(Arc<ActiveRoute>),
    /// The host is served, but no route of it covers the path.
    NoPath,
    /// The path reads as another route's once decoded (see `router::path`).
    Ambiguous,
    NoHost,
}

impl Routed {
    /// The route this request is counted and logged under, if any.
    pub fn route(&self) -> Option<&Arc<ActiveRoute>> {
        match self {
            Routed::Route(r) | Routed::AddSlash(r) => Some(r),
            _ => None,
        }
    }
}

pub fn find(routes: &RouteTable<ActiveRoute>, req: &RequestHeader) -> Routed {
    let Some(host_routes) = client_host(req).and_then(|host| routes.lookup(host)) else {
        return Routed::NoHost;
    };
    match host_routes.find(request_path(req.raw_path())) {
        PathMatch::Route(r) => Routed::Route(r.clone()),
        PathMatch::AddSlash(r) => Routed::AddSlash(r.clone()),
        PathMatch::NotFound => Routed::NoPath,
        PathMatch::Ambiguous => Routed::Ambiguous,
    }
}

/// On the plain-HTTP listener, answers an ACME HTTP-01 challenge as the redirect mode
/// does (see `redirect::challenge`): the answer as it is, without security headers.
pub async fn challenge(
    session: &mut Session,
    shared: &Shared,
    snapshot: &Snapshot,
    reply: &Reply<'_>,
) -> Checked {
    let path = session.req_header().uri.path();
    let Some(answer) = crate::redirect::challenge(shared, snapshot, path).await else {
        return Ok(Step::Next);
    };
    let (parts, body) = answer.into_parts();
    let fields: Vec<_> = parts
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    let (status, body) = (parts.status.as_u16(), bytes::Bytes::from(body));
    let bare = Reply::new(&[], reply.request_id());
    answered(None, bare.as_is(session, status, &fields, body).await)
}

/// Answers a request that has no route to go to (anything but `Routed::Route`, which
/// goes on): `301` to the prefix with its slash, `404` or `400`.
pub async fn answer(session: &mut Session, routed: &Routed, reply: &Reply<'_>) -> Checked {
    let req = session.req_header();
    let shown = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let (status, reason, detail) = match (routed, client_host(req)) {
        (Routed::Route(_), _) => return Ok(Step::Next),
        (Routed::AddSlash(_), _) => {
            let location = with_slash(req.raw_path());
            let moved = [(http::header::LOCATION, location)];
            return reply.answer(session, None, 301, "Moved.", &moved).await;
        }
        (Routed::NoPath, Some(host)) => (
            404,
            Reject::NoRoute,
            format!(
                "No app is served at {}{}.",
                shown(host),
                shown(request_path(req.raw_path()))
            ),
        ),
        (Routed::Ambiguous, _) => (
            400,
            Reject::AmbiguousPath,
            "The path names another app when read another way.".to_string(),
        ),
        (Routed::NoHost, Some(host)) => (
            404,
            Reject::NoRoute,
            format!("No app is served at {}.", shown(host)),
        ),
        (_, None) => (
            400,
            Reject::BadRequest,
            "The request names no host.".to_string(),
        ),
    };
    reply
        .answer(session, Some(reason), status, &detail, &[])
        .await
}

/// `/voice?q` → `/voice/?q`: the path with its slash, the query kept. The path matched a
/// route's prefix, so it is plain characters; a query that is not a valid field value
/// is dropped.
fn with_slash(target: &[u8]) -> HeaderValue {
    let target = origin_form(target);
    let path_end = target
        .iter()
        .position(|&b| matches!(b, b'?' | b'#'))
        .unwrap_or(target.len());
    let (path, rest) = target.split_at(path_end);
    let query = rest.split(|&b| b == b'#').next().unwrap_or_default();
    let mut location = Vec::with_capacity(target.len() + 1);
    location.extend_from_slice(path);
    location.push(b'/');
    location.extend_from_slice(query);
    HeaderValue::from_bytes(&location).unwrap_or_else(|_| {
        let mut bare = path.to_vec();
        bare.push(b'/');
        HeaderValue::from_bytes(&bare).unwrap_or(HeaderValue::from_static("/"))
    })
}

#[cfg(test)]
mod tests {
    use super::with_slash;

    #[test]
    fn the_redirect_keeps_the_query() {
        assert_eq!(with_slash(b"/voice"), "/voice/");
        assert_eq!(with_slash(b"/voice?a=1&b=/x"), "/voice/?a=1&b=/x");
        assert_eq!(with_slash(b"https://ai.example/voice?q"), "/voice/?q");
        assert_eq!(with_slash(b"/voice?\x01"), "/voice/");
    }
}
