//! The runtime view of one configuration (`Snapshot`) and the swappable handles the
//! request path reads (`Shared`). A request loads the snapshot once and keeps the
//! `Arc<ActiveRoute>` it matched, so it never sees two configurations.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderName, HeaderValue};
use pingora::connectors::http::Connector;
use tokio::sync::Notify;

use ipnet::IpNet;

use crate::acme::Challenges;
use crate::admission::Admission;
use crate::apps::{App, Apps};
use crate::auth::{Failures, RouteAccess, Verifier};
/// How slowly a request body may come: a plain value the snapshot holds for the proxy.
pub use crate::config::BodyDeadline;
use crate::config::{Config, HttpMode, Route};
use crate::conn::caps::Caps;
use crate::conn::Connections;
use crate::keys::Keys;
use crate::limits::RateLimiter;
use crate::limits_store::LimitsStore;
use crate::metrics::{Abuse, Metrics, RouteMetrics, UNMATCHED};
use crate::pool::{Kept, Pool};
use crate::prefix::Prefix;
use crate::router::RouteTable;
use crate::tls::CertStore;

/// `identity_header` as the request path needs it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: HeaderName,
    /// Other spellings of the name can reach the app (fields with `_` are kept,
    /// `limits.underscores_in_headers`, or the name has one): every field that reads the
    /// same once `-` and `_` are one is removed.
    pub cgi: bool,
}

/// A route as the request path needs it: everything precomputed.
#[derive(Debug)]
pub struct ActiveRoute {
    /// Label in logs, metrics and error pages.
    pub name: String,
    /// The app's replicas (one for `upstream: host:port`).
    pub pool: Arc<Pool>,
    /// Request body limit in bytes; `None` is unlimited.
    pub max_body: Option<u64>,
    /// Added to responses that lack them.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Text answers compressed for clients that accept it.
    pub compress: bool,
    /// Requests per client; `None`: not limited.
    pub rate_limit: Option<Arc<RateLimiter>>,
    /// This route's series; `None` when no metrics listener is configured.
    pub metrics: Option<Arc<RouteMetrics>>,
    /// Allowlist and logins; `None` for a public route.
    pub access: Option<Arc<RouteAccess>>,
    /// The route's path prefix; `None` for a route at `/`.
    pub prefix: Option<Prefix>,
    /// The `Host` the app gets instead of the client's (`upstream_host`).
    pub upstream_host: Option<HeaderValue>,
    /// The field that tells the app who the request is from (`identity_header`).
    pub identity: Option<Identity>,
    /// The managed app behind the route (`app:`), started on demand.
    pub app: Option<Arc<App>>,
    /// `app: [A, B]`: the apps that are the route's replicas (empty otherwise).
    pub replica_apps: Box<[Arc<App>]>,
}

impl ActiveRoute {
    fn build(
        route: &Route,
        pool: Arc<Pool>,
        rate_limit: Option<Arc<RateLimiter>>,
        metrics: Option<Arc<RouteMetrics>>,
        access: Option<RouteAccess>,
        (app, replica_apps): (Option<Arc<App>>, Box<[Arc<App>]>),
        underscores: bool,
    ) -> ActiveRoute {
        ActiveRoute {
            name: route.name.clone(),
            pool,
            max_body: route.max_body,
            headers: route.headers.clone(),
            compress: route.compress,
            rate_limit,
            metrics,
            access: access.map(Arc::new),
            prefix: Prefix::new(&route.path, route.strip_prefix, &route.upstreams),
            upstream_host: route.upstream_host.clone(),
            identity: route.access.identity_header.clone().map(|name| Identity {
                // A name with `_` has a `-` spelling that is never removed on arrival.
                cgi: underscores || name.as_str().contains('_'),
                name,
            }),
            app,
            replica_apps,
        }
    }

