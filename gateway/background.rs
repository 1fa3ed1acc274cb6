//! The small background services: rate-limit sweeping, giving freed memory back,
//! session-ticket key rotation, the exposed-upstream check, and access-log reopening on
//! SIGUSR1. (The others have their module: health checks in `pool::health`, ACME in
//! `acme`, reloads in `reload`.)

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::access_log::AccessLog;
use crate::exposure;
use crate::memory;
use crate::metrics::Metrics;
use crate::state::Shared;
use crate::tls::{Acceptor, TICKET_KEY_LIFETIME};

/// How often rate limiters forget clients whose bucket has refilled.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

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

/// Hands memory freed after a peak back to the kernel (see `memory::give_back`).
pub struct MemoryReturn;

#[async_trait]
impl BackgroundService for MemoryReturn {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(memory::GIVE_BACK_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => memory::give_back(),
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
