//! Where a request presents an API key, and taking it out before the request goes on to
//! the app: `Authorization: Bearer KEY`, `X-API-Key: KEY`, or, on a WebSocket upgrade
//! only, a query parameter (`token` by default): a browser cannot set headers on a
//! WebSocket, and anywhere else a key in a URL ends up in logs and browser histories.
//! The query parameter and `X-API-Key` are always removed; `Authorization` unless the
//! route passes it on.

use http::header::AUTHORIZATION;
use http::{HeaderName, Uri};
use percent_encoding::percent_decode;
use pingora::http::RequestHeader;

/// `X-API-Key`.
pub static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// What a request presents.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    Nothing,
    Key(Vec<u8>),
    /// Two different keys (or an empty one): refused as an invalid key, never taken for
    /// the one the gateway happens to read first.
    Ambiguous,
}

/// The key `req` presents; the query parameter `param` counts on a WebSocket upgrade
/// only.
pub fn find(req: &RequestHeader, websocket: bool, param: &str) -> Presented {
    let mut found: Vec<Vec<u8>> = Vec::new();
    for value in req.headers.get_all(AUTHORIZATION) {
        let v = value.as_bytes();
        if v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ") {
            found.push(v[7..].trim_ascii().to_vec());
        }
    }
    for value in req.headers.get_all(&X_API_KEY) {
        found.push(value.as_bytes().trim_ascii().to_vec());
    }
    if websocket {
        found.extend(query_values(&req.uri, param));
    }
    let Some(first) = found.first() else {
        return Presented::Nothing;
    };
    match found.iter().all(|k| k == first) {
        true if !first.is_empty() => Presented::Key(first.clone()),
        _ => Presented::Ambiguous,
    }
}

/// The query's parameters: separated by `&`, and by `;` too, as some app frameworks
/// read them (a key hidden behind a `;` must not reach such an app).
fn pairs(query: &str) -> impl Iterator<Item = &str> {
    query.split(['&', ';'])
}

/// Whether a `name=value` pair is `param`, its name percent-decoded.
fn named(pair: &str, param: &str) -> bool {
    let name = pair.split_once('=').map_or(pair, |(n, _)| n);
    percent_decode(name.as_bytes()).eq(param.bytes())
}

/// The values of `param` in the query, percent-decoded.
fn query_values(uri: &Uri, param: &str) -> Vec<Vec<u8>> {
    let Some(query) = uri.query() else {
        return Vec::new();
    };
    pairs(query)
        .filter(|pair| named(pair, param))
        .map(|pair| {
            let value = pair.split_once('=').map_or("", |(_, v)| v);
            percent_decode(value.as_bytes()).collect()
        })
        .collect()
}

/// Takes the key out of `req`: every `param` of the query (the other parameters kept as
/// they were, in order), `X-API-Key`, and `Authorization` unless `pass_authorization`.
/// False when the target could not be rebuilt without the key (it cannot happen: the
/// pieces come from a valid target): the request must then not go on.
#[must_use]
pub fn remove(req: &mut RequestHeader, param: &str, pass_authorization: bool) -> bool {
    req.remove_header(&X_API_KEY);
    if !pass_authorization {
        req.remove_header(&AUTHORIZATION);
    }
    let Some(query) = req.uri.query() else {
        return true;
    };
    if !pairs(query).any(|pair| named(pair, param)) {
        return true;
    }
    // The other parameters, in order (joined by `&` from here on).
    let kept: Vec<&str> = pairs(query).filter(|pair| !named(pair, param)).collect();
    let path = req.uri.path();
    let target = match kept.is_empty() {
        true => path.to_string(),
        false => format!("{path}?{}", kept.join("&")),
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

    fn key(k: &str) -> Presented {
        Presented::Key(k.as_bytes().to_vec())
    }

    #[test]
    fn the_three_places_and_only_there() {
        let bearer = req("/v1", &[("authorization", "Bearer gwk_a")]);
        assert_eq!(find(&bearer, false, "token"), key("gwk_a"));
        let lower = req("/v1", &[("authorization", "bearer  gwk_a ")]);
        assert_eq!(find(&lower, false, "token"), key("gwk_a"));
        let header = req("/v1", &[("x-api-key", "gwk_b")]);
        assert_eq!(find(&header, false, "token"), key("gwk_b"));
        // Basic is a password, not a key.
        let basic = req("/v1", &[("authorization", "Basic YTpi")]);
        assert_eq!(find(&basic, false, "token"), Presented::Nothing);
        // The query counts on a WebSocket upgrade only.
        let ws = req("/ws?clientId=1&token=gwk_c", &[]);
        assert_eq!(find(&ws, true, "token"), key("gwk_c"));
        assert_eq!(find(&ws, false, "token"), Presented::Nothing);
        let encoded = req("/ws?t%6Fken=gwk%5Fc", &[]);
        assert_eq!(find(&encoded, true, "token"), key("gwk_c"));
        assert_eq!(find(&ws, true, "key"), Presented::Nothing);
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
            &[("authorization", "Bearer gwk_a"), ("x-api-key", "gwk_a")],
        );
        assert!(remove(&mut r, "token", false));
        assert_eq!(r.uri.to_string(), "/ws?clientId=1&x=%20y");
        assert!(r.headers.get("authorization").is_none());
        assert!(r.headers.get("x-api-key").is_none());
        let mut r = req("/ws?t%6Fken=gwk_c", &[("authorization", "Bearer app-own")]);
        assert!(remove(&mut r, "token", true));
        assert_eq!(r.uri.to_string(), "/ws");
        assert_eq!(r.headers["authorization"], "Bearer app-own");
        let mut untouched = req("/api?a=1;b=2&c", &[]);
        assert!(remove(&mut untouched, "token", false));
        assert_eq!(untouched.uri.to_string(), "/api?a=1;b=2&c");
        // Behind a `;`, as some frameworks split: found, and taken out.
        let hidden = req("/ws?a=1;token=gwk_d", &[]);
        assert_eq!(find(&hidden, true, "token"), key("gwk_d"));
        let mut hidden = hidden;
        assert!(remove(&mut hidden, "token", false));
        assert_eq!(hidden.uri.to_string(), "/ws?a=1");
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
