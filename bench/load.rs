//! bench-load: the parts of `bench/race.sh` that wrk, h2load and curl do not cover.
//! Not part of the product; built with `cargo build --release --example bench-load`.
//!
//!   bench-load upstream ADDR [SSE_EVERY_MS]
//!       An app behind the proxies: `/ws` accepts a WebSocket and holds it, `/sse` sends
//!       `data: <unix ns>` every SSE_EVERY_MS (200), `/upload` reads the whole body and
//!       answers its length, anything else answers `ok`.
//!   bench-load hold ADDR HOST COUNT idle|ws|tls
//!       Opens COUNT TLS connections (SNI and Host HOST), makes one keep-alive request
//!       (`idle`), one WebSocket upgrade (`ws`) or none (`tls`) on each, prints
//!       `held N failed M`, then holds them until killed.
//!   bench-load sse ADDR HOST STREAMS SECONDS [plain]
//!       Opens STREAMS `/sse` streams (over TLS unless `plain`), then for SECONDS records
//!       each event's arrival time minus its send time; prints count, p50, p99 and max
//!       in microseconds.
//!   bench-load handshakes ADDR HOST THREADS SECONDS [resume]
//!       THREADS clients that each open a TLS connection (a full handshake), send one
//!       request with `Connection: close` and read the answer, in a loop. Prints
//!       handshakes per second. `resume`: each client offers the session (TLS 1.3
//!       ticket) of its previous connection, as a browser does coming back; the count
//!       of handshakes the server resumed is printed too.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::response::sse::{Event, Sse};
use axum::routing::{get, post};
use axum::Router;
use futures_util::StreamExt;
use openssl::ssl::{ShutdownState, SslConnector, SslMethod, SslVerifyMode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let addr = || -> Result<SocketAddr> { arg(1).parse().context("ADDR") };
    let num = |i: usize| -> Result<usize> { arg(i).parse().with_context(|| arg(i).to_string()) };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match arg(0) {
        "upstream" => rt.block_on(upstream(addr()?, num(2).unwrap_or(200) as u64)),
        "hold" => rt.block_on(hold(addr()?, arg(2), num(3)?, arg(4))),
        "sse" => rt.block_on(sse(addr()?, arg(2), num(3)?, num(4)?, arg(5) == "plain")),
        "handshakes" => handshakes(addr()?, arg(2), num(3)?, num(4)?, arg(5) == "resume"),
        _ => bail!("usage: see bench/load.rs"),
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

async fn upstream(addr: SocketAddr, every_ms: u64) -> Result<()> {
    let every = Duration::from_millis(every_ms.max(1));
    let app = Router::new()
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async {
                ws.on_upgrade(
                    |mut socket| async move { while let Some(Ok(_)) = socket.recv().await {} },
                )
            }),
        )
        .route(
            "/sse",
            get(move || async move {
                let ticks = tokio::time::interval(every);
                let events = futures_util::stream::unfold(ticks, |mut ticks| async move {
                    ticks.tick().await;
                    let event = Event::default().data(now_ns().to_string());
                    Some((Ok::<_, Infallible>(event), ticks))
                });
                Sse::new(events)
            }),
        )
        .route(
            "/upload",
            post(|body: Body| async move {
                let mut stream = body.into_data_stream();
                let mut n = 0usize;
                while let Some(Ok(chunk)) = stream.next().await {
                    n += chunk.len();
                }
                n.to_string()
            }),
        )
        .fallback(|| async { "ok\n" });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// A TLS client offering what wrk, h2load and curl (Debian's OpenSSL 3.0) offer. This
/// tool links the OpenSSL 3.6 that Pingora vendors, whose default groups put the hybrid
/// post-quantum X25519MLKEM768 first: the Pingora proxies would then do an ML-KEM
/// exchange that nginx (OpenSSL 3.0) cannot, and pay for it in the handshake rows.
fn connector() -> Result<SslConnector> {
    let mut b = SslConnector::builder(SslMethod::tls())?;
    b.set_groups_list("X25519:P-256:X448:P-521:P-384")?;
    b.set_verify(SslVerifyMode::NONE);
    b.set_alpn_protos(b"\x08http/1.1")?;
    Ok(b.build())
}

async fn connect(addr: SocketAddr, host: &str, tls: Option<&SslConnector>) -> Result<Box<dyn Io>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let Some(tls) = tls else {
        return Ok(Box::new(tcp));
    };
    let ssl = tls.configure()?.verify_hostname(false).into_ssl(host)?;
    let mut stream = tokio_openssl::SslStream::new(ssl, tcp)?;
    Pin::new(&mut stream).connect().await?;
    Ok(Box::new(stream))
}

/// Reads a response head; returns it and the bytes read past it.
async fn read_head(io: &mut dyn Io) -> Result<(String, Vec<u8>)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed before the response head");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > 65536 {
            bail!("response head too large");
        }
    }
}

