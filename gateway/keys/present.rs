//! Where a request presents an API key, and taking it out before the request goes on to
//! the app: `X-API-Key: KEY`, `Authorization: Bearer KEY`, or, on a WebSocket upgrade
//! only, a query parameter (`token` by default): a browser cannot set headers on a
//! WebSocket, and anywhere else a key in a URL ends up in logs and browser histories.
//!
//! A `Bearer` value or a query value is a key only when it has the prefix every key has
//! (`gwk_`): an app's own bearer token (a Hugging Face token, a sign-on service's JWT) or
//! its own `token` parameter (Jupyter's) is none of the gateway's business. `X-API-Key`
//! is the gateway's, whatever it holds.

use std::borrow::Cow;

use http::header::AUTHORIZATION;
use http::{HeaderName, Uri};
use percent_encoding::percent_decode;
use pingora::http::RequestHeader;

use super::issue::PREFIX;

/// `X-API-Key`.
pub static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// Its spelling with `_`, which some frameworks read as the same field (it only
/// arrives with `limits.underscores_in_headers`).
static X_API_KEY_CGI: HeaderName = HeaderName::from_static("x_api_key");

/// What a request presents: its key borrowed from it (decoded from the query only when
/// it was percent-encoded there).
#[derive(Debug, PartialEq, Eq)]
pub enum Presented<'r> {
    Nothing,
    Key(Cow<'r, [u8]>),
    /// Two different keys (or an empty one): refused as an invalid key, never taken for
    /// the one the gateway happens to read first.
    Ambiguous,
}

/// Whether `value` has the prefix of a key.
fn prefixed(value: &[u8]) -> bool {
    value.starts_with(PREFIX.as_bytes())
}

/// The key `req` presents; the query parameter `param` counts on a WebSocket upgrade
/// only.
pub fn find<'r>(req: &'r RequestHeader, websocket: bool, param: &str) -> Presented<'r> {
    let mut found: Option<Cow<'r, [u8]>> = None;
    let mut agree = true;
    let mut see = |key: Cow<'r, [u8]>| match &found {
        None => found = Some(key),
        Some(first) => agree &= *first == key,
    };
    for value in req.headers.get_all(&X_API_KEY) {
        see(Cow::Borrowed(value.as_bytes().trim_ascii()));
    }
    for value in req.headers.get_all(AUTHORIZATION) {
        let v = value.as_bytes();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ") {
            let token = v[7..].trim_ascii();
            if prefixed(token) {
                see(Cow::Borrowed(token));
            }
        }
    }
    if websocket {
        for key in query_keys(&req.uri, param) {
            see(key);
        }
    }
    match found {
        None => Presented::Nothing,
        Some(key) if agree && !key.is_empty() => Presented::Key(key),
        Some(_) => Presented::Ambiguous,
    }
}

/// The query's parameters with the separator before each (none before the first):
/// separated by `&`, and by `;` too, as some app frameworks read them (a key hidden
/// behind a `;` must not reach such an app).
fn pairs(query: &str) -> impl Iterator<Item = (Option<char>, &str)> {
    let mut rest = Some(query);
    let mut before = None;
    std::iter::from_fn(move || {
        let text = rest?;
        let (pair, sep) = match text.find(['&', ';']) {
            Some(at) => {
                rest = Some(&text[at + 1..]);
                (&text[..at], text[at..].chars().next())
            }
            None => {
                rest = None;
                (text, None)
            }
        };
        Some((std::mem::replace(&mut before, sep), pair))
    })
}

/// The value of a `name=value` pair when its name, percent-decoded, is `param` and its
/// value, decoded, is a key.
fn key_of<'q>(pair: &'q str, param: &str) -> Option<Cow<'q, [u8]>> {
    let (name, value) = pair.split_once('=')?;
    if !percent_decode(name.as_bytes()).eq(param.bytes()) {
        return None;
    }
    let value = Cow::from(percent_decode(value.as_bytes()));
    prefixed(&value).then_some(value)
}

