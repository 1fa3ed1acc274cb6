//! The validated configuration: plain data, no YAML and no Pingora types. Built once per
//! load by `validate`; the runtime structures (`router`, `tls`, `state`) are built from it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
pub use ipnet::IpNet;

pub use super::apps::{
    App, Apps, Control, GpuNeed, Group, Ready, RunSpec, Wake, DEFAULT_MAX_WAITING,
    DEFAULT_READY_INTERVAL, DEFAULT_START_TIMEOUT, DEFAULT_STOP_TIMEOUT,
};
pub use super::connections::ConnLimits;
use super::error::Pos;
pub use super::keys::{ApiKey, ApiKeys, KeyChoice, DEFAULT_KEY_PARAM};
pub use super::limits::{BodyDeadline, HeadLimits, RateKey, RateLimit};
pub use super::store::{LimitsStoreSettings, OnStoreError};

/// Built-in `max_body` when neither the route nor `defaults` sets one: large enough for
/// audio and video uploads to AI apps (nginx's 1 MiB default is the classic trap).
pub const DEFAULT_MAX_BODY: u64 = 1 << 30;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Long enough for a generation job that is silent for a while.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(3600);
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// A binary upgrade lets the old process finish its requests for this long: long enough
/// for a generation job or a WebSocket session (Pingora's 300 s would cut them).
pub const DEFAULT_UPGRADE_GRACE: Duration = Duration::from_secs(3600);
pub const DEFAULT_HTTPS: &str = "0.0.0.0:443";
pub const DEFAULT_AUTH_FAILURES: FailureLimit = FailureLimit {
    limit: 10,
    per: Duration::from_secs(60),
};
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from, as given (used in diagnostics).
    pub file: PathBuf,
    pub listen: Listen,
    pub tls: Tls,
    /// How long SIGTERM waits for in-flight requests before exiting.
    pub shutdown_timeout: Duration,
    /// How long the old process of a binary upgrade may finish its requests.
    pub upgrade_grace: Duration,
    /// The Unix socket over which a binary upgrade hands the listening sockets over.
    pub upgrade_sock: PathBuf,
    /// Worker threads for the proxy (0 means one per CPU).
    pub threads: usize,
    /// `defaults.headers` (or the built-in security headers): sent on the gateway's own
    /// pages when no route matched.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Directory whose `.well-known/acme-challenge/` files the HTTP listener serves
    /// (certbot `--webroot -w DIR`). `None`: every HTTP request is redirected.
    pub acme_webroot: Option<PathBuf>,
    /// Peers whose `X-Forwarded-For` is believed when finding the client's address.
    pub trusted_proxies: Vec<IpNet>,
    /// Where the JSON access log goes.
    pub access_log: AccessLogTarget,
    /// What a client's request head may be.
    pub head_limits: HeadLimits,
    /// How slowly a client may send its request body.
    pub body_deadline: BodyDeadline,
    /// The prefix length that keys an IPv6 client in rate limits and failed-login counts.
    pub ipv6_prefix: u8,
    /// How long a client may accept nothing, and how many connections it may hold.
    pub conn_limits: ConnLimits,
    /// Findings that do not stop the gateway (`gateway check` prints them).
    pub warnings: Vec<super::Diagnostic>,
    /// Where the gateway writes what it makes: the self-signed certificate, and the ACME
    /// account and certificates unless `acme.storage` says otherwise.
    pub state_dir: StateDir,
    /// Where `tls: acme` certificates are ordered and kept; `None` when no route uses it.
    pub acme: Option<AcmeSettings>,
    /// The Redis server rate limits and failed-login counts are shared through; `None`:
    /// each replica keeps its own.
    pub limits_store: Option<LimitsStoreSettings>,
    pub routes: Vec<Route>,
    /// `apps`, `groups` and `gpus`: the apps started on demand.
    pub apps: Apps,
    /// `api_keys`: the keys programs present, from the file and `routes.yaml`.
    pub api_keys: ApiKeys,
}

/// The state directory and which setting named it, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    pub path: PathBuf,
    /// `state_dir`, `$STATE_DIRECTORY` or `the default`.
    pub from: &'static str,
}

/// `acme`: the ACME server and the directory the account and certificates live in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    /// Contact for the account; `None`: an account without one.
    pub email: Option<String>,
    /// The directory URL.
    pub directory: String,
    /// `acme.storage`, as resolved.
    pub storage: PathBuf,
    /// `storage/<directory host and port>/`: this directory's account and certificates.
    pub dir: PathBuf,
    /// An extra root to trust for the directory's own HTTPS.
    pub ca_bundle: Option<PathBuf>,
    /// First wait after a failed order; doubled after each failure up to `max_retry`.
    pub first_retry: Duration,
    pub max_retry: Duration,
}

impl AcmeSettings {
    /// Where a host's certificate and key are kept.
    pub fn host_dir(&self, host: &str) -> PathBuf {
        self.dir.join(host)
    }

