//! Small Pingora services around the proxy: a connection counter for listeners and the
//! background tasks (rate-limit sweeping, session-ticket key rotation, the
//! exposed-upstream check, access-log reopening on SIGUSR1).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::IntGauge;

use crate::access_log::AccessLog;
use crate::exposure;
use crate::lifecycle::InFlight;
use crate::metrics::Metrics;
use crate::state::Shared;
use crate::tls::{Acceptor, TICKET_KEY_LIFETIME};

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

/// Rotates the HTTPS listener's session-ticket keys every `TICKET_KEY_LIFETIME`.
pub struct TicketRotation {
    pub acceptor: Arc<Acceptor>,
}

#[async_trait]
impl BackgroundService for TicketRotation {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let first = tokio::time::Instant::now() + TICKET_KEY_LIFETIME;
        let mut tick = tokio::time::interval_at(first, TICKET_KEY_LIFETIME);
        loop {
            tokio::select! {
                _ = tick.tick() => self.acceptor.rotate(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The exposed-upstream check (see `exposure`), at start, after each reload and every
/// `exposure::EVERY`: a warning per exposed route, and `gateway_upstream_exposed`.
pub struct ExposureWatch {
    pub shared: Arc<Shared>,
    pub metrics: Option<Arc<Metrics>>,
}

impl ExposureWatch {
    async fn check(&self) {
        let routes = self.shared.snapshot.load().upstreams.clone();
        let checked = routes.clone();
        let found = tokio::task::spawn_blocking(move || {
            exposure::check(&checked, &exposure::local_addresses())
        })
        .await
        .unwrap_or_default();
        for exposed in &found {
            log::warn!(
                "event=upstream_exposed route={} upstream={} reachable_at={} message=\"{}\"",
                exposed.route,
                exposed.upstream,
                exposed.reachable,
                exposed.warning()
            );
        }
        if let Some(m) = &self.metrics {
            m.set_exposed(
                routes
                    .iter()
                    .map(|(route, _)| (route.as_str(), found.iter().any(|e| &e.route == route))),
            );
        }
    }
}

#[async_trait]
impl BackgroundService for ExposureWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            self.check().await;
            tokio::select! {
                _ = tokio::time::sleep(exposure::EVERY) => {}
                _ = self.shared.reloaded.notified() => {}
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
