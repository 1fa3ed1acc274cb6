//! Scalar value parsers: sizes, durations, socket addresses. Each returns the message
//! that follows `PATH: ` in a diagnostic. Pure functions, no I/O except name resolution
//! of an upstream written as `localhost:PORT`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use serde_yaml::Value;

/// Renders a YAML value the way the operator wrote it, for "found ..." messages.
pub fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// Bytes as an operator writes them: `12 GiB`, `512 MiB`, `1000 bytes`.
pub fn bytes_shown(bytes: u64) -> String {
    const UNITS: [(u32, &str); 4] = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
    for (shift, unit) in UNITS {
        if bytes >= 1 << shift {
            let value = bytes as f64 / (1u64 << shift) as f64;
            return match bytes % (1 << shift) {
                0 => format!("{} {unit}", bytes >> shift),
                _ => format!("{value:.1} {unit}"),
            };
        }
    }
    format!("{bytes} bytes")
}

/// `true` or `false`.
pub fn flag(v: &Value) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("expected true or false, found {}", shown(v)))
}

/// True for the string `off` (any case), used to disable a limit or timeout.
pub fn is_off(v: &Value) -> bool {
    matches!(v, Value::String(s) if s.eq_ignore_ascii_case("off"))
}

/// A size in bytes: `1048576`, `512K`, `500M`, `2G`, `1T` (binary multiples; `KB`, `KiB`
/// and friends mean the same, case-insensitive). `0` or `off` mean unlimited (`None`).
pub fn size(v: &Value) -> Result<Option<u64>, String> {
    const EXPECTED: &str =
        "expected bytes or a whole number with K, M, G or T (e.g. 500M), or \"off\"";
    let text = match v {
        Value::Number(n) => match n.as_u64() {
            Some(bytes) => return Ok((bytes > 0).then_some(bytes)),
            None => return Err(format!("invalid size {}; {EXPECTED}", shown(v))),
        },
        Value::String(_) if is_off(v) => return Ok(None),
        Value::String(s) => s.trim(),
        _ => return Err(format!("invalid size {}; {EXPECTED}", shown(v))),
    };
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("invalid size {}; {EXPECTED}", shown(v))),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {}; {EXPECTED}", shown(v)))?;
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {} is too large", shown(v)))?;
    Ok((bytes > 0).then_some(bytes))
}

/// A duration with a unit: `500ms`, `30s`, `5m`, `1h`, `1h 30m`. `off` means no timeout
/// (`None`); a bare number is refused because its unit would be a guess.
pub fn duration(v: &Value) -> Result<Option<Duration>, String> {
    const EXPECTED: &str = "expected a duration with a unit (e.g. 500ms, 30s, 5m, 1h) or \"off\"";
    match v {
        _ if is_off(v) => Ok(None),
        // `0` needs no unit: it is `off`, as the docs say.
        Value::Number(n) if n.as_u64() == Some(0) => Ok(None),
        Value::String(s) => match humantime::parse_duration(s.trim()) {
            Ok(d) if d.is_zero() => Ok(None),
            Ok(d) => Ok(Some(d)),
            Err(_) => Err(format!("invalid duration {}; {EXPECTED}", shown(v))),
        },
        _ => Err(format!("invalid duration {}; {EXPECTED}", shown(v))),
    }
}

/// A duration that must be set (`off` is refused).
pub fn required_duration(v: &Value) -> Result<Duration, String> {
    duration(v)?.ok_or_else(|| {
        format!(
            "invalid duration {}; expected a duration with a unit (e.g. 30s)",
            shown(v)
        )
    })
}

/// A listening address: `0.0.0.0:8443`, `[::]:8443`, or a bare port `8443` / `:8443`
/// (all IPv4 interfaces).
pub fn listen_addr(v: &Value) -> Result<SocketAddr, String> {
    const EXPECTED: &str = "expected IP:PORT (e.g. 0.0.0.0:8443) or a port";
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return Err(format!("invalid address {}; {EXPECTED}", shown(v))),
    };
    let port_only = text.strip_prefix(':').unwrap_or(&text);
    if let Ok(port) = port_only.parse::<u16>() {
        return Ok(SocketAddr::from(([0, 0, 0, 0], port)));
    }
    text.parse()
        .map_err(|_| format!("invalid address {}; {EXPECTED}", shown(v)))
}