/// The keys in `param` parameters of the query.
fn query_keys<'r: 'p, 'p>(
    uri: &'r Uri,
    param: &'p str,
) -> impl Iterator<Item = Cow<'r, [u8]>> + 'p {
    pairs(uri.query().unwrap_or_default()).filter_map(move |(_, pair)| key_of(pair, param))
}

/// Takes the key out of `req`: `X-API-Key`, `Authorization` unless `pass_authorization`,
/// and every key in a `param` of the query (see `strip_query`). False when the target
/// could not be rebuilt (it cannot happen: the pieces come from a valid target): the
/// request must then not go on.
#[must_use]
pub fn remove(req: &mut RequestHeader, param: &str, pass_authorization: bool) -> bool {
    // Looked up first: removing costs more than finding nothing to remove.
    for name in [&X_API_KEY, &X_API_KEY_CGI] {
        if req.headers.contains_key(name) {
            req.remove_header(name);
        }
    }
    if !pass_authorization && req.headers.contains_key(AUTHORIZATION) {
        req.remove_header(&AUTHORIZATION);
    }
    strip_query(req, param)
}

/// Takes every key in a `param` of the query out of `req`, on any request: the other
/// parameters are kept as they were, separators included. False as for `remove`.
#[must_use]
pub fn strip_query(req: &mut RequestHeader, param: &str) -> bool {
    let Some(query) = req.uri.query() else {
        return true;
    };
    if !pairs(query).any(|(_, pair)| key_of(pair, param).is_some()) {
        return true;
    }
    let mut kept = String::with_capacity(query.len());
    let mut first = true;
    for (sep, pair) in pairs(query).filter(|(_, pair)| key_of(pair, param).is_none()) {
        if let (false, Some(sep)) = (first, sep) {
            kept.push(sep);
        }
        kept.push_str(pair);
        first = false;
    }
    let path = req.uri.path();
    let target = match kept.is_empty() {
        true => path.to_string(),
        false => format!("{path}?{kept}"),
    };
    // The scheme and authority stay: an HTTP/2 request's host is its `:authority`.
    let mut parts = req.uri.clone().into_parts();
    parts.path_and_query = match target.parse() {
        Ok(pq) => Some(pq),
        Err(_) => return false,
    };
    match Uri::from_parts(parts) {
        Ok(uri) => {
            req.set_uri(uri);
            true
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, fields: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target.as_bytes(), None).expect("request");
        for (name, value) in fields {
            r.append_header(name.to_string(), *value).expect("field");
        }
        r
    }

    fn key(k: &str) -> Presented<'_> {
        Presented::Key(Cow::Borrowed(k.as_bytes()))
    }

    #[test]
    fn the_three_places_and_only_there() {
        let bearer = req("/v1", &[("authorization", "Bearer gwk_a")]);
        assert_eq!(find(&bearer, false, "token"), key("gwk_a"));
        let lower = req("/v1", &[("authorization", "bearer  gwk_a ")]);
        assert_eq!(find(&lower, false, "token"), key("gwk_a"));
        let header = req("/v1", &[("x-api-key", "gwk_b")]);
        assert_eq!(find(&header, false, "token"), key("gwk_b"));
        // Whatever `X-API-Key` holds is meant as a key.
        let header = req("/v1", &[("x-api-key", "old-key")]);
        assert_eq!(find(&header, false, "token"), key("old-key"));
        // Basic is a password, and a bearer token without the prefix the app's own.
        let basic = req("/v1", &[("authorization", "Basic YTpi")]);
        assert_eq!(find(&basic, false, "token"), Presented::Nothing);
        let theirs = req("/v1", &[("authorization", "Bearer hf_abc")]);
        assert_eq!(find(&theirs, false, "token"), Presented::Nothing);
        let both = req(
            "/v1",
            &[("authorization", "Bearer hf_abc"), ("x-api-key", "gwk_b")],
        );
        assert_eq!(find(&both, false, "token"), key("gwk_b"));
        // The query counts on a WebSocket upgrade only, and only a key there.
        let ws = req("/ws?clientId=1&token=gwk_c", &[]);
        assert_eq!(find(&ws, true, "token"), key("gwk_c"));
        assert_eq!(find(&ws, false, "token"), Presented::Nothing);
        let encoded = req("/ws?t%6Fken=gwk%5Fc", &[]);
        assert_eq!(find(&encoded, true, "token"), key("gwk_c"));
        assert_eq!(find(&ws, true, "key"), Presented::Nothing);
        let jupyter = req("/api/kernels/1/channels?token=abc123", &[]);
        assert_eq!(find(&jupyter, true, "token"), Presented::Nothing);
    }

    #[test]
    fn two_different_keys_or_an_empty_one_are_ambiguous() {
        let two = req(
            "/",
            &[("authorization", "Bearer gwk_a"), ("x-api-key", "gwk_b")],
        );
        assert_eq!(find(&two, false, "token"), Presented::Ambiguous);
        let same = req(
            "/",
            &[("authorization", "Bearer gwk_a"), ("x-api-key", "gwk_a")],
        );
        assert_eq!(find(&same, false, "token"), key("gwk_a"));
        let twice = req("/ws?token=gwk_a&token=gwk_b", &[]);
        assert_eq!(find(&twice, true, "token"), Presented::Ambiguous);
        let empty = req("/", &[("x-api-key", " ")]);
        assert_eq!(find(&empty, false, "token"), Presented::Ambiguous);
        let thrice = req(
            "/ws?token=gwk_a",
            &[("authorization", "Bearer gwk_a"), ("x-api-key", "gwk_a")],
        );
        assert_eq!(find(&thrice, true, "token"), key("gwk_a"));
    }

    #[test]
    fn the_key_leaves_before_the_request_goes_on() {
        let mut r = req(
            "/ws?clientId=1&token=gwk_c&x=%20y",
            &[
                ("authorization", "Bearer gwk_a"),
                ("x-api-key", "gwk_a"),
                ("x_api_key", "gwk_a"),
            ],
        );
        assert!(remove(&mut r, "token", false));
        assert_eq!(r.uri.to_string(), "/ws?clientId=1&x=%20y");
        assert!(r.headers.get("authorization").is_none());
        assert!(r.headers.get("x-api-key").is_none());
        assert!(r.headers.get("x_api_key").is_none());
        let mut r = req("/ws?t%6Fken=gwk_c", &[("authorization", "Bearer app-own")]);
        assert!(remove(&mut r, "token", true));
        assert_eq!(r.uri.to_string(), "/ws");
        assert_eq!(r.headers["authorization"], "Bearer app-own");
        let mut untouched = req("/api?a=1;b=2&c&token=app-own", &[]);
        assert!(remove(&mut untouched, "token", false));
        assert_eq!(untouched.uri.to_string(), "/api?a=1;b=2&c&token=app-own");
        // Behind a `;`, as some frameworks split: found, and taken out; the other
        // parameters keep their separators.
        let hidden = req("/ws?q=a;b&token=gwk_d;c=1", &[]);
        assert_eq!(find(&hidden, true, "token"), key("gwk_d"));
        let mut hidden = hidden;
        assert!(remove(&mut hidden, "token", false));
        assert_eq!(hidden.uri.to_string(), "/ws?q=a;b;c=1");
        let mut leading = req("/ws?token=gwk_d&x=1", &[]);
        assert!(strip_query(&mut leading, "token"));
        assert_eq!(leading.uri.to_string(), "/ws?x=1");
        // An HTTP/2 request's target has its authority: kept.
        let mut h2 = req("/ws?token=gwk_e&x=1", &[]);
        h2.set_uri(
            "https://a.test:8443/ws?token=gwk_e&x=1"
                .parse()
                .expect("uri"),
        );
        assert!(remove(&mut h2, "token", false));
        assert_eq!(h2.uri.to_string(), "https://a.test:8443/ws?x=1");
    }
}