    /// The same route as served to a client on plain HTTP: without
    /// `Strict-Transport-Security`, which a browser ignores there and which would pin
    /// the host to HTTPS for anyone reading the page over a TLS-terminating balancer.
    fn for_plain_http(&self) -> ActiveRoute {
        ActiveRoute {
            name: self.name.clone(),
            pool: self.pool.clone(),
            max_body: self.max_body,
            headers: without_hsts(&self.headers),
            compress: self.compress,
            rate_limit: self.rate_limit.clone(),
            metrics: self.metrics.clone(),
            access: self.access.clone(),
            prefix: self.prefix.clone(),
            upstream_host: self.upstream_host.clone(),
            identity: self.identity.clone(),
            app: self.app.clone(),
            replica_apps: self.replica_apps.clone(),
        }
    }
}

fn without_hsts(headers: &[(HeaderName, HeaderValue)]) -> Vec<(HeaderName, HeaderValue)> {
    headers
        .iter()
        .filter(|(name, _)| name != http::header::STRICT_TRANSPORT_SECURITY)
        .cloned()
        .collect()
}

/// Everything the request path reads from one configuration.
#[derive(Debug)]
pub struct Snapshot {
    pub routes: RouteTable<ActiveRoute>,
    /// The routes the plain-HTTP listener serves to clients on plain HTTP with
    /// `http_mode: proxy` (see `ActiveRoute::for_plain_http`); `None` in redirect mode.
    /// A client a trusted balancer vouches for as on HTTPS gets `routes`.
    pub plain_routes: Option<RouteTable<ActiveRoute>>,
    /// `default_headers` without `Strict-Transport-Security`, for the same clients.
    pub plain_default_headers: Vec<(HeaderName, HeaderValue)>,
    /// Port of the HTTPS listener, for redirects (omitted from the URL when 443).
    pub https_port: u16,
    /// Security headers for the gateway's own pages when no route matched.
    pub default_headers: Vec<(HeaderName, HeaderValue)>,
    /// Where ACME HTTP-01 challenge files are read from, if anywhere.
    pub acme_webroot: Option<PathBuf>,
    /// Where this configuration's ACME orders (and replicas sharing its storage) write
    /// challenge answers: `acme.storage/<server>/`, served like a webroot.
    pub acme_challenges: Option<PathBuf>,
    /// Peers whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<IpNet>,
    /// Series of requests that matched no route.
    pub unmatched: Option<Arc<RouteMetrics>>,
    /// What a request head must be (framing, target, `limits`).
    pub admission: Admission,
    /// `limits.header_timeout`, for connections opened while this configuration is live.
    pub header_timeout: Duration,
    /// `limits.body_timeout` and `limits.body_min_rate`.
    pub body_deadline: BodyDeadline,
    /// `limits.send_timeout`.
    pub send_timeout: Duration,
    /// `limits.max_connections` (resolved) and `max_connections_per_client`, for
    /// connections accepted while this configuration is live.
    pub conn_caps: Caps,
    /// The names the metrics listener answers besides IP literals and `localhost`.
    pub metrics_hosts: Vec<String>,
    /// Every route's name and upstream, for the exposed-upstream check.
    pub upstreams: Vec<(String, SocketAddr)>,
    /// Every route's replicas, for the health checks.
    pub pools: Vec<Arc<Pool>>,
    /// Replicas and queues, handed on to the next configuration.
    kept: Kept,
    /// Each route's limiter by route name, for `build` to hand on to the next snapshot.
    limiters: HashMap<String, Arc<RateLimiter>>,
    /// Each route's failed-login counter by route name, handed on the same way.
    failures: HashMap<String, Arc<Failures>>,
    /// The store shared with other replicas (`limits_store`), handed on with its
    /// connection while its settings are unchanged.
    limits_store: Option<Arc<LimitsStore>>,
    /// The API keys, handed on by name (their buckets and requests in progress).
    keys: Arc<Keys>,
}

