//! The `limits` keys about client connections rather than requests: how long a client
//! may accept no byte of its answer (`send_timeout`), and how many connections one
//! address, and all clients together, may hold open (`max_connections_per_client`,
//! `max_connections`).

use std::time::Duration;

use serde_yaml::Value;

use super::checker::Checker;
use super::raw::RawLimits;
use super::units::{self, is_off, shown};

/// Longest a client may accept no byte of its answer (nginx's `send_timeout`).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections one address (an IPv6 client's prefix) may hold open. A browser opens at
/// most 6 HTTP/1.1 connections per site (1 with HTTP/2) plus a WebSocket per app tab,
/// so 256 lets an office of about 30 busy browsers share one NAT address.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: u32 = 256;
/// The most any cap may be: far above what one process can hold open.
const MAX_CAP: u64 = 10_000_000;

/// `limits.send_timeout`, `limits.max_connections`, `limits.max_connections_per_client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// A client that accepts no byte of its answer for this long loses the request
    /// (HTTP/2: the stream) and, on HTTP/1.x, the connection.
    pub send_timeout: Duration,
    /// Client connections open at once on the public listeners; `None` (`auto`): from
    /// the file-descriptor limit at start (`limits::connections`).
    pub max_connections: Option<u32>,
    /// Client connections one address may hold open; `None` (`off`): no cap.
    pub max_connections_per_client: Option<u32>,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            send_timeout: DEFAULT_SEND_TIMEOUT,
            max_connections: None,
            max_connections_per_client: Some(DEFAULT_MAX_CONNECTIONS_PER_CLIENT),
        }
    }
}

/// Reads the connection keys of the `limits` section.
pub(super) fn conn_limits(c: &mut Checker, raw: &RawLimits) -> ConnLimits {
    let d = ConnLimits::default();
    let limits = ConnLimits {
        send_timeout: c
            .value(
                "limits.send_timeout",
                raw.send_timeout.as_ref(),
                send_timeout,
            )
            .unwrap_or(d.send_timeout),
        max_connections: c
            .value(
                "limits.max_connections",
                raw.max_connections.as_ref(),
                max_connections,
            )
            .unwrap_or(d.max_connections),
        max_connections_per_client: c
            .value(
                "limits.max_connections_per_client",
                raw.max_connections_per_client.as_ref(),
                per_client,
            )
            .unwrap_or(d.max_connections_per_client),
    };
    if let (Some(total), Some(each)) = (limits.max_connections, limits.max_connections_per_client) {
        if each >= total {
            c.warn(
                "limits.max_connections_per_client",
                format!(
                    "max_connections_per_client ({each}) is not below max_connections \
                     ({total}): one address can take every connection"
                ),
            );
        }
    }
    limits
}

fn send_timeout(v: &Value) -> Result<Duration, String> {
    match units::duration(v)? {
        Some(d) if (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d) => Ok(d),
        _ => Err(format!(
            "invalid send_timeout {}; expected from 1s to 1h (it cannot be off)",
            shown(v)
        )),
    }
}

/// `auto` or a count.
fn max_connections(v: &Value) -> Result<Option<u32>, String> {
    if matches!(v, Value::String(s) if s.trim() == "auto") {
        return Ok(None);
    }
    count(v)
        .map(Some)
        .map_err(|e| format!("invalid max_connections {}; expected {e} or auto", shown(v)))
}

/// `off` or a count.
fn per_client(v: &Value) -> Result<Option<u32>, String> {
    if is_off(v) {
        return Ok(None);
    }
    count(v).map(Some).map_err(|e| {
        format!(
            "invalid max_connections_per_client {}; expected {e} or off",
            shown(v)
        )
    })
}

fn count(v: &Value) -> Result<u32, &'static str> {
    match v.as_u64() {
        Some(n) if (1..=MAX_CAP).contains(&n) => Ok(n as u32),
        _ => Err("a number of connections from 1 to 10000000"),
    }
}
