//! What a client connection on a public listener passes through before the proxy sees
//! its requests: `Capped` (outermost, at accept, before TLS) counts it against
//! `limits.max_connections_per_client` and `limits.max_connections`; `Counted` keeps
//! `gateway_open_connections` and the drain's count; `PerProtocol` (after TLS) gives an
//! HTTP/1.x connection its head and send deadlines (`Timed`) and an HTTP/2 connection
//! its own GOAWAY switch (`conn::h2`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use log::debug;
use pingora::apps::ServerApp;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;
use prometheus::IntGauge;

use crate::conn::caps::Full;
use crate::deadline::{SendDeadline, Timed};
use crate::lifecycle::InFlight;
use crate::state::Shared;

/// After the listeners close (SIGTERM, binary upgrade), how long idle keep-alive
/// connections stay open before they are closed. A busy client's next request arrives
/// meanwhile and is answered with `Connection: close`; closing at once would race with
/// requests already on the wire (a reset the client cannot retry safely).
const IDLE_CLOSE_DELAY: Duration = Duration::from_secs(2);

/// Closes a connection over a cap at once (counted, logged at debug).
pub struct Capped<A> {
    pub app: Arc<A>,
    pub shared: Arc<Shared>,
}

impl<A> Capped<A> {
    pub fn new(shared: &Arc<Shared>, app: A) -> Capped<A> {
        Capped {
            app: Arc::new(app),
            shared: shared.clone(),
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Capped<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let client = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let caps = self.shared.snapshot.load().conn_caps;
        let conns = &self.shared.conns;
        let _ticket = match conns.open.enter(client, &caps) {
            Ok(ticket) => ticket,
            Err(refused) => {
                let (counter, cap) = match refused {
                    Full::PerClient => (&conns.abuse.refused_per_client, "per_client"),
                    Full::Total => (&conns.abuse.refused_total, "total"),
                };
                counter.inc();
                debug!(
                    "event=connection_refused cap={cap} client={}",
                    client.map_or_else(|| "-".to_string(), |c| c.to_string())
                );
                return None;
            }
        };
        self.app.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

/// HTTP/1.x: `Timed` (head and send deadlines). HTTP/2: a shutdown signal of the
/// connection's own, following the listener's, that `conn::h2` turns on to send GOAWAY.
pub struct PerProtocol<A> {
    pub app: Arc<A>,
    pub shared: Arc<Shared>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for PerProtocol<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if stream.selected_alpn_proto() != Some(ALPN::H2) {
            let snapshot = self.shared.snapshot.load();
            let send = SendDeadline::new(
                snapshot.send_timeout,
                self.shared.conns.abuse.send_timeout.clone(),
            );
            let timed = Timed::new(stream, snapshot.header_timeout, send);
            drop(snapshot);
            return self.app.process_new(Box::new(timed), shutdown).await;
        }
        let digest = stream.get_socket_digest();
        let prefix = self.shared.snapshot.load().conn_caps.ipv6_prefix;
        let h2 = &self.shared.conns.h2;
        let (registration, signal) = h2.open(digest.as_ref(), *shutdown.borrow(), prefix);
        // Only the connection's streams may keep its digest alive (see `conn::h2`).
        drop(digest);
        let Some(registration) = registration else {
            return self.app.process_new(stream, shutdown).await;
        };
        let mut listener = shutdown.clone();
        let serve = self.app.process_new(stream, &signal);
        let closing = registration.closing();
        tokio::pin!(serve, closing);
        let mut following = true;
        loop {
            tokio::select! {
                out = &mut serve => return out,
                // Flagged, and its client did not close after the GOAWAY: dropping the
                // connection closes it.
                () = &mut closing => return None,
                changed = listener.changed(), if following => match changed {
                    Ok(()) => registration.follow(*listener.borrow()),
                    Err(_) => following = false,
                },
            }
        }
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

/// Wraps a listener's app: keeps `gateway_open_connections` up to date, counts each
/// connection as in flight when given `in_flight` (the drain then waits for it), and
/// delays closing idle keep-alive connections at shutdown by `IDLE_CLOSE_DELAY`.
pub struct Counted<A> {
    pub app: Arc<A>,
    pub open: IntGauge,
    /// `None` for the redirect listener: Pingora never closes its idle keep-alive
    /// connections early, and nothing is lost when a redirect connection is cut.
    pub in_flight: Option<InFlight>,
}

/// Decrements on drop, so a cancelled connection task is counted out too.
struct Open(IntGauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Counted<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.open.inc();
        let _open = Open(self.open.clone());
        let _ticket = self.in_flight.as_ref().map(InFlight::enter);
        self.app.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        let deadline = tokio::time::Instant::now() + IDLE_CLOSE_DELAY;
        while self.open.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.app.cleanup().await;
    }
}