    /// The certificate chain and key files in a host's directory.
    pub fn cert_files(host_dir: &std::path::Path) -> (PathBuf, PathBuf) {
        (host_dir.join("cert.pem"), host_dir.join("key.pem"))
    }
}

impl Route {
    /// The addresses at which the managed app `name` serves this route: every upstream
    /// for `app: NAME`, its replica's for `app: [.., NAME, ..]`.
    pub fn upstreams_of(&self, name: &str) -> Vec<SocketAddr> {
        if self.app.as_deref() == Some(name) {
            return self.upstreams.clone();
        }
        self.replica_apps
            .iter()
            .zip(&self.upstreams)
            .filter(|(app, _)| *app == name)
            .map(|(_, addr)| *addr)
            .collect()
    }
}

impl Config {
    /// Every route's name with each of its upstreams (for the exposed-upstream check).
    pub fn upstreams(&self) -> Vec<(String, SocketAddr)> {
        self.routes
            .iter()
            .flat_map(|r| r.upstreams.iter().map(|u| (r.name.clone(), *u)))
            .collect()
    }
}

/// `access_log`: `stdout` (default), `off`, or a file path (appended; reopened on SIGUSR1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    Off,
    File(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// Plain HTTP, answered as `http_mode` says. `None`: not listening.
    pub http: Option<SocketAddr>,
    pub http_mode: HttpMode,
    pub https: SocketAddr,
    pub metrics: Option<SocketAddr>,
    /// Host names the metrics listener answers besides IP literals and `localhost`.
    pub metrics_hosts: Vec<String>,
}

/// `listen.http_mode`: what the plain-HTTP listener does with a routed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpMode {
    /// 301 to the same URL on HTTPS.
    #[default]
    Redirect,
    /// Proxied like on HTTPS (behind a balancer that terminates TLS itself).
    Proxy,
}

#[derive(Debug, Clone)]
pub struct Tls {
    /// The certificate served when no route certificate matches the SNI name. `None`: a
    /// self-signed certificate is generated for the route hosts.
    pub default_cert: Option<CertFiles>,
    pub min_version: TlsVersion,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

/// A PEM certificate chain and its private key, with where the pair was declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// YAML path of the `cert` key (e.g. `routes[1].tls.cert`), for diagnostics.
    pub path: String,
    /// Where `cert` and `key` are written in the file.
    pub pos: Option<Pos>,
    pub key_pos: Option<Pos>,
}

/// Which `Host` values a route answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// A lower-case host name without port or trailing dot.
    Exact(String),
    /// `*.example.com`, stored as `example.com`: matches exactly one more label.
    Wildcard(String),
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    /// Its place in the file's `routes` list (for messages that point at it).
    pub index: usize,
    /// The label in logs and metrics (defaults to the host, then the path unless `/`).
    pub name: String,
    pub host: HostPattern,
    /// The path prefix the route serves within its host: starts and ends with `/`.
    pub path: String,
    /// Forward `/voice/x` as `/x`, and put the prefix back on the app's redirects and
    /// cookies.
    pub strip_prefix: bool,
    /// The app's replicas, in the order written: one for `upstream: host:port`.
    pub upstreams: Vec<SocketAddr>,
    /// The `Host` sent to the app instead of the client's (`upstream_host`).
    pub upstream_host: Option<http::HeaderValue>,
    /// How requests are spread over the replicas, checked, pinned and capped.
    pub pool: PoolSettings,
    /// Request body limit in bytes; `None` is unlimited.
    pub max_body: Option<u64>,
    pub connect_timeout: Option<Duration>,
    /// Longest silence allowed while reading the upstream's response.
    pub read_timeout: Option<Duration>,
    /// Longest a single write to the upstream may block.
    pub write_timeout: Option<Duration>,
    /// Response headers added unless the upstream set them (defaults merged with the route's).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Compress text answers for clients that accept it (`compress`).
    pub compress: bool,
    pub tls: Option<CertFiles>,
    /// `tls: acme`: `tls` names the files the gateway orders and renews itself, and
    /// until they exist (or while invalid) the default certificate is served.
    pub acme: bool,
    /// Requests per client key; `None`: not limited.
    pub rate_limit: Option<RateLimit>,
    /// Who may use the route: allowlist, logins. All off: public.
    pub access: Access,
    /// Failed logins per client before 429; `None`: not counted.
    pub auth_failures: Option<FailureLimit>,
    /// The managed app behind the route (`app: NAME`, a name in `Config::apps`).
    pub app: Option<String>,
    /// `app: [A, B]`: one managed app per replica, in `upstreams` order (empty
    /// otherwise).
    pub replica_apps: Vec<String>,
}

