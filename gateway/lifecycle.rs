//! Graceful stop. Pingora's SIGTERM handling always sleeps its whole grace period, even
//! with nothing in flight; operators expect `systemctl stop` to return as soon as the
//! last request is done (as nginx does), and never later than `shutdown_timeout`.
//!
//! `InFlight` counts requests from header to log line; `watch` exits the process once
//! shutdown has begun and the count has stayed at zero briefly, or at the deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;
use pingora::server::ExecutionPhase;
use tokio::sync::broadcast::Receiver;

/// How long the in-flight count must stay at zero before exiting: covers a request
/// whose connection was accepted but whose header has not been read yet.
const SETTLE: Duration = Duration::from_millis(300);
const POLL: Duration = Duration::from_millis(50);

/// Number of requests in progress, process-wide.
#[derive(Debug, Default, Clone)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Counts a request until the returned ticket is dropped.
    pub fn enter(&self) -> Ticket {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ticket(self.0.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One request in progress; decrements the count on drop (whatever phase ends it).
#[derive(Debug)]
pub struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts a thread that ends the process when a graceful shutdown has drained: on
/// SIGTERM within `shutdown_timeout`, on a graceful upgrade (SIGQUIT) within
/// `upgrade_grace`. Pingora's own grace period must be at least the larger of the two.
/// `handing_over` runs when an upgrade begins (the next process takes the managed apps
/// over); `last` runs once drained, just before the exit, told whether this was an
/// upgrade or a stop.
pub fn watch(
    mut phases: Receiver<ExecutionPhase>,
    in_flight: InFlight,
    (shutdown_timeout, upgrade_grace): (Duration, Duration),
    handing_over: impl FnOnce() + Send + 'static,
    last: impl FnOnce(bool) + Send + 'static,
) {
    std::thread::spawn(move || {
        let mut limit = shutdown_timeout;
        let mut upgrade = false;
        let mut handing_over = Some(handing_over);
        let deadline = loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::GracefulUpgradeTransferringFds) => {
                    limit = upgrade_grace;
                    upgrade = true;
                    if let Some(hand_over) = handing_over.take() {
                        hand_over();
                    }
                }
                Ok(ExecutionPhase::ShutdownGracePeriod) => break Instant::now() + limit,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        };
        info!(
            "event=draining in_flight={} limit_s={}",
            in_flight.count(),
            limit.as_secs()
        );
        let mut idle_since: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if in_flight.count() == 0 {
                let since = *idle_since.get_or_insert(now);
                if now.duration_since(since) >= SETTLE {
                    info!("event=drained");
                    break;
                }
            } else {
                idle_since = None;
            }
            if now >= deadline {
                info!("event=drain_deadline in_flight={}", in_flight.count());
                break;
            }
            std::thread::sleep(POLL);
        }
        last(upgrade);
        std::process::exit(0);
    });
}