impl Snapshot {
    /// Builds the runtime view of `config`. A route of `previous` with the same name and
    /// the same `rate_limit` (`auth_failures`) settings keeps its limiter (failure
    /// counter), and with it its clients' state.
    pub fn build(
        config: &Config,
        previous: Option<&Snapshot>,
        metrics: Option<&Metrics>,
        apps: &Apps,
    ) -> Snapshot {
        let mut routes = RouteTable::default();
        let proxy_http = config.listen.http.is_some() && config.listen.http_mode == HttpMode::Proxy;
        let mut plain_routes = proxy_http.then(RouteTable::default);
        let mut limiters = HashMap::new();
        let mut failures = HashMap::new();
        let mut pools = Vec::with_capacity(config.routes.len());
        let mut kept = Kept::default();
        let mut handed_on = previous.map_or_else(Kept::default, |p| p.kept.handed_on());
        let store = limits_store(config, previous, metrics);
        let store = store.as_ref();
        let managed = apps.resolve(&config.apps, config.upgrade_grace);
        let keys = Arc::new(Keys::build(
            &config.api_keys,
            previous.map(|p| &*p.keys),
            store,
        ));
        for route in &config.routes {
            let (limiter, counter) = route_limits(route, config, previous, store);
            if let Some(l) = &limiter {
                limiters.insert(route.name.clone(), l.clone());
            }
            if let Some(f) = &counter {
                failures.insert(route.name.clone(), f.clone());
            }
            let route_keys = keys.for_route(route, metrics);
            let access = RouteAccess::build(route, counter, config.ipv6_prefix, route_keys);
            let series = metrics.map(|m| m.route(&route.name));
            let pool = Arc::new(Pool::build(
                route,
                &mut kept,
                &mut handed_on,
                metrics,
                &managed,
            ));
            pools.push(pool.clone());
            let app = route
                .app
                .as_ref()
                .and_then(|name| managed.get(name).cloned());
            let replica_apps = route
                .replica_apps
                .iter()
                .filter_map(|name| managed.get(name).cloned())
                .collect();
            let apps = (app, replica_apps);
            let underscores = config.head_limits.underscores_in_headers;
            let active =
                ActiveRoute::build(route, pool, limiter, series, access, apps, underscores);
            if let Some(plain) = &mut plain_routes {
                let table = plain.entry(&route.host);
                table.insert(&route.path, Arc::new(active.for_plain_http()));
            }
            routes
                .entry(&route.host)
                .insert(&route.path, Arc::new(active));
        }
        kept.finish(handed_on);
        Snapshot {
            routes,
            plain_routes,
            plain_default_headers: without_hsts(&config.headers),
            https_port: config.listen.https.port(),
            default_headers: config.headers.clone(),
            acme_webroot: config.acme_webroot.clone(),
            acme_challenges: config.acme.as_ref().map(|a| a.dir.clone()),
            trusted_proxies: config.trusted_proxies.clone(),
            unmatched: metrics.map(|m| m.route(UNMATCHED)),
            admission: Admission::build(&config.head_limits),
            header_timeout: config.head_limits.header_timeout,
            body_deadline: config.body_deadline,
            send_timeout: config.conn_limits.send_timeout,
            conn_caps: Caps::resolve(&config.conn_limits, config.ipv6_prefix),
            metrics_hosts: config.listen.metrics_hosts.clone(),
            upstreams: config.upstreams(),
            pools,
            kept,
            limiters,
            failures,
            limits_store: store.cloned(),
            keys,
        }
    }

    /// The routes for a client on HTTPS or not: on plain HTTP (`http_mode: proxy`), the
    /// ones without HSTS.
    pub fn routes_for(&self, https: bool) -> &RouteTable<ActiveRoute> {
        match &self.plain_routes {
            Some(plain) if !https => plain,
            _ => &self.routes,
        }
    }

    /// The security headers of the gateway's own pages when no route matched, for a
    /// client on HTTPS or not (see `plain_routes`).
    pub fn default_headers(&self, https: bool) -> &[(HeaderName, HeaderValue)] {
        match https {
            true => &self.default_headers,
            false => &self.plain_default_headers,
        }
    }

    /// Every route's rate limiter.
    pub fn limiters(&self) -> impl Iterator<Item = &Arc<RateLimiter>> {
        self.limiters.values().chain(self.keys.limiters())
    }
}

