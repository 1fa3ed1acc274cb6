//! What a request head must be before anything routes on it or forwards it: framing that
//! one reading can give (no request smuggling), an origin-form target, and headers within
//! `limits`. Pure checks on the parsed head (and, for HTTP/1.1, its raw bytes); the proxy
//! phases answer the faults found (`proxy/admission.rs`).
//!
//! What Pingora 0.9 already refuses with 400 before the gateway sees a request is not
//! checked again: conflicting `Content-Length` values, a final coding other than chunked,
//! `Transfer-Encoding` on HTTP/1.0, obsolete line folding and other malformed fields, an
//! absolute-form target naming another host than `Host`, several `Host` fields, heads
//! over about 1 MiB or 256 fields. What it lets through, and this module refuses, is
//! listed in `check`.

use http::{header, Method};
use pingora::http::RequestHeader;

use crate::config::HeadLimits;
use crate::metrics::Reject;

/// Whether a request asks for a WebSocket: an HTTP/1.1 upgrade request (`upgrade_req`,
/// as Pingora reads one: HTTP/1.1 with `Upgrade`) that is a `GET` with one `Upgrade:
/// websocket`.
pub fn asks_websocket(upgrade_req: bool, req: &RequestHeader) -> bool {
    let mut upgrades = req.headers.get_all(header::UPGRADE).iter();
    upgrade_req
        && req.method == Method::GET
        && upgrades
            .next()
            .is_some_and(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"))
        && upgrades.next().is_none()
}

/// Why a request is refused at the door.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The body's length could be read two ways (400; the connection is closed).
    Framing(&'static str),
    /// The request target is not one the gateway forwards (400).
    Target(&'static str),
    /// The head is over `limits` (431).
    HeadTooLarge(&'static str),
    /// The body stalled for `limits.body_timeout` before the app was asked (408).
    BodyTimeout,
    /// The TLS connection was made for another host, served by another certificate (421).
    Misdirected,
}

impl Fault {
    pub fn status(self) -> u16 {
        match self {
            Fault::Framing(_) | Fault::Target(_) => 400,
            Fault::HeadTooLarge(_) => 431,
            Fault::BodyTimeout => 408,
            Fault::Misdirected => 421,
        }
    }

    /// The `reason` label of `gateway_rejected_total` and the access log.
    pub fn reason(self) -> Reject {
        match self {
            Fault::Framing(_) | Fault::Target(_) => Reject::BadRequest,
            Fault::HeadTooLarge(_) => Reject::HeadTooLarge,
            Fault::BodyTimeout => Reject::BodyTimeout,
            Fault::Misdirected => Reject::Misdirected,
        }
    }

    /// One sentence for the error page.
    pub fn detail(self) -> &'static str {
        match self {
            Fault::Framing(why) | Fault::Target(why) | Fault::HeadTooLarge(why) => why,
            Fault::BodyTimeout => "The request body did not come in time.",
            Fault::Misdirected => {
                "This connection was made for another site. Connect again to this one."
            }
        }
    }
}

/// The head limits of one configuration, as the request path needs them.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    max_header_bytes: usize,
    max_headers: usize,
    underscores_in_headers: bool,
}

impl Admission {
    pub fn build(limits: &HeadLimits) -> Admission {
        Admission {
            max_header_bytes: limits.max_header_bytes,
            max_headers: limits.max_headers,
            underscores_in_headers: limits.underscores_in_headers,
        }
    }

    /// Whether request fields with `_` in their names are kept (else removed).
    pub fn underscores_in_headers(&self) -> bool {
        self.underscores_in_headers
    }

    /// Checks a request head. `raw_head` is the HTTP/1.x head as received (request line
    /// and fields); `None` for HTTP/2, whose header list size the h2 layer bounds itself
    /// (`SETTINGS_MAX_HEADER_LIST_SIZE`), and whose framing cannot be ambiguous.
    ///
    /// Refused here: `Transfer-Encoding` together with `Content-Length` (Pingora drops
    /// the length and goes on), `Content-Length` repeated or not a plain number (Pingora
    /// forwards identical duplicates and `5, 5`), `Transfer-Encoding` other than exactly
    /// `chunked`, `*` as the target of anything but OPTIONS, and heads over the limits.
    pub fn check(&self, req: &RequestHeader, raw_head: Option<&[u8]>) -> Result<(), Fault> {
        if req.headers.len() > self.max_headers {
            return Err(Fault::HeadTooLarge(
                "The request has too many header fields.",
            ));
        }
        target(req)?;
        let Some(raw) = raw_head else {
            return Ok(());
        };
        if raw.len() > self.max_header_bytes {
            return Err(Fault::HeadTooLarge(
                "The request's header fields are too large.",
            ));
        }
        framing(req, raw)
    }
}

/// The request target (RFC 9112, 3.2): origin-form (`/x?q`), absolute-form
/// (`https://host/x`, whose host Pingora has already held against `Host`), or `*` for
/// OPTIONS. Authority-form (`host:port`) is CONNECT's alone, which Pingora refuses with
/// 405 itself; a path without its leading `/` (`admin/x`) is no target at all. Either
/// would reach an app that reads it as it likes, and the router read it as `/`.
fn target(req: &RequestHeader) -> Result<(), Fault> {
    let raw = req.raw_path();
    if raw.first() == Some(&b'/') {
        return Ok(());
    }
    if raw == b"*" {
        return match req.method {
            Method::OPTIONS => Ok(()),
            _ => Err(Fault::Target("The request target `*` is only for OPTIONS.")),
        };
    }
    let absolute = |scheme: &[u8]| {
        raw.len() > scheme.len() && raw[..scheme.len()].eq_ignore_ascii_case(scheme)
    };
    if absolute(b"http://") || absolute(b"https://") {
        return Ok(());
    }
    Err(Fault::Target(
        "The request target must be a path starting with `/`.",
    ))
}

/// HTTP/1.x message framing: exactly one way to find the body's end.
fn framing(req: &RequestHeader, raw: &[u8]) -> Result<(), Fault> {
    let mut te = req.headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(first) = te.next() {
        if te.next().is_some()
            || !first
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked")
        {
            return Err(Fault::Framing(
                "Transfer-Encoding must be exactly \"chunked\".",
            ));
        }
        // Pingora removes the length when both came; the raw head still shows it.
        if has_field(raw, b"content-length") {
            return Err(Fault::Framing(
                "The request has both Transfer-Encoding and Content-Length.",
            ));
        }
        return Ok(());
    }
    let mut cl = req.headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = cl.next() {
        let digits = first.as_bytes();
        if cl.next().is_some() || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(Fault::Framing(
                "Content-Length must be given once, as a number.",
            ));
        }
    }
    Ok(())
}