/// An upstream address: `127.0.0.1:7860`, `[::1]:7860`, `localhost:7860` (resolved once,
/// at load), `http://127.0.0.1:7860`, or a bare port `7860` (meaning 127.0.0.1).
pub fn upstream_addr(v: &Value) -> Result<SocketAddr, String> {
    const EXPECTED: &str = "expected HOST:PORT (e.g. 127.0.0.1:7860)";
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.trim().to_string(),
        _ => return Err(format!("invalid upstream {}; {EXPECTED}", shown(v))),
    };
    if text.starts_with("https://") {
        return Err(format!(
            "invalid upstream {}; TLS to the upstream is not supported, use http:// on a local port",
            shown(v)
        ));
    }
    let text = text.strip_prefix("http://").unwrap_or(&text);
    let text = text.strip_suffix('/').unwrap_or(text);
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let has_port = text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !has_port || text.contains('/') {
        return Err(format!("invalid upstream {}; {EXPECTED}", shown(v)));
    }
    let resolved = text
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next());
    match resolved.or_else(|| loopback_name(text)) {
        Some(addr) => Ok(addr),
        None => Err(format!(
            "upstream {} does not resolve; {EXPECTED}",
            shown(v)
        )),
    }
}

/// `localhost:PORT` (or `NAME.localhost:PORT`) as 127.0.0.1 when the system resolver
/// gives nothing (a root without /etc/hosts, as debootstrap makes, resolves none): such
/// names are loopback by definition (RFC 6761, 6.3).
pub(super) fn loopback_name(text: &str) -> Option<SocketAddr> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host.to_ascii_lowercase();
    let port: u16 = port.parse().ok()?;
    let local = host == "localhost" || host.ends_with(".localhost");
    local.then(|| SocketAddr::from(([127, 0, 0, 1], port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::String(text.to_string())
    }

    #[test]
    fn localhost_names_are_loopback_without_a_resolver() {
        let at = |text: &str| loopback_name(text).map(|a| a.to_string());
        assert_eq!(at("localhost:7860").as_deref(), Some("127.0.0.1:7860"));
        assert_eq!(at("LocalHost:80").as_deref(), Some("127.0.0.1:80"));
        assert_eq!(at("app.localhost:8188").as_deref(), Some("127.0.0.1:8188"));
        assert_eq!(at("localhost.example.com:80"), None);
        assert_eq!(at("notlocalhost:80"), None);
        assert_eq!(at("localhost:http"), None);
    }

    #[test]
    fn sizes() {
        assert_eq!(size(&s("500M")), Ok(Some(500 << 20)));
        assert_eq!(size(&s("2g")), Ok(Some(2 << 30)));
        assert_eq!(size(&s("2 GiB")), Ok(Some(2 << 30)));
        assert_eq!(size(&s("512kb")), Ok(Some(512 << 10)));
        assert_eq!(size(&Value::from(1024)), Ok(Some(1024)));
        assert_eq!(size(&Value::from(0)), Ok(None));
        assert_eq!(size(&s("off")), Ok(None));
        assert!(size(&s("12Q"))
            .unwrap_err()
            .contains("invalid size \"12Q\""));
        assert!(size(&s("1.5G")).is_err());
        assert!(size(&s("-1")).is_err());
        assert!(size(&Value::from(-1)).is_err());
        assert!(size(&s("99999999999T")).unwrap_err().contains("too large"));
    }

    #[test]
    fn durations() {
        assert_eq!(duration(&s("5s")), Ok(Some(Duration::from_secs(5))));
        assert_eq!(duration(&s("1h")), Ok(Some(Duration::from_secs(3600))));
        assert_eq!(duration(&s("250ms")), Ok(Some(Duration::from_millis(250))));
        assert_eq!(duration(&s("off")), Ok(None));
        assert!(duration(&Value::from(5)).is_err());
        assert!(duration(&s("soon")).is_err());
        assert!(required_duration(&s("off")).is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(listen_addr(&s("8443")).unwrap().to_string(), "0.0.0.0:8443");
        assert_eq!(listen_addr(&s(":80")).unwrap().to_string(), "0.0.0.0:80");
        assert_eq!(listen_addr(&s("[::]:443")).unwrap().to_string(), "[::]:443");
        assert!(listen_addr(&s("0.0.0.0:99999")).is_err());
        assert!(listen_addr(&s("nowhere")).is_err());
        assert_eq!(
            upstream_addr(&s("7860")).unwrap().to_string(),
            "127.0.0.1:7860"
        );
        assert_eq!(
            upstream_addr(&s("http://127.0.0.1:8501/"))
                .unwrap()
                .to_string(),
            "127.0.0.1:8501"
        );
        assert!(upstream_addr(&s("localhost:8501")).is_ok());
        assert!(upstream_addr(&s("https://127.0.0.1:1")).is_err());
        assert!(upstream_addr(&s("127.0.0.1")).is_err());
        assert!(upstream_addr(&s("127.0.0.1:7860/x")).is_err());
    }
}