/// A route's rate limiter and failed-login counter (Basic logins only), each the
/// previous configuration's when built from the same settings.
fn route_limits(
    route: &Route,
    config: &Config,
    previous: Option<&Snapshot>,
    store: Option<&Arc<LimitsStore>>,
) -> (Option<Arc<RateLimiter>>, Option<Arc<Failures>>) {
    let prefix = config.ipv6_prefix;
    let limiter = route.rate_limit.as_ref().map(|settings| {
        let kept = previous.and_then(|p| p.limiters.get(&route.name));
        kept_or(
            kept,
            |l| l.same(settings, prefix, store),
            || RateLimiter::new(settings, prefix, &route.name, store),
        )
    });
    let counted = route.access.basic_auth.is_some() || route.access.api_keys.is_some();
    let counter = route.auth_failures.filter(|_| counted).map(|settings| {
        let kept = previous.and_then(|p| p.failures.get(&route.name));
        kept_or(
            kept,
            |f| f.same(settings, prefix, store),
            || Failures::new(settings, prefix, &route.name, store),
        )
    });
    (limiter, counter)
}

/// The shared store of `config`: the previous configuration's while the settings are the
/// same (its connection lives on), else a new one.
fn limits_store(
    config: &Config,
    previous: Option<&Snapshot>,
    metrics: Option<&Metrics>,
) -> Option<Arc<LimitsStore>> {
    let settings = config.limits_store.as_ref()?;
    let kept = previous.and_then(|p| p.limits_store.as_ref());
    if let Some(kept) = kept.filter(|k| k.settings() == settings) {
        return Some(kept.clone());
    }
    match LimitsStore::new(settings, metrics) {
        Ok(store) => Some(Arc::new(store)),
        Err(e) => {
            // The URL was checked when the file was read; this is not expected.
            log::error!(
                "event=limits_store_unusable error=\"{}\" note=\"limits kept per replica\"",
                crate::logging::chain(&e)
            );
            None
        }
    }
}

/// The previous configuration's `kept` state when it was built from the same settings
/// (`same`), else a fresh one: clients' rate buckets and failed-login counts survive a
/// reload that does not change their settings.
fn kept_or<T>(
    kept: Option<&Arc<T>>,
    same: impl Fn(&T) -> bool,
    fresh: impl FnOnce() -> T,
) -> Arc<T> {
    kept.filter(|k| same(k))
        .cloned()
        .unwrap_or_else(|| Arc::new(fresh()))
}

/// The handles shared by the proxy, the TLS handshakes, reload and background checks.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub certs: Arc<ArcSwap<CertStore>>,
    /// Signalled after each reload, for the checks that run again on a new configuration.
    pub reloaded: Notify,
    /// HTTP-01 answers of ACME orders in progress, for the plain-HTTP listener.
    pub challenges: Arc<Challenges>,
    /// The bounded pool that verifies password hashes, off the worker threads.
    pub verifier: Verifier,
    /// Open client connections by address, HTTP/2 connections' reset counts.
    pub conns: Connections,
    /// The managed apps and their coordinator.
    pub apps: Arc<Apps>,
    /// Connections the gateway makes itself (forward-auth checks, upgraded connections,
    /// see `proxy::upgrade`); made on first use (building one loads the system's trusted
    /// certificates).
    connector: OnceLock<Connector>,
}

impl Shared {
    /// The connector for forward-auth services and upgraded connections.
    pub fn connector(&self) -> &Connector {
        self.connector.get_or_init(|| Connector::new(None))
    }

    pub fn new(snapshot: Snapshot, certs: CertStore, abuse: Abuse, apps: Arc<Apps>) -> Arc<Shared> {
        Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            certs: Arc::new(ArcSwap::from_pointee(certs)),
            reloaded: Notify::new(),
            challenges: Arc::default(),
            verifier: Verifier::default(),
            conns: Connections::new(abuse),
            apps,
            connector: OnceLock::new(),
        })
    }
}
