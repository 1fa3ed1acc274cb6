//! Assembles the Pingora server from a validated `Config`: the sinks (metrics, access
//! log), the client listeners (HTTPS; plain HTTP as redirect or proxy), the metrics
//! listener, the background services (ACME, reload, rate-limit sweeping, the
//! exposed-upstream check, health checks, session-ticket rotation, access-log reopening)
//! and the drain watcher. Holds no request logic.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use log::info;
use pingora::apps::HttpServerOptions;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::Opt;
use pingora::protocols::http::v2::server::default_h2_options;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

use crate::access_log::{AccessLog, Lost, Target};
use crate::acme::AcmeService;
use crate::admin::Admin;
use crate::apps::Apps;
use crate::background::{ExposureWatch, LimitSweeper, LogReopener, MemoryReturn, TicketRotation};
use crate::config::{AccessLogTarget, Config, HttpMode};
use crate::exit::StartError;
use crate::lifecycle::{self, InFlight};
use crate::listener::{Capped, Counted, PerProtocol};
use crate::metrics::{Abuse, Metrics};
use crate::proxy::{Gateway, DOWNSTREAM_KEEPALIVE_SECS};
use crate::redirect::Redirect;
use crate::reload::{ReloadService, Reloader};
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
/// records (uploads) are read past the buffer, straight into OpenSSL's.
const L4_READ_BUFFER: usize = 4096;

/// The write side's buffer, which gathers the TLS records of one answer into one `write`.
/// Pingora's default, 1,460 bytes, is smaller than a small answer's head and body
/// together once the gateway's fields are in the head: a 1 KiB answer went out in two
/// writes (strace: 3 `sendto`s per request against bare Pingora's 2), and the kernel's
/// share of a request's CPU was 1.55× bare Pingora's (docs/performance.md, issue 32).
const L4_WRITE_BUFFER: usize = 4096;

fn listener(addr: &str) -> ListenerConfig {
    ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings {
        read: Some(L4_READ_BUFFER),
        write: Some(L4_WRITE_BUFFER),
    })
}

/// What every part of the server shares, made once from the configuration.
struct Parts {
    shared: Arc<Shared>,
    metrics: Option<Arc<Metrics>>,
    access_log: Option<Arc<AccessLog>>,
    reloader: Arc<Reloader>,
    in_flight: InFlight,
}

