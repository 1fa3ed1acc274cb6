//! A deadline for each whole HTTP/1.x request head (`limits.header_timeout`): the defence
//! against slowloris, which holds connections open by sending a request head a byte at a
//! time.
//!
//! NOTE: Pingora 0.9 times each read of a request head, not the head as a whole
//! (cloudflare/pingora#447), so a client that sends a byte every few seconds is never
//! cut. `Timed` wraps the client's TLS stream and fails its reads once a head has taken
//! longer than the deadline. It knows where a head ends because the proxy tells it:
//! `head_done` when a request head has been read, `request_done` when the request is
//! over; the first byte after that starts the next head's clock. The first head's clock
//! starts with the connection. Both listeners are covered (HTTPS, and the plain-HTTP
//! redirect). HTTP/2 connections are not wrapped (their requests are framed and bounded
//! by the h2 layer, and idle connections closed).
//!
//! The same wrapper holds `limits.send_timeout` for HTTP/1.x (`SendDeadline`): Pingora's
//! own write timeout times each whole write, which would cut a slow reader.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::tls::ssl::SslRef;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Reading a request head: the deadline runs.
const HEAD: u8 = 0;
/// Reading a body, or an upgraded connection: no deadline.
const BODY: u8 = 1;
/// Between requests: the keep-alive idle timeout applies; the next byte starts a head.
const IDLE: u8 = 2;

/// A client stream whose reads fail once a request head is overdue, and whose writes
/// fail once the client has accepted nothing for `send_timeout`.
pub struct Timed {
    inner: Stream,
    timeout: Duration,
    /// `HEAD`, `BODY` or `IDLE`; set by the proxy through `head_done` / `request_done`.
    state: AtomicU8,
    /// Fires at the current head's deadline (stale while not in `HEAD`).
    deadline: Pin<Box<Sleep>>,
    send: SendDeadline,
}

impl Timed {
    pub fn new(inner: Stream, timeout: Duration, send: SendDeadline) -> Timed {
        Timed {
            inner,
            timeout,
            state: AtomicU8::new(HEAD),
            deadline: Box::pin(tokio::time::sleep(timeout)),
            send,
        }
    }
}

/// nginx's `send_timeout`: the time between two writes the client accepts, not the
/// time of a whole answer. A write that cannot go on (the client's window and the
/// kernel's buffer are full) starts the clock; any byte accepted stops it. A slow but
/// reading client is never cut.
pub struct SendDeadline {
    timeout: Duration,
    /// Made on the first stall (most connections never stall).
    clock: Option<Pin<Box<Sleep>>>,
    stalled: bool,
    /// The deadline passed: the connection is being given up.
    fired: bool,
    /// Counts the connections cut (`gateway_aborted_total{reason="send_timeout"}`).
    cut: IntCounter,
}

impl SendDeadline {
    pub fn new(timeout: Duration, cut: IntCounter) -> SendDeadline {
        SendDeadline {
            timeout,
            clock: None,
            stalled: false,
            fired: false,
            cut,
        }
    }

    /// Passes on a write's outcome; a write stalled for `timeout` becomes an error (and
    /// every write after it: the connection is over).
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if self.fired {
            return Poll::Ready(Err(timed_out()));
        }
        if write.is_ready() {
            self.stalled = false;
            return write;
        }
        if !self.stalled {
            self.stalled = true;
            let at = Instant::now() + self.timeout;
            match &mut self.clock {
                Some(clock) => clock.as_mut().reset(at),
                None => self.clock = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        let due = self
            .clock
            .as_mut()
            .is_some_and(|clock| clock.as_mut().poll(cx).is_ready());
        if !due {
            return Poll::Pending;
        }
        self.fired = true;
        self.cut.inc();
        Poll::Ready(Err(timed_out()))
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the client accepted nothing within limits.send_timeout",
    )
}

/// The proxy read a whole request head on `stream`: its clock stops.
pub fn head_done(stream: Option<&Stream>) {
    set(stream, BODY);
}

/// The request on `stream` is over: the next byte starts the next head's clock.
pub fn request_done(stream: Option<&Stream>) {
    set(stream, IDLE);
}

fn set(stream: Option<&Stream>, state: u8) {
    if let Some(timed) = stream.and_then(|s| s.as_any().downcast_ref::<Timed>()) {
        timed.state.store(state, Ordering::Relaxed);
    }
}

impl AsyncRead for Timed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.state.load(Ordering::Relaxed) {
            HEAD => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request head not complete within limits.header_timeout",
                    )));
                }
                Pin::new(&mut this.inner).poll_read(cx, buf)
            }
            IDLE => {
                let before = buf.filled().len();
                let read = Pin::new(&mut this.inner).poll_read(cx, buf);
                if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
                    this.state.store(HEAD, Ordering::Relaxed);
                    let at = Instant::now() + this.timeout;
                    this.deadline.as_mut().reset(at);
                }
                read
            }
            _ => Pin::new(&mut this.inner).poll_read(cx, buf),
        }
    }
}

// === Everything else is the inner stream's ===

impl AsyncWrite for Timed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let write = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.send.watch(cx, write)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let write = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.send.watch(cx, write)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flush = Pin::new(&mut this.inner).poll_flush(cx);
        this.send.watch(cx, flush)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let shutdown = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.send.watch(cx, shutdown)
    }
}

#[async_trait]
impl Shutdown for Timed {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await;
    }
}

impl UniqueID for Timed {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Timed {
    fn get_ssl(&self) -> Option<&SslRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Timed {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Timed {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for Timed {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait]
impl Peek for Timed {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

impl fmt::Debug for Timed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timed")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
