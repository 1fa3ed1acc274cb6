//! Headers the gateway adds on the way to the upstream (`X-Forwarded-*`, `X-Real-IP`,
//! `X-Request-Id`) and the request id it keeps or makes. `X-Forwarded-Prefix` is the
//! path route's (`prefix`); a client's own is always removed.
//!
//! A client may also write fields that apps and frameworks believe as a proxy's word:
//! `Forwarded`, Tornado's `X-Scheme`, Rack's `X-Forwarded-Ssl`, IIS's `X-Original-URL`…
//! (`is_claim`), and names with `_`, which WSGI servers read as `-` (`Remote_User`
//! beside a vouched `Remote-User`). `strip_claims` removes them from the request as it
//! arrives, so neither an app, the tunnel nor the sign-on service sees them; the gateway
//! then sets what it vouches for itself.

use std::net::IpAddr;

use http::HeaderValue;
use ipnet::IpNet;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use pingora::{ErrorType, OrErr, Result};

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

/// Whether a request field named `name` is one only a proxy may set, which the client
/// could otherwise write: a forwarding field the gateway does not vouch with (it sets
/// `X-Forwarded-Port` itself), or a rewrite field some servers prefer to the target.
fn is_claim(name: &str) -> bool {
    matches!(
        name,
        "forwarded"
            | "x-forwarded-port"
            | "x-forwarded-server"
            | "x-forwarded-ssl"
            | "x-forwarded-scheme"
            | "x-forwarded-protocol"
            | "x-forwarded-uri"
            | "x-forwarded-method"
            | "x-url-scheme"
            | "x-scheme"
            | "front-end-https"
            | "x-original-url"
            | "x-original-uri"
            | "x-original-method"
            | "x-rewrite-url"
    )
}

