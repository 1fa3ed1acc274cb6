//! Assembles the Pingora server from a validated `Config`: the HTTPS proxy, the HTTP
//! redirect listener, the drain watcher. Holds no request logic.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use log::info;
use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::Opt;
use pingora::protocols::http::v2::server::default_h2_options;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::access_log::{AccessLog, Target};
use crate::acme::AcmeService;
use crate::admin::Admin;
use crate::config::{self, AccessLogTarget, Config, HttpMode};
use crate::lifecycle::{self, InFlight};
use crate::listener::{Capped, PerProtocol};
use crate::metrics::{Abuse, Metrics};
use crate::proxy::{Gateway, DOWNSTREAM_KEEPALIVE_SECS};
use crate::redirect::Redirect;
use crate::reload::{ReloadService, Reloader};
use crate::services::{Counted, ExposureWatch, LimitSweeper, LogReopener, TicketRotation};
use crate::state::{Shared, Snapshot};
use crate::tls::{self, Acceptor, CertStore, Tls};

/// Pingora's runtimes get this long to stop after the drain watcher has given up.
const RUNTIME_STOP_SECS: u64 = 1;

/// A client listener with a one-page L4 read buffer. Pingora's default gives every
/// connection a 64 KiB read buffer in front of the socket, zeroed (so resident) when the
/// connection opens: an idle keep-alive TLS connection held 120 KiB, 61 KiB with this
/// one (docs/performance.md, issue 17). With none at all (57 KiB) OpenSSL reads each
/// record's 5-byte header and its body separately, then once more to find the socket
/// empty: 4 reads per small request instead of 2; OpenSSL's own read-ahead avoids that
/// but costs 60 KiB a connection. A page holds a whole small request's record; bigger
/// records (uploads) are read past the buffer, straight into OpenSSL's. The write side
/// keeps Pingora's 1,460-byte buffer, which coalesces small writes.
const L4_READ_BUFFER: usize = 4096;

fn listener(addr: &str) -> ListenerConfig {
    ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings {
        read: Some(L4_READ_BUFFER),
        write: None,
    })
}

/// Turns transparent huge pages off for the rest of the process's life; `main` calls
/// this first thing. mimalloc asks the kernel for huge pages on its arenas, and a 2 MiB
/// page is resident as soon as one byte of it is touched; what a WebSocket holds is
/// mostly buffers of 64 KiB of which a few bytes are ever touched. Measured (1,000 held,
/// docs/performance.md): 154 KiB per WebSocket with huge pages, 80 KiB without, the idle
/// process 28 MiB against 19; CPU per keep-alive request and per handshake unchanged
/// (A/B 1.006× and 0.986×). The few MiB touched before `main` keep their huge pages.
pub fn no_huge_pages() {
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        eprintln!("warning: could not turn transparent huge pages off: {e}");
    }
}

