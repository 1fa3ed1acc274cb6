//! The readiness check: `GET` the app's `ready` URL over plain HTTP/1.1 on a fresh
//! connection; 2xx or 3xx means it serves.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::AuthUrl;

/// Longest one check may take: an app that accepts but does not answer yet is simply
/// not ready.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether the app answers `url` with 2xx or 3xx now.
pub async fn ready(url: &AuthUrl) -> bool {
    tokio::time::timeout(CHECK_TIMEOUT, status(url))
        .await
        .ok()
        .flatten()
        .is_some_and(|code| (200..400).contains(&code))
}

async fn status(url: &AuthUrl) -> Option<u16> {
    let mut conn = TcpStream::connect(url.addr).await.ok()?;
    let host = match url.addr {
        std::net::SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        std::net::SocketAddr::V4(a) => a.to_string(),
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: gateway-ready-check\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.path
    );
    conn.write_all(request.as_bytes()).await.ok()?;
    // The status line is all that is read: `HTTP/1.1 200 OK`.
    let mut head = [0u8; 32];
    let mut read = 0;
    while read < 12 {
        let n = conn.read(&mut head[read..]).await.ok()?;
        if n == 0 {
            break;
        }
        read += n;
    }
    parse_status(&head[..read])
}

fn parse_status(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn status_lines() {
        assert_eq!(super::parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(super::parse_status(b"HTTP/1.0 302 Found"), Some(302));
        assert_eq!(super::parse_status(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(super::parse_status(b"HTTP/1.1 2"), None);
    }
}