/// Whether the raw head has a field named `name` (lower-case), on a line of its own.
fn has_field(raw: &[u8], name: &[u8]) -> bool {
    raw.split(|&b| b == b'\n').skip(1).any(|line| {
        line.len() > name.len()
            && line[name.len()] == b':'
            && line[..name.len()].eq_ignore_ascii_case(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, target: &str, fields: &[(&str, &str)]) -> (RequestHeader, Vec<u8>) {
        let mut req = RequestHeader::build(method, target.as_bytes(), None).expect("head");
        let mut raw = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
        for (name, value) in fields {
            req.append_header(name.to_string(), *value).expect("field");
            raw.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        (req, raw)
    }

    fn check(method: &str, target: &str, fields: &[(&str, &str)]) -> Result<(), Fault> {
        let (req, raw) = head(method, target, fields);
        Admission::build(&HeadLimits::default()).check(&req, Some(&raw))
    }

    #[test]
    fn one_way_to_frame_a_body() {
        assert_eq!(check("POST", "/", &[("Content-Length", "5")]), Ok(()));
        assert_eq!(
            check("POST", "/", &[("Transfer-Encoding", "Chunked")]),
            Ok(())
        );
        let refused = |fields: &[(&str, &str)]| check("POST", "/", fields).map_err(Fault::status);
        // Pingora strips the length itself; the raw head keeps it.
        let (mut req, raw) = head(
            "POST",
            "/",
            &[("Transfer-Encoding", "chunked"), ("content-LENGTH", "5")],
        );
        req.remove_header(&header::CONTENT_LENGTH);
        assert_eq!(
            Admission::build(&HeadLimits::default())
                .check(&req, Some(&raw))
                .map_err(Fault::status),
            Err(400)
        );
        assert_eq!(
            refused(&[("Content-Length", "5"), ("Content-Length", "5")]),
            Err(400)
        );
        assert_eq!(refused(&[("Content-Length", "5, 5")]), Err(400));
        assert_eq!(refused(&[("Content-Length", "+5")]), Err(400));
        assert_eq!(
            refused(&[("Transfer-Encoding", "chunked, chunked")]),
            Err(400)
        );
        assert_eq!(
            refused(&[
                ("Transfer-Encoding", "chunked"),
                ("Transfer-Encoding", "chunked")
            ]),
            Err(400)
        );
        // A field whose name only starts with content-length is another field.
        assert_eq!(
            check(
                "POST",
                "/",
                &[("Transfer-Encoding", "chunked"), ("Content-Length-X", "1")]
            ),
            Ok(())
        );
    }

    #[test]
    fn asterisk_only_for_options() {
        assert_eq!(check("OPTIONS", "*", &[]), Ok(()));
        assert_eq!(check("GET", "*", &[]).map_err(Fault::status), Err(400));
    }

    #[test]
    fn only_origin_and_absolute_form_targets() {
        assert_eq!(check("GET", "/admin/x?q", &[]), Ok(()));
        assert_eq!(check("GET", "https://a.example/x", &[]), Ok(()));
        assert_eq!(check("GET", "HTTP://a.example", &[]), Ok(()));
        for target in [
            "elsewhere.test:40355",
            "admin/x",
            "x",
            "http:/x",
            "ftp://a/x",
        ] {
            let refused = check("GET", target, &[]).map_err(Fault::status);
            assert_eq!(refused, Err(400), "{target}");
        }
    }

    #[test]
    fn head_limits_give_431() {
        let limits = HeadLimits {
            max_header_bytes: 1024,
            max_headers: 3,
            ..HeadLimits::default()
        };
        let a = Admission::build(&limits);
        let (req, raw) = head("GET", "/", &[("a", "1"), ("b", "2"), ("c", "3")]);
        assert_eq!(a.check(&req, Some(&raw)), Ok(()));
        let (req, raw) = head(
            "GET",
            "/",
            &[("a", "1"), ("a", "2"), ("b", "3"), ("c", "4")],
        );
        assert_eq!(a.check(&req, Some(&raw)).map_err(Fault::status), Err(431));
        let big = "x".repeat(1024);
        let (req, raw) = head("GET", "/", &[("a", &big)]);
        assert_eq!(a.check(&req, Some(&raw)).map_err(Fault::status), Err(431));
        assert_eq!(
            a.check(&req, None),
            Ok(()),
            "HTTP/2 sizes are h2's to bound"
        );
    }
}
