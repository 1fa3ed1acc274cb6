//! Assembles the Pingora server from a validated `Config`: the HTTPS proxy, the HTTP
//! redirect listener, the drain watcher. Holds no request logic.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use log::info;
use pingora::prelude::Opt;
use pingora::server::configuration::ServerConf;
use pingora::server::{Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::config::{self, CertFiles, Config};
use crate::lifecycle::{self, InFlight};
use crate::proxy::Gateway;
use crate::redirect::Redirect;
use crate::state::{Shared, Snapshot};
use crate::tls::{self, CertStore};

/// Pingora's runtimes get this long to stop after the drain watcher has given up.
const RUNTIME_STOP_SECS: u64 = 1;

/// How often rate limiters forget clients whose bucket has refilled.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Frees the state of idle rate-limit clients (the key bound holds regardless).
struct LimitSweeper {
    shared: Arc<Shared>,
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

/// The default certificate: the configured one, or a self-signed pair generated (when
/// `write`) beside the config. Logs when it generates one.
pub fn default_cert(config: &Config, write: bool) -> Result<CertFiles, Vec<config::Diagnostic>> {
    if let Some(files) = &config.tls.default_cert {
        return Ok(files.clone());
    }
    let (files, generated) = tls::ensure_self_signed(config, write)
        .map_err(|e| vec![config::Diagnostic::new(&config.file, None, e)])?;
    if generated {
        info!(
            "event=self_signed_generated cert={} key={} note=\"tls names no certificate; browsers will warn\"",
            files.cert.display(),
            files.key.display()
        );
    }
    Ok(files)
}

/// Validates certificates, binds the listeners and serves until a signal stops it.
pub fn run(config: Config) -> Result<(), Vec<config::Diagnostic>> {
    let default = default_cert(&config, true)?;
    let certs = CertStore::build(&config, Some(&default))?;
    let shared = Shared::new(Snapshot::build(&config, None), certs);
    let in_flight = InFlight::default();

    let threads = match config.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let conf = ServerConf {
        threads,
        // The drain watcher exits earlier (as soon as nothing is in flight).
        grace_period_seconds: Some(config.shutdown_timeout.as_secs() + 1),
        graceful_shutdown_timeout_seconds: Some(RUNTIME_STOP_SECS),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();

    let gateway = Gateway {
        shared: shared.clone(),
        in_flight: in_flight.clone(),
    };
    let mut https =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, gateway, "https");
    let tls_settings =
        tls::settings(shared.certs.clone(), config.tls.min_version).map_err(|e| {
            vec![config::Diagnostic::new(
                &config.file,
                None,
                format!("TLS setup failed: {e}"),
            )]
        })?;
    https.add_tls_with_settings(&config.listen.https.to_string(), None, tls_settings);
    server.add_service(https);

    if let Some(addr) = config.listen.http {
        let mut http = Service::new(
            "http".to_string(),
            Redirect {
                shared: Arc::clone(&shared),
            },
        );
        http.add_tcp(&addr.to_string());
        server.add_service(http);
    }

    server.add_service(background_service(
        "rate limit sweeper",
        LimitSweeper {
            shared: shared.clone(),
        },
    ));

    lifecycle::watch(
        server.watch_execution_phase(),
        in_flight,
        config.shutdown_timeout,
        config.shutdown_timeout,
    );
    info!(
        "event=starting routes={} https={} http={} threads={threads}",
        config.routes.len(),
        config.listen.https,
        config
            .listen
            .http
            .map_or("off".to_string(), |a| a.to_string()),
    );
    server.run_forever();
}