/// Removes the client's claims (`is_claim`) and, unless `underscores` (the operator's
/// `limits.underscores_in_headers`), every field whose name has a `_` (nginx's default).
/// One pass over the names; nothing is copied when there is nothing to remove.
pub fn strip_claims(req: &mut RequestHeader, underscores: bool) {
    let drop = |name: &http::HeaderName| {
        is_claim(name.as_str()) || (!underscores && name.as_str().contains('_'))
    };
    if !req.headers.keys().any(drop) {
        return;
    }
    let names: Vec<http::HeaderName> = req.headers.keys().filter(|n| drop(n)).cloned().collect();
    for name in names {
        req.remove_header(&name);
    }
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy; then the
/// right-most `X-Forwarded-For` entry that is not itself trusted (nginx's
/// `real_ip_recursive on`). Entries left of it are the client's own words and are never
/// believed, so a client cannot pick its own rate-limit bucket. When every entry is
/// trusted, or one cannot be parsed, the last trusted address stands.
/// The address of the TCP peer of `session` (the client, or a proxy in front of it).
pub fn peer_ip(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

pub fn client_ip(peer: IpAddr, req: &RequestHeader, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let values = req.headers.get_all("x-forwarded-for").iter().rev();
    for entry in values.flat_map(|v| v.as_bytes().rsplit(|b| *b == b',')) {
        let Some(ip) = parse_forwarded_ip(entry) else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: `1.2.3.4`, `2001:db8::1`, or with a port
/// (`1.2.3.4:5678`, `[2001:db8::1]:5678`).
fn parse_forwarded_ip(entry: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(entry).ok()?.trim();
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// Whether the client reached the gateway over HTTPS: always on the HTTPS listener
/// (`tls`); on the plain-HTTP listener (`http_mode: proxy`) only when the peer is a
/// trusted proxy whose `X-Forwarded-Proto` says `https`. Its right-most value is read,
/// the one that proxy set; anything but `http` or `https` counts as `http`.
pub fn client_https(
    tls: bool,
    peer: Option<IpAddr>,
    req: &RequestHeader,
    trusted: &[IpNet],
) -> bool {
    if tls {
        return true;
    }
    if !peer.is_some_and(|p| trusted.iter().any(|net| net.contains(&p))) {
        return false;
    }
    let last = req.headers.get_all("x-forwarded-proto").iter().next_back();
    last.and_then(|v| v.as_bytes().rsplit(|b| *b == b',').next())
        .is_some_and(|proto| proto.trim_ascii().eq_ignore_ascii_case(b"https"))
}

/// The port the client addressed: the one in its `Host` (or `:authority`), else its
/// scheme's default. That is the port an app must put in the URLs it builds, also
/// behind a balancer or a port mapping (Traefik sets `X-Forwarded-Port` the same way);
/// it is the listener's own port when the client reaches the gateway directly.
pub fn client_port(host: Option<&HeaderValue>, https: bool) -> u16 {
    let host = host.map_or(&b""[..], HeaderValue::as_bytes);
    let name = crate::router::strip_port(host);
    let port = host[name.len()..].strip_prefix(b":");
    port.and_then(|p| std::str::from_utf8(p).ok()?.parse().ok())
        .unwrap_or(if https { 443 } else { 80 })
}

/// The client's host as a header value for `X-Forwarded-Host`: the `Host` header's own
/// value (shared, not copied) or, over HTTP/2, `:authority`.
pub fn client_host_value(req: &RequestHeader) -> Option<HeaderValue> {
    match req.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers.get(http::header::HOST).cloned(),
    }
}

/// Sets the forwarding headers on the upstream request: `peer` (the TCP peer) is appended
/// to `X-Forwarded-For`, `client` (see `client_ip`) becomes `X-Real-IP`,
/// `X-Forwarded-Proto` is the client's scheme (see `client_https`) and
/// `X-Forwarded-Port` the port it addressed (see `client_port`). Each address is formatted once, on the stack;
/// the values shared with the request are not copied.
pub fn apply(
    up: &mut RequestHeader,
    peer: Option<IpAddr>,
    client: Option<IpAddr>,
    https: bool,
    host: Option<HeaderValue>,
    request_id: Option<&HeaderValue>,
) -> Result<()> {
    let port = client_port(host.as_ref(), https);
    let peer_value = peer.map(ip_value);
    if let Some(peer_value) = &peer_value {
        let forwarded_for = match joined(up, "x-forwarded-for") {
            Some(mut prior) => {
                prior.extend_from_slice(b", ");
                prior.extend_from_slice(peer_value.as_bytes());
                HeaderValue::from_maybe_shared(bytes::Bytes::from(prior))
                    .explain_err(ErrorType::InvalidHTTPHeader, |_| "x-forwarded-for")?
            }
            None => peer_value.clone(),
        };
        up.insert_header("x-forwarded-for", forwarded_for)?;
    }
    let real_ip = match client {
        Some(ip) if client != peer => Some(ip_value(ip)),
        _ => peer_value,
    };
    match real_ip {
        Some(ip) => up.insert_header("x-real-ip", ip)?,
        None => drop(up.remove_header("x-real-ip")),
    }
    let proto = HeaderValue::from_static(if https { "https" } else { "http" });
    up.insert_header("x-forwarded-proto", proto)?;
    match host {
        Some(h) => up.insert_header("x-forwarded-host", h)?,
        None => drop(up.remove_header("x-forwarded-host")),
    }
    let port = match port {
        443 => HeaderValue::from_static("443"),
        80 => HeaderValue::from_static("80"),
        port => HeaderValue::from(port),
    };
    up.insert_header("x-forwarded-port", port)?;
    if let Some(id) = request_id {
        up.insert_header("x-request-id", id.clone())?;
    }
    up.remove_header("x-forwarded-prefix");
    Ok(())
}

/// An address as a header value, formatted without a `String` on the way.
pub fn ip_value(ip: IpAddr) -> HeaderValue {
    use std::io::Write;
    // Room for any address text (INET6_ADDRSTRLEN is 46 with its NUL).
    let mut buf = [0u8; 48];
    let mut rest = &mut buf[..];
    let _ = write!(rest, "{ip}");
    let len = 48 - rest.len();
    // Digits, dots, colons and hex letters: always a valid value.
    HeaderValue::from_bytes(&buf[..len]).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// All values of a header joined with ", " (a list header may be sent several times).
fn joined(req: &RequestHeader, name: &str) -> Option<Vec<u8>> {
    let mut values = req.headers.get_all(name).iter();
    let mut out = values.next()?.as_bytes().to_vec();
    for v in values {
        out.extend_from_slice(b", ");
        out.extend_from_slice(v.as_bytes());
    }
    Some(out)
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
    fn the_scheme_is_believed_from_a_trusted_balancer_only() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let balancer = "10.0.0.7".parse().ok();
        let stranger = "192.0.2.9".parse().ok();
        let https = |peer, headers: &[(&'static str, &str)]| {
            client_https(false, peer, &req(headers), &trusted)
        };
        assert!(https(balancer, &[("x-forwarded-proto", "https")]));
        assert!(https(balancer, &[("x-forwarded-proto", " HTTPS ")]));
        // The right-most value is the balancer's own; a client's claim left of it is not.
        assert!(https(balancer, &[("x-forwarded-proto", "http, https")]));
        assert!(!https(balancer, &[("x-forwarded-proto", "https, http")]));
        assert!(!https(
            balancer,
            &[
                ("x-forwarded-proto", "https"),
                ("x-forwarded-proto", "http")
            ]
        ));
        assert!(!https(balancer, &[("x-forwarded-proto", "wss")]));
        assert!(!https(balancer, &[]));
        assert!(!https(stranger, &[("x-forwarded-proto", "https")]));
        assert!(!https(None, &[("x-forwarded-proto", "https")]));
        // On the HTTPS listener, always.
        assert!(client_https(true, stranger, &req(&[]), &trusted));
    }

    #[test]
    fn appends_forwarded_for() {
        let mut up = req(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-prefix", "/admin"),
        ]);
        let id = HeaderValue::from_static("id");
        let peer = "10.0.0.1".parse().ok();
        let host = HeaderValue::from_static("a.example:8443");
        apply(&mut up, peer, peer, true, Some(host), Some(&id)).unwrap();
        assert_eq!(up.headers["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 10.0.0.1");
        assert_eq!(up.headers["x-real-ip"], "10.0.0.1");
        assert_eq!(up.headers["x-forwarded-proto"], "https");
        assert_eq!(up.headers["x-forwarded-host"], "a.example:8443");
        assert_eq!(up.headers["x-request-id"], "id");
        assert_eq!(up.headers["x-forwarded-port"], "8443");
        assert!(up.headers.get("x-forwarded-prefix").is_none());

        // No prior list; a client (behind a trusted proxy) other than the peer; no host.
        let mut up = req(&[("x-forwarded-host", "evil.example")]);
        let v4_tail = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255";
        let client = v4_tail.parse().ok();
        apply(&mut up, peer, client, false, None, Some(&id)).unwrap();
        assert_eq!(up.headers["x-forwarded-for"], "10.0.0.1");
        assert_eq!(
            up.headers["x-real-ip"],
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        assert_eq!(ip_value(v4_tail.parse().unwrap()).len(), 39);
        let mapped: IpAddr = "::ffff:1.2.3.4".parse().unwrap();
        assert_eq!(ip_value(mapped), "::ffff:1.2.3.4");
        assert_eq!(up.headers["x-forwarded-proto"], "http");
        assert!(up.headers.get("x-forwarded-host").is_none());
    }

    #[test]
    fn the_port_is_the_one_the_client_addressed() {
        let port =
            |host: &'static str, https| client_port(Some(&HeaderValue::from_static(host)), https);
        assert_eq!(port("a.example:8443", true), 8443);
        assert_eq!(port("a.example", true), 443);
        assert_eq!(port("a.example", false), 80);
        assert_eq!(port("[::1]:9000", false), 9000);
        assert_eq!(port("[::1]", true), 443);
        assert_eq!(port("a.example:junk", true), 443);
        assert_eq!(client_port(None, true), 443);
    }

    #[test]
    fn claims_and_underscored_names_are_removed() {
        let fields = [
            ("forwarded", "for=10.0.0.1;proto=https"),
            ("x-scheme", "https"),
            ("X-Original-URL", "/admin/"),
            ("x-rewrite-url", "/admin/"),
            ("x-forwarded-port", "443"),
            ("remote_user", "admin"),
            ("remote-user", "kept"),
            ("accept", "*/*"),
        ];
        let mut r = req(&fields);
        strip_claims(&mut r, false);
        let mut left: Vec<&str> = r.headers.keys().map(|n| n.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "remote-user"]);
        let mut r = req(&fields);
        strip_claims(&mut r, true);
        assert!(r.headers.contains_key("remote_user"), "kept when asked");
        assert!(!r.headers.contains_key("forwarded"));
    }

    #[test]
    fn client_ip_believes_only_trusted_proxies() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        let spoofed = req(&[("x-forwarded-for", "6.6.6.6")]);
        // An untrusted peer's header is ignored.
        assert_eq!(
            client_ip(ip("203.0.113.9"), &spoofed, &trusted),
            ip("203.0.113.9")
        );
        // A trusted proxy: the right-most untrusted entry, not the client-supplied left one.
        let chain = req(&[
            ("x-forwarded-for", "6.6.6.6, 198.51.100.7"),
            ("x-forwarded-for", "10.1.1.1"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &chain, &trusted),
            ip("198.51.100.7")
        );
        let ported = req(&[("x-forwarded-for", "[2001:db8::5]:4711")]);
        assert_eq!(client_ip(ip("::1"), &ported, &trusted), ip("2001:db8::5"));
        // Garbage stops the walk at the last trusted hop.
        let junk = req(&[("x-forwarded-for", "junk, 10.2.2.2")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &junk, &trusted), ip("10.2.2.2"));
        assert_eq!(
            client_ip(ip("10.0.0.2"), &req(&[]), &trusted),
            ip("10.0.0.2")
        );
    }
}