/// `balance`, `health`, `sticky`, `max_concurrent` and `queue`: how a route's replicas
/// share its requests. Every route has these; a single upstream is a pool of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub balance: Balance,
    /// Active HTTP checks; `None`: passive only (a failed connect ejects a replica, which
    /// is tried again after `PASSIVE_RETRY`).
    pub health: Option<HealthCheck>,
    /// Pin a client to its replica: a cookie, or the client's address for clients that
    /// keep no cookies.
    pub sticky: bool,
    /// Requests in progress per replica (WebSockets not counted); `None`: unlimited.
    pub max_concurrent: Option<u32>,
    /// Where requests over `max_concurrent` wait.
    pub queue: QueueSettings,
}

/// How long a replica ejected by a failed connect, on a pool without active checks, is
/// left alone before one request may try it again.
pub const PASSIVE_RETRY: Duration = Duration::from_secs(5);
pub const DEFAULT_QUEUE: QueueSettings = QueueSettings {
    size: 50,
    timeout: Duration::from_secs(30),
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// The replica with the fewest requests in progress (ties in turn).
    LeastConn,
    RoundRobin,
}

/// `health`: `GET path` must answer 2xx or 3xx within `timeout`, every `interval`.
/// The default (`HealthCheck::default()`) is on for a route with several replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Failed checks in a row that eject a healthy replica.
    pub unhealthy_after: u32,
    /// Good checks in a row that bring an ejected replica back.
    pub healthy_after: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: "/".to_string(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            unhealthy_after: 2,
            healthy_after: 2,
        }
    }
}

/// `queue`: at most `size` requests wait, each at most `timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueSettings {
    pub size: u32,
    pub timeout: Duration,
}

/// A route's access control: an address allowlist, then password logins or an
/// external sign-on service. Every check that is set must pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Client networks allowed; others get 403. `None`: every client.
    pub allow: Option<Vec<IpNet>>,
    pub basic_auth: Option<BasicAuth>,
    pub forward_auth: Option<ForwardAuth>,
    /// Forward the client's `Authorization` header to the app (removed by default).
    pub pass_authorization: bool,
    /// `api_keys`: which API keys the route accepts; `None`: none.
    pub api_keys: Option<KeyChoice>,
    /// `identity_header`: the field that carries who a login, a key or the sign-on
    /// service vouched for to the app; a client's own value is always removed.
    pub identity_header: Option<HeaderName>,
}

impl Access {
    /// True when nothing restricts the route.
    pub fn is_public(&self) -> bool {
        self.allow.is_none()
            && self.basic_auth.is_none()
            && self.forward_auth.is_none()
            && self.api_keys.is_none()
    }
}

/// `basic_auth`: users from routes.yaml and/or an htpasswd file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub realm: String,
    /// Every user: those written in routes.yaml, then those of the htpasswd file.
    pub users: Vec<User>,
    /// The Apache htpasswd file the users came from, if any (bcrypt or argon2id
    /// entries); a change on disk reloads the configuration.
    pub htpasswd: Option<PathBuf>,
}

impl Config {
    /// Every htpasswd file the configuration names.
    pub fn htpasswd_files(&self) -> Vec<PathBuf> {
        self.routes
            .iter()
            .filter_map(|r| r.access.basic_auth.as_ref()?.htpasswd.clone())
            .collect()
    }

    /// The files whose change reloads the configuration: the htpasswd files and the
    /// `api_keys` file.
    pub fn login_files(&self) -> Vec<PathBuf> {
        let mut files = self.htpasswd_files();
        files.extend(self.api_keys.file.clone());
        files
    }
}

/// One login: a name and the hash of its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub hash: PasswordHash,
}

/// A password hash in one of the accepted schemes, as written (PHC or crypt format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$argon2id$v=19$m=…,t=…,p=…$salt$hash`
    Argon2id(String),
    /// `$2y$`, `$2b$` or `$2a$` with a cost: bcrypt, as `htpasswd -B` writes it.
    Bcrypt(String),
}

/// `forward_auth`: an external service decides (nginx `auth_request`, Traefik
/// `forwardAuth`, Caddy `forward_auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuth {
    pub url: AuthUrl,
    /// Headers copied from the service's 2xx answer onto the upstream request; a client's
    /// own values of these are removed first.
    pub copy_headers: Vec<HeaderName>,
    /// Where a browser is sent on a 401, `{url}` replaced by the escaped original URL.
    pub sign_in: Option<String>,
    /// Longest the service may take to answer; past it the client gets 503.
    pub timeout: Duration,
}

/// The service's address, split for the connector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUrl {
    /// As written, for messages.
    pub text: String,
    pub tls: bool,
    /// Host name for `Host` and SNI.
    pub host: String,
    pub addr: SocketAddr,
    /// Path and query of the check.
    pub path: String,
}

/// `auth_failures: { limit: 10, per: 1m }`: failed logins per client per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureLimit {
    pub limit: u32,
    pub per: Duration,
}