/// Validates certificates, binds the listeners (or, with `upgrade`, takes them over from
/// the running process) and serves until a signal stops it.
pub fn run(path: &Path, config: Config, upgrade: bool) -> Result<(), StartError> {
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    let default = tls::default_cert(&config, true)?;
    let certs = CertStore::build(&config, Some(&default))?;
    let (metrics, access_log) = sinks(&config)?;
    if let Some(m) = &metrics {
        m.set_cert_expiry(certs.expiry());
    }
    let nofile = crate::conn::caps::raise_nofile();
    let acceptor = Acceptor::build(config.tls.min_version).map_err(StartError::Tls)?;
    let threads = match config.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // The listening sockets first (in a binary upgrade, taken from the old process,
    // which hands its managed apps over at that moment), then the apps: the state file
    // then names every app the old process ran.
    let mut server = pingora_server(&config, threads, upgrade);
    let apps = Apps::start(Some(config.state_dir.path.clone()), metrics.clone())
        .map_err(StartError::Apps)?;
    let snapshot = Snapshot::build(&config, None, metrics.as_deref(), &apps);
    crate::conn::caps::announce(&snapshot.conn_caps, nofile);
    let abuse = metrics
        .as_ref()
        .map_or_else(Abuse::unregistered, |m| m.abuse());
    let shared = Shared::new(snapshot, certs, abuse, apps);
    let reloader = Reloader::new(
        path,
        config.clone(),
        default,
        shared.clone(),
        metrics.clone(),
    );
    let parts = Parts {
        shared,
        metrics,
        access_log,
        reloader,
        in_flight: InFlight::default(),
    };
    add_listeners(&mut server, &config, &parts, &acceptor);
    add_background(&mut server, &parts, acceptor);
    let apps = parts.shared.apps.clone();
    let handed = parts.shared.apps.clone();
    let access_log = parts.access_log.clone();
    lifecycle::watch(
        server.watch_execution_phase(),
        parts.in_flight,
        (config.shutdown_timeout, config.upgrade_grace),
        move || handed.hand_over(),
        move |upgrade| {
            if !upgrade {
                apps.stop_all();
            }
            if let Some(log) = &access_log {
                log.close();
            }
        },
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

/// The metrics registry (with a metrics listener) and the access log (unless `off`).
type Sinks = (Option<Arc<Metrics>>, Option<Arc<AccessLog>>);

fn sinks(config: &Config) -> Result<Sinks, StartError> {
    let metrics = match config.listen.metrics {
        Some(_) => Some(Metrics::new(env!("CARGO_PKG_VERSION"))?),
        None => None,
    };
    let lost = || {
        metrics.as_ref().map(|m| Lost {
            dropped: m.access_log_dropped(),
            unwritten: m.access_log_unwritten(),
        })
    };
    let access_log = match &config.access_log {
        AccessLogTarget::Off => None,
        AccessLogTarget::Stdout => {
            Some(AccessLog::start(Target::Stdout, lost()).map_err(StartError::AccessLogStdout)?)
        }
        AccessLogTarget::File(path) => Some(
            AccessLog::start(Target::File(path.clone()), lost()).map_err(|source| {
                StartError::AccessLogFile {
                    path: path.clone(),
                    source,
                }
            })?,
        ),
    };
    Ok((metrics, access_log))
}

/// Pingora's server: its worker threads, the stop deadlines, the upgrade socket.
fn pingora_server(config: &Config, threads: usize, upgrade: bool) -> Server {
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
    server
}

/// The client listeners: HTTPS, and plain HTTP (redirect or proxy) when configured.
///
/// The HTTPS listener is plain TCP: `Tls` does the handshakes (see tls/accept.rs), then
/// `PerProtocol` times HTTP/1.1 request heads and writes, and gives each HTTP/2
/// connection its GOAWAY switch; `Capped` counts connections from their accept.
fn add_listeners(server: &mut Server, config: &Config, parts: &Parts, acceptor: &Arc<Acceptor>) {
    let shared = &parts.shared;
    let open = |listener: &str| {
        parts.metrics.as_ref().map_or_else(
            || crate::metrics::unregistered_gauge("unused"),
            |m| m.connections(listener),
        )
    };
    let server_conf = server.configuration.clone();
    let proxy_app = |tls: bool| proxy_app(&server_conf, config, parts, tls);
    let tls = Tls::new(
        proxy_app(true),
        acceptor.clone(),
        shared.certs.clone(),
        parts.metrics.as_ref().map(|m| m.handshake_failures()),
    );
    let in_flight = Some(parts.in_flight.clone());
    let https = config.listen.https.to_string();
    add_client_listener(
        server,
        "https",
        &https,
        shared,
        Arc::new(tls),
        open("https"),
        in_flight,
    );
    if let Some(addr) = config.listen.http {
        let addr = addr.to_string();
        match config.listen.http_mode {
            HttpMode::Redirect => {
                let redirect = Arc::new(PerProtocol {
                    app: Arc::new(Redirect {
                        shared: shared.clone(),
                    }),
                    shared: shared.clone(),
                });
                add_client_listener(server, "http", &addr, shared, redirect, open("http"), None);
            }
            // Behind a balancer that terminates TLS: the same proxy, on plain TCP.
            HttpMode::Proxy => {
                let in_flight = Some(parts.in_flight.clone());
                let proxy = proxy_app(false);
                add_client_listener(
                    server,
                    "http",
                    &addr,
                    shared,
                    proxy,
                    open("http"),
                    in_flight,
                );
            }
        }
    }
    if let (Some(addr), Some(m)) = (config.listen.metrics, &parts.metrics) {
        let admin = Admin {
            metrics: m.clone(),
            reloader: parts.reloader.clone(),
            shared: shared.clone(),
        };
        let mut admin = Service::new("metrics".to_string(), admin);
        admin.add_tcp(&addr.to_string());
        server.add_service(admin);
    }
}

/// The proxy of the HTTPS listener (`tls`), or of the plain-HTTP one in `http_mode:
/// proxy`, with its HTTP/2 settings and its per-connection wrapper.
fn proxy_app(
    server_conf: &Arc<ServerConf>,
    config: &Config,
    parts: &Parts,
    tls: bool,
) -> Arc<PerProtocol<HttpProxy<Gateway>>> {
    let gateway = Gateway {
        shared: parts.shared.clone(),
        tls,
        in_flight: parts.in_flight.clone(),
        access_log: parts.access_log.clone(),
    };
    let mut proxy = pingora::proxy::http_proxy(server_conf, gateway);
    let mut h2 = default_h2_options();
    h2.max_header_list_size(u32::try_from(config.head_limits.max_header_bytes).unwrap_or(u32::MAX));
    proxy.h2_options = Some(h2);
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(Duration::from_secs(DOWNSTREAM_KEEPALIVE_SECS));
    proxy.server_options = Some(options);
    Arc::new(PerProtocol {
        app: Arc::new(proxy),
        shared: parts.shared.clone(),
    })
}

/// Adds a client listener on `addr` serving `app`, its connections capped (`Capped`)
/// and counted in `open` (and in flight for the drain, with `in_flight`).
fn add_client_listener<A: pingora::apps::ServerApp + Send + Sync + 'static>(
    server: &mut Server,
    name: &str,
    addr: &str,
    shared: &Arc<Shared>,
    app: Arc<A>,
    open: prometheus::IntGauge,
    in_flight: Option<InFlight>,
) {
    let counted = Counted {
        app,
        open,
        in_flight,
    };
    let mut service = Service::new(name.to_string(), Capped::new(shared, counted));
    service.add_listener(listener(addr));
    server.add_service(service);
}

/// The background services: ACME orders, reload, rate-limit sweeping, the
/// exposed-upstream check, health checks, session-ticket rotation, access-log reopening.
fn add_background(server: &mut Server, parts: &Parts, acceptor: Arc<Acceptor>) {
    let shared = &parts.shared;
    let certificates = parts.reloader.clone();
    server.add_service(background_service(
        "acme",
        AcmeService {
            plan: parts.reloader.acme_plan(),
            challenges: shared.challenges.clone(),
            metrics: parts.metrics.clone(),
            installed: Arc::new(move || certificates.reload_certificates()),
        },
    ));
    server.add_service(background_service(
        "reload",
        ReloadService {
            reloader: parts.reloader.clone(),
        },
    ));
    server.add_service(background_service(
        "rate limit sweeper",
        LimitSweeper {
            shared: shared.clone(),
        },
    ));
    server.add_service(background_service("memory return", MemoryReturn));
    server.add_service(background_service(
        "exposed-upstream check",
        ExposureWatch {
            shared: shared.clone(),
            metrics: parts.metrics.clone(),
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
    if let Some(log) = &parts.access_log {
        server.add_service(background_service(
            "access log reopen",
            LogReopener { log: log.clone() },
        ));
    }
}
