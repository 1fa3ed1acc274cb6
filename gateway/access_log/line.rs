//! One access log line: a JSON object written straight into the line's buffer.
//!
//! The line is the same one `serde_json` would write for these fields, in this order,
//! built for the request path's budget (docs/performance.md, "Features on and off"):
//! keys are constants, a string with nothing to escape (nearly every one) is copied
//! after one vectorised check and only the others go through `serde_json`'s escaper,
//! numbers go through `itoa`, and the time's text up to the second is formatted once per
//! second per thread, as nginx does with its cached time strings.

use std::cell::Cell;
use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest path, host and user agent kept in a line (bytes); longer ones are cut.
const MAX_FIELD: usize = 2048;

/// One access log line. Never holds a query string, `Authorization` or `Cookie`.
/// Fields are borrowed or formatted straight into the line: building one allocates
/// nothing but the line itself.
#[derive(Debug)]
pub struct Entry<'a> {
    /// RFC 3339, UTC, milliseconds.
    pub time: SystemTime,
    pub request_id: &'a str,
    /// `""` when unknown.
    pub client_ip: Option<IpAddr>,
    pub route: &'a str,
    pub host: &'a str,
    pub method: &'a str,
    /// The path only: the query string may hold secrets and is never logged.
    pub path: &'a str,
    pub protocol: &'static str,
    /// 0 when the client left before any response.
    pub status: u16,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Written as `duration_ms`, milliseconds to the microsecond (as are the next two).
    pub duration: Duration,
    /// Time from the request to the upstream connection being ready (null: none).
    pub upstream_connect: Option<Duration>,
    /// Time from the request to the upstream's response header (null: none).
    pub upstream_header: Option<Duration>,
    /// The replica the request went to (its address as configured); null: none.
    pub upstream: Option<&'a str>,
    pub user_agent: &'a str,
    /// The user a login or the sign-on service vouched for (never a password or cookie).
    pub user: Option<&'a str>,
    /// Why the gateway answered itself (`rate_limit`, `body_too_large`, `no_route`…).
    pub reason: Option<&'static str>,
    /// What failed talking to the upstream (`connect`, `timeout`, `reset`…).
    pub upstream_error: Option<&'static str>,
}

impl Entry<'_> {
    /// Appends the line, newline included, to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"time\":\"");
        time(out, self.time);
        out.extend_from_slice(b"\",\"request_id\":");
        string(out, self.request_id);
        out.extend_from_slice(b",\"client_ip\":\"");
        if let Some(ip) = self.client_ip {
            address(out, ip);
        }
        out.extend_from_slice(b"\",\"route\":");
        string(out, self.route);
        out.extend_from_slice(b",\"host\":");
        string(out, self.host);
        out.extend_from_slice(b",\"method\":");
        string(out, self.method);
        out.extend_from_slice(b",\"path\":");
        string(out, self.path);
        out.extend_from_slice(b",\"protocol\":");
        string(out, self.protocol);
        out.extend_from_slice(b",\"status\":");
        integer(out, self.status.into());
        out.extend_from_slice(b",\"request_bytes\":");
        integer(out, self.request_bytes);
        out.extend_from_slice(b",\"response_bytes\":");
        integer(out, self.response_bytes);
        out.extend_from_slice(b",\"duration_ms\":");
        millis(out, self.duration);
        out.extend_from_slice(b",\"upstream_connect_ms\":");
        optional(out, self.upstream_connect, millis);
        out.extend_from_slice(b",\"upstream_header_ms\":");
        optional(out, self.upstream_header, millis);
        out.extend_from_slice(b",\"upstream\":");
        optional(out, self.upstream, string);
        out.extend_from_slice(b",\"user_agent\":");
        string(out, self.user_agent);
        out.extend_from_slice(b",\"user\":");
        optional(out, self.user, string);
        out.extend_from_slice(b",\"reason\":");
        optional(out, self.reason, string);
        out.extend_from_slice(b",\"upstream_error\":");
        optional(out, self.upstream_error, string);
        out.extend_from_slice(b"}\n");
    }
}

