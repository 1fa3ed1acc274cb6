//! Active health checks: every `health.interval`, each replica of a pool with `health`
//! gets `GET health.path`, which must answer 2xx or 3xx within `health.timeout`. The
//! request itself is Pingora's (`pingora_load_balancing`'s `HttpHealthCheck`: a fresh
//! connection each time, so that a firewall or a dead listener is not hidden by a pooled
//! one); the state it feeds (`Replica::observe`) also takes the request path's failed
//! connects, which Pingora's own health registry cannot.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::http::ResponseHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora_load_balancing::health_check::{HealthCheck as _, HttpHealthCheck};
use pingora_load_balancing::Backend;

use super::replica::Observed;
use super::Pool;
use crate::config::HealthCheck;

/// Longest the loop sleeps, so that a reload's new pools are checked soon.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// The background service that runs the checks of the live configuration's pools.
pub struct HealthChecks {
    /// The pools of the configuration live now (asked again on every round, so a
    /// reload's pools are checked within `MAX_SLEEP`).
    pub pools: Box<dyn Fn() -> Vec<Arc<Pool>> + Send + Sync>,
}

/// A route's prober, rebuilt when its settings change.
struct Prober {
    settings: HealthCheck,
    check: Arc<HttpHealthCheck>,
}

fn prober(settings: &HealthCheck) -> Option<Prober> {
    let mut check = HttpHealthCheck::new("localhost", false);
    check.req = pingora::http::RequestHeader::build("GET", settings.path.as_bytes(), None).ok()?;
    check.req.insert_header("host", "localhost").ok()?;
    check
        .req
        .insert_header(
            "user-agent",
            concat!("gateway-health/", env!("CARGO_PKG_VERSION")),
        )
        .ok()?;
    check.peer_template.options.connection_timeout = Some(settings.timeout);
    check.peer_template.options.read_timeout = Some(settings.timeout);
    check.peer_template.options.write_timeout = Some(settings.timeout);
    check.validator = Some(Box::new(|resp: &ResponseHeader| {
        let code = resp.status.as_u16();
        if (200..400).contains(&code) {
            Ok(())
        } else {
            pingora::Error::e_explain(
                pingora::ErrorType::CustomCode("health check status", code),
                "status not 2xx or 3xx",
            )
        }
    }));
    Some(Prober {
        settings: settings.clone(),
        check: Arc::new(check),
    })
}

/// One check of `replica`, its result recorded.
async fn run(pool: Arc<Pool>, index: usize, check: Arc<HttpHealthCheck>, settings: HealthCheck) {
    let Some(replica) = pool.replicas().nth(index).cloned() else {
        return;
    };
    let result = match Backend::new(&replica.addr.to_string()) {
        Ok(backend) => tokio::time::timeout(settings.timeout, check.check(&backend)).await,
        Err(_) => return,
    };
    let reason = match &result {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(match e.etype() {
            pingora::ErrorType::CustomCode(_, code) => format!("health check: status {code}"),
            _ => format!("health check: {}", e.etype().as_str()),
        }),
        Err(_) => Some(format!(
            "health check: no answer within {}",
            humantime::format_duration(settings.timeout)
        )),
    };
    let seen = match &reason {
        None => Observed::Good,
        Some(reason) => Observed::Bad(reason),
    };
    if replica.observe(seen, settings.unhealthy_after, settings.healthy_after) {
        pool.health_changed(&replica);
    }
    replica.checking.store(false, Ordering::Relaxed);
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut probers: HashMap<Arc<str>, Prober> = HashMap::new();
        let mut next: HashMap<(Arc<str>, SocketAddr), Instant> = HashMap::new();
        loop {
            let pools = (self.pools)();
            let now = Instant::now();
            let mut wake = now + MAX_SLEEP;
            let mut seen = Vec::new();
            for pool in &pools {
                let Some(settings) = &pool.health else {
                    continue;
                };
                let stale = probers
                    .get(&pool.route)
                    .is_none_or(|p| &p.settings != settings);
                if stale {
                    match prober(settings) {
                        Some(p) => probers.insert(pool.route.clone(), p),
                        None => continue,
                    };
                }
                let Some(prober) = probers.get(&pool.route) else {
                    continue;
                };
                for (index, replica) in pool.replicas().enumerate() {
                    let key = (pool.route.clone(), replica.addr);
                    let due = *next.entry(key.clone()).or_insert(now);
                    seen.push(key.clone());
                    if due > now {
                        wake = wake.min(due);
                        continue;
                    }
                    let at = now + settings.interval;
                    next.insert(key, at);
                    wake = wake.min(at);
                    if replica.checking.swap(true, Ordering::Relaxed) {
                        continue;
                    }
                    tokio::spawn(run(
                        pool.clone(),
                        index,
                        prober.check.clone(),
                        settings.clone(),
                    ));
                }
            }
            next.retain(|k, _| seen.contains(k));
            probers.retain(|route, _| pools.iter().any(|p| &p.route == route));
            drop(pools);
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