/// Validates certificates, binds the listeners (or, with `upgrade`, takes them over from
/// the running process) and serves until a signal stops it.
pub fn run(path: &Path, config: Config, upgrade: bool) -> Result<(), Vec<config::Diagnostic>> {
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    let default = tls::default_cert(&config, true)?;
    let certs = CertStore::build(&config, Some(&default))?;
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        vec![config::Diagnostic::new(
            &config.file,
            None,
            format!("{what}: {e}"),
        )]
    };
    let metrics = match config.listen.metrics {
        Some(_) => Some(Metrics::new(env!("CARGO_PKG_VERSION")).map_err(|e| fail("metrics", &e))?),
        None => None,
    };
    if let Some(m) = &metrics {
        m.set_cert_expiry(certs.expiry());
    }
    let dropped = metrics.as_ref().map(|m| m.access_log_dropped());
    let access_log = match &config.access_log {
        AccessLogTarget::Off => None,
        AccessLogTarget::Stdout => {
            Some(AccessLog::start(Target::Stdout, dropped).map_err(|e| fail("access_log", &e)))
        }
        AccessLogTarget::File(path) => Some(
            AccessLog::start(Target::File(path.clone()), dropped)
                .map_err(|e| fail(&format!("access_log: cannot open {}", path.display()), &e)),
        ),
    }
    .transpose()?;
    let nofile = crate::conn::caps::raise_nofile();
    let snapshot = Snapshot::build(&config, None, metrics.as_deref());
    crate::conn::caps::announce(&snapshot.conn_caps, nofile);
    let abuse = metrics
        .as_ref()
        .map_or_else(Abuse::unregistered, |m| m.abuse());
    let shared = Shared::new(snapshot, certs, abuse);
    let reloader = Reloader::new(
        path,
        config.clone(),
        default,
        shared.clone(),
        metrics.clone(),
    );
    let in_flight = InFlight::default();

    let threads = match config.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let conf = ServerConf {
        threads,
        // The drain watcher exits earlier (as soon as nothing is in flight, or at the
        // deadline of the kind of stop under way).
        grace_period_seconds: Some(config.shutdown_timeout.max(config.upgrade_grace).as_secs() + 1),
        graceful_shutdown_timeout_seconds: Some(RUNTIME_STOP_SECS),
        upgrade_sock: config.upgrade_sock.display().to_string(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let gateway = |tls: bool| Gateway {
        shared: shared.clone(),
        tls,
        in_flight: in_flight.clone(),
        access_log: access_log.clone(),
    };
    let open = |listener: &str| {
        metrics.as_ref().map_or_else(
            || crate::metrics::unregistered_gauge("unused"),
            |m| m.connections(listener),
        )
    };
    // The HTTPS listener is plain TCP: `Tls` does the handshakes (see tls/accept.rs), then
    // `PerProtocol` times HTTP/1.1 request heads and writes, and gives each HTTP/2
    // connection its GOAWAY switch; `Capped` counts connections from their accept.
    let server_conf = server.configuration.clone();
    let proxy_app = |tls: bool| {
        let mut proxy = pingora::proxy::http_proxy(&server_conf, gateway(tls));
        let mut h2 = default_h2_options();
        h2.max_header_list_size(
            u32::try_from(config.head_limits.max_header_bytes).unwrap_or(u32::MAX),
        );
        proxy.h2_options = Some(h2);
        let mut options = HttpServerOptions::default();
        options.h2_idle_timeout = Some(Duration::from_secs(DOWNSTREAM_KEEPALIVE_SECS));
        proxy.server_options = Some(options);
        Arc::new(PerProtocol {
            app: Arc::new(proxy),
            shared: shared.clone(),
        })
    };
    let proxy = proxy_app(true);
    let acceptor =
        Acceptor::build(config.tls.min_version).map_err(|e| fail("TLS setup failed", &e))?;
    let tls = Tls::new(
        proxy,
        acceptor.clone(),
        shared.certs.clone(),
        metrics.as_ref().map(|m| m.handshake_failures()),
    );
    let mut https = Service::new(
        "https".to_string(),
        Capped::new(
            &shared,
            Counted {
                app: Arc::new(tls),
                open: open("https"),
                in_flight: Some(in_flight.clone()),
            },
        ),
    );
    https.add_listener(listener(&config.listen.https.to_string()));
    server.add_service(https);

    match (config.listen.http, config.listen.http_mode) {
        (Some(addr), HttpMode::Redirect) => {
            let mut http = Service::new(
                "http".to_string(),
                Capped::new(
                    &shared,
                    Counted {
                        app: Arc::new(PerProtocol {
                            app: Arc::new(Redirect {
                                shared: Arc::clone(&shared),
                            }),
                            shared: Arc::clone(&shared),
                        }),
                        open: open("http"),
                        in_flight: None,
                    },
                ),
            );
            http.add_listener(listener(&addr.to_string()));
            server.add_service(http);
        }
        // Behind a balancer that terminates TLS: the same proxy, on plain TCP.
        (Some(addr), HttpMode::Proxy) => {
            let mut http = Service::new(
                "http".to_string(),
                Capped::new(
                    &shared,
                    Counted {
                        app: proxy_app(false),
                        open: open("http"),
                        in_flight: Some(in_flight.clone()),
                    },
                ),
            );
            http.add_listener(listener(&addr.to_string()));
            server.add_service(http);
        }
        (None, _) => {}
    }

    if let (Some(addr), Some(m)) = (config.listen.metrics, &metrics) {
        let admin = Admin {
            metrics: m.clone(),
            reloader: reloader.clone(),
            shared: shared.clone(),
        };
        let mut admin = Service::new("metrics".to_string(), admin);
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
    }
    let certificates = reloader.clone();
    server.add_service(background_service(
        "acme",
        AcmeService {
            plan: reloader.acme_plan(),
            challenges: shared.challenges.clone(),
            metrics: metrics.clone(),
            installed: Arc::new(move || certificates.reload_certificates()),
        },
    ));
    server.add_service(background_service("reload", ReloadService { reloader }));
    server.add_service(background_service(
        "rate limit sweeper",
        LimitSweeper {
            shared: shared.clone(),
        },
    ));
    server.add_service(background_service(
        "exposed-upstream check",
        ExposureWatch {
            shared: shared.clone(),
            metrics: metrics.clone(),
        },
    ));
    server.add_service(background_service(
        "health checks",
        crate::pool::HealthChecks {
            pools: {
                let shared = shared.clone();
                Box::new(move || shared.snapshot.load().pools.clone())
            },
        },
    ));
    server.add_service(background_service(
        "session ticket rotation",
        TicketRotation { acceptor },
    ));
    if let Some(log) = access_log {
        server.add_service(background_service("access log reopen", LogReopener { log }));
    }

    lifecycle::watch(
        server.watch_execution_phase(),
        in_flight,
        config.shutdown_timeout,
        config.upgrade_grace,
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