/// `text` cut to `MAX_FIELD` bytes at a character boundary.
pub fn clip(text: &str) -> &str {
    if text.len() <= MAX_FIELD {
        return text;
    }
    let mut end = MAX_FIELD;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A JSON string: copied as it is when no byte needs escaping (a control character, `"`
/// or `\`), otherwise escaped by `serde_json`.
fn string(out: &mut Vec<u8>, text: &str) {
    // No early exit: the fold over all bytes compiles to vector compares.
    let escape = text.bytes().fold(false, |any, b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if escape {
        let _ = serde_json::to_writer(&mut *out, text);
    } else {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    }
}

fn integer(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn optional<T>(out: &mut Vec<u8>, value: Option<T>, write: fn(&mut Vec<u8>, T)) {
    match value {
        Some(v) => write(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// A duration as milliseconds to the microsecond, as `serde_json` writes such an `f64`:
/// `12.345`, `2.5`, `3.0`.
fn millis(out: &mut Vec<u8>, d: Duration) {
    let micros = (d.as_nanos() + 500) / 1000;
    integer(out, u64::try_from(micros / 1000).unwrap_or(u64::MAX));
    let frac = (micros % 1000) as u16;
    let digits = [
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ];
    let keep = match frac {
        f if f % 100 == 0 => 1,
        f if f % 10 == 0 => 2,
        _ => 3,
    };
    out.push(b'.');
    out.extend_from_slice(&digits[..keep]);
}

/// An IPv4 address digit by digit (the formatter costs ten times more); IPv6 through it.
fn address(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                integer(out, octet.into());
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

thread_local! {
    /// The second last formatted on this thread and its text, `2026-11-29T07:30:00`.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// The first second humantime cannot format (year 10000); it panics past it.
const YEAR_10000: u64 = 253_402_300_800;

/// `2026-11-29T07:30:00.123Z` without the quotes; the text up to the second is reused
/// while the second lasts. A clock outside 1970–9999 is written as the nearest end.
fn time(out: &mut Vec<u8>, at: SystemTime) {
    let since = match at.duration_since(UNIX_EPOCH) {
        Ok(since) if since.as_secs() < YEAR_10000 => since,
        Ok(_) => return out.extend_from_slice(b"9999-12-31T23:59:59.999Z"),
        Err(_) => return out.extend_from_slice(b"1970-01-01T00:00:00.000Z"),
    };
    let secs = since.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        let mut full = [0u8; 20];
        // Always 20 bytes for years 1970–9999 (`2026-11-29T07:30:00Z`).
        let _ = write!(&mut full[..], "{}", humantime::format_rfc3339_seconds(at));
        text.copy_from_slice(&full[..19]);
        SECOND.set((secs, text));
    }
    out.extend_from_slice(&text);
    let ms = since.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (ms / 100) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms % 10) as u8,
        b'Z',
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(time: SystemTime) -> Entry<'static> {
        Entry {
            time,
            request_id: "id",
            client_ip: None,
            route: "r",
            host: "h",
            method: "GET",
            path: "/",
            protocol: "HTTP/1.1",
            status: 200,
            request_bytes: 0,
            response_bytes: 0,
            duration: Duration::from_micros(500),
            upstream_connect: None,
            upstream_header: None,
            upstream: None,
            user_agent: "",
            user: None,
            reason: None,
            upstream_error: None,
        }
    }

    fn line(e: &Entry) -> serde_json::Value {
        let mut out = Vec::new();
        e.write_json(&mut out);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(out.last(), Some(&b'\n'));
        serde_json::from_slice(&out).expect("the line is JSON")
    }

    fn at(millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(millis)
    }

    #[test]
    fn time_and_address_are_formatted_in_place() {
        let mut e = entry(at(1_795_000_000_123));
        e.client_ip = "2001:db8::1".parse().ok();
        let v = line(&e);
        assert_eq!(v["time"], "2026-11-18T11:06:40.123Z");
        assert_eq!(v["client_ip"], "2001:db8::1");
        assert_eq!(line(&entry(at(0)))["client_ip"], "");
    }

    #[test]
    fn the_cached_second_follows_the_clock() {
        for ms in [
            1_795_000_000_123,
            1_795_000_000_999,
            1_795_000_001_000,
            1_795_000_000_005,
            1_795_086_399_050,
            0,
        ] {
            let expected = humantime::format_rfc3339_millis(at(ms)).to_string();
            assert_eq!(line(&entry(at(ms)))["time"], expected.as_str(), "{ms}");
        }
        let before = UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(line(&entry(before))["time"], "1970-01-01T00:00:00.000Z");
        let after = UNIX_EPOCH + Duration::from_secs(YEAR_10000);
        assert_eq!(line(&entry(after))["time"], "9999-12-31T23:59:59.999Z");
        let last = UNIX_EPOCH + Duration::from_millis(YEAR_10000 * 1000 - 1);
        assert_eq!(line(&entry(last))["time"], "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn the_line_is_the_one_serde_json_writes() {
        let mut e = entry(at(1_795_000_000_123));
        e.client_ip = "192.0.2.7".parse().ok();
        e.path = "/a \"quoted\" \\ path\u{1}\t/é";
        e.user_agent = "curl/8.5.0";
        e.user = Some("ann\n");
        e.upstream = Some("127.0.0.1:8000");
        e.reason = Some("rate_limit");
        e.status = 429;
        e.request_bytes = u64::MAX;
        e.upstream_connect = Some(Duration::from_nanos(1_499));
        e.upstream_header = Some(Duration::from_micros(1_234_560));
        let expected = serde_json::json!({
            "time": "2026-11-18T11:06:40.123Z", "request_id": "id", "client_ip": "192.0.2.7",
            "route": "r", "host": "h", "method": "GET", "path": e.path, "protocol": "HTTP/1.1",
            "status": 429, "request_bytes": u64::MAX, "response_bytes": 0, "duration_ms": 0.5,
            "upstream_connect_ms": 0.001, "upstream_header_ms": 1234.56,
            "upstream": "127.0.0.1:8000", "user_agent": "curl/8.5.0", "user": "ann\n",
            "reason": "rate_limit", "upstream_error": null,
        });
        assert_eq!(line(&e), expected);
        let mut text = Vec::new();
        e.write_json(&mut text);
        let keys: Vec<String> = serde_json::from_slice::<serde_json::Map<String, _>>(&text)
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys.len(), 19);
    }

    #[test]
    fn milliseconds_read_as_serde_json_writes_them() {
        for micros in [
            0,
            1,
            10,
            100,
            500,
            2_000,
            12_345,
            12_340,
            99_990,
            1_234_567,
            86_400_000_000,
        ] {
            let mut ours = Vec::new();
            millis(&mut ours, Duration::from_micros(micros));
            let ms = micros as f64 / 1000.0;
            assert_eq!(ours, serde_json::to_vec(&ms).unwrap(), "{ms}");
        }
        let mut rounded = Vec::new();
        millis(&mut rounded, Duration::from_nanos(2_999_500));
        assert_eq!(rounded, b"3.0");
    }

    #[test]
    fn addresses_read_as_their_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "192.168.10.255",
            "::1",
            "2001:db8::7",
            "::ffff:10.0.0.1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut ours = Vec::new();
            address(&mut ours, ip);
            assert_eq!(ours, ip.to_string().as_bytes());
        }
    }

    #[test]
    fn clip_keeps_char_boundaries() {
        let long = "é".repeat(2000);
        let cut = clip(&long);
        assert!(cut.len() <= MAX_FIELD && cut.chars().all(|c| c == 'é'));
        assert_eq!(clip("/short"), "/short");
    }
}
