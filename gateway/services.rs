//! Small Pingora services around the proxy: a connection counter for listeners and the
//! background tasks (rate-limit sweeping, access-log reopening on SIGUSR1).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::IntGauge;

use crate::access_log::AccessLog;
use crate::lifecycle::InFlight;
use crate::state::Shared;

/// How often rate limiters forget clients whose bucket has refilled.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// After the listeners close (SIGTERM, binary upgrade), how long idle keep-alive
/// connections stay open before they are closed. A busy client's next request arrives
/// meanwhile and is answered with `Connection: close`; closing at once would race with
/// requests already on the wire (a reset the client cannot retry safely).
const IDLE_CLOSE_DELAY: Duration = Duration::from_secs(2);

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

/// Frees the state of idle rate-limit clients (the key bound holds regardless).
pub struct LimitSweeper {
    pub shared: Arc<Shared>,
}

#[async_trait]
impl BackgroundService for LimitSweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    for limiter in self.shared.snapshot.load().limiters() {
                        limiter.sweep();
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Reopens the access log file on SIGUSR1 (after logrotate has moved it).
pub struct LogReopener {
    pub log: Arc<AccessLog>,
}

#[async_trait]
impl BackgroundService for LogReopener {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut usr1 = match signal(SignalKind::user_defined1()) {
            Ok(s) => s,
            Err(e) => {
                log::warn!("event=sigusr1_unavailable error={e}");
                return;
            }
        };
        loop {
            tokio::select! {
                Some(()) = usr1.recv() => {
                    log::info!("event=access_log_reopen");
                    self.log.reopen();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