/// One request on a new connection; returns the connection once the whole answer
/// (`Content-Length` or chunked) or a `101` has been read.
async fn open_one(
    addr: SocketAddr,
    host: &str,
    tls: &SslConnector,
    kind: &str,
) -> Result<Box<dyn Io>> {
    let mut io = connect(addr, host, Some(tls)).await?;
    if kind == "tls" {
        return Ok(io);
    }
    let ws = kind == "ws";
    let request = match ws {
        true => format!("GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"),
        false => format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    };
    io.write_all(request.as_bytes()).await?;
    let (head, mut body) = read_head(io.as_mut()).await?;
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != if ws { "101" } else { "200" } {
        bail!("answer {status}");
    }
    if ws {
        return Ok(io);
    }
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    let mut chunk = [0u8; 4096];
    while !match length {
        Some(n) => body.len() >= n,
        None => body.ends_with(b"0\r\n\r\n"),
    } {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed in the body");
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(io)
}

async fn hold(addr: SocketAddr, host: &str, count: usize, kind: &str) -> Result<()> {
    let tls = connector()?;
    let results: Vec<Result<Box<dyn Io>>> = futures_util::stream::iter(0..count)
        .map(|_| open_one(addr, host, &tls, kind))
        .buffer_unordered(32)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        eprintln!("first failure: {e:#}");
    }
    println!("held {} failed {failed}", count - failed);
    std::io::stdout().flush()?;
    tokio::time::sleep(Duration::from_secs(3600)).await;
    drop(results);
    Ok(())
}

async fn sse(addr: SocketAddr, host: &str, streams: usize, secs: usize, plain: bool) -> Result<()> {
    let tls = connector()?;
    let tls = (!plain).then_some(&tls);
    let open = |_| async move {
        let mut io = connect(addr, host, tls).await?;
        let request =
            format!("GET /sse HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n");
        io.write_all(request.as_bytes()).await?;
        let (head, rest) = read_head(io.as_mut()).await?;
        if head.split(' ').nth(1) != Some("200") {
            bail!("answer {head:?}");
        }
        Ok::<_, anyhow::Error>((io, rest))
    };
    let opened: Vec<_> = futures_util::stream::iter(0..streams)
        .map(open)
        .buffer_unordered(32)
        .collect()
        .await;
    let mut ios = Vec::with_capacity(streams);
    for r in opened {
        ios.push(r?);
    }
    let start = now_ns();
    let deadline = Instant::now() + Duration::from_secs(secs as u64);
    let tasks: Vec<_> = ios
        .into_iter()
        .map(|(mut io, mut carry)| {
            tokio::spawn(async move {
                let mut delays = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(Ok(n)) =
                    tokio::time::timeout_at(deadline.into(), io.read(&mut chunk)).await
                {
                    if n == 0 {
                        break;
                    }
                    let arrived = now_ns();
                    carry.extend_from_slice(&chunk[..n]);
                    while let Some(end) = carry.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = carry.drain(..=end).collect();
                        let sent = std::str::from_utf8(&line)
                            .ok()
                            .and_then(|l| l.trim().strip_prefix("data:"))
                            .and_then(|v| v.trim().parse::<u128>().ok());
                        if let Some(sent) = sent.filter(|&s| s >= start) {
                            delays.push(arrived.saturating_sub(sent) as u64 / 1000);
                        }
                    }
                }
                delays
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "events {} p50_us {} p99_us {} max_us {}",
        all.len(),
        pct(0.5),
        pct(0.99),
        all.last().copied().unwrap_or(0)
    );
    Ok(())
}

fn handshakes(
    addr: SocketAddr,
    host: &str,
    threads: usize,
    secs: usize,
    resume: bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs as u64);
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (host, request) = (host.to_string(), request.clone());
            std::thread::spawn(move || -> Result<(u64, u64, u64)> {
                let tls = connector()?;
                let (mut done, mut errors, mut resumed) = (0, 0, 0);
                let mut answer = Vec::with_capacity(4096);
                let mut session: Option<openssl::ssl::SslSession> = None;
                while Instant::now() < deadline {
                    let mut one = || -> Result<()> {
                        let tcp = std::net::TcpStream::connect(addr)?;
                        tcp.set_nodelay(true)?;
                        let mut ssl = tls.configure()?.verify_hostname(false).into_ssl(&host)?;
                        if let Some(previous) = session.as_ref().filter(|_| resume) {
                            // SAFETY: the session comes from a connection of this same
                            // connector's context.
                            unsafe { ssl.set_session(previous)? };
                        }
                        let mut stream = ssl.connect(tcp).map_err(|e| anyhow::anyhow!("{e}"))?;
                        stream.write_all(request.as_bytes())?;
                        answer.clear();
                        stream.read_to_end(&mut answer)?;
                        if !answer.starts_with(b"HTTP/1.1 200") {
                            let start = String::from_utf8_lossy(&answer[..answer.len().min(40)]);
                            bail!("answer {start:?}");
                        }
                        resumed += u64::from(stream.ssl().session_reused());
                        // The ticket came after the handshake: read with the answer.
                        session = stream.ssl().session().map(|s| s.to_owned());
                        // The server closed after its answer. Without the shutdown
                        // marked done, OpenSSL would count the connection as broken
                        // when it is freed and make its session unresumable.
                        let both = ShutdownState::SENT | ShutdownState::RECEIVED;
                        stream.set_shutdown(both);
                        Ok(())
                    };
                    match one() {
                        Ok(()) => done += 1,
                        Err(e) => {
                            if errors == 0 {
                                eprintln!("handshake failed: {e:#}");
                            }
                            errors += 1;
                        }
                    }
                }
                Ok((done, errors, resumed))
            })
        })
        .collect();
    let (mut done, mut errors, mut resumed) = (0, 0, 0);
    for w in workers {
        let (d, e, r) = w.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
        done += d;
        errors += e;
        resumed += r;
    }
    println!(
        "handshakes {done} per_s {:.0} errors {errors} resumed {resumed}",
        done as f64 / secs as f64
    );
    Ok(())
}
