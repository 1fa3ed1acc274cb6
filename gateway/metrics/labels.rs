//! The fixed label values of the gateway's metrics: why a request was answered by the
//! gateway, what failed with an upstream, why a client's TLS handshake failed. Every value
//! is known in advance, so each series exists (at 0) from the start.

use prometheus::IntCounter;

/// Why the gateway answered a request itself instead of forwarding it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    RateLimit,
    BodyTooLarge,
    NoRoute,
    /// 400: no host, ambiguous framing, a target that is not forwarded.
    BadRequest,
    /// 400: the path reads as another route's path to some app (`router::path`).
    AmbiguousPath,
    /// 408: the request body stalled for `limits.body_timeout` or came slower than
    /// `limits.body_min_rate`.
    BodyTimeout,
    /// 431: a request head over `limits`.
    HeadTooLarge,
    /// 421: a request for a host the TLS connection's certificate does not serve.
    Misdirected,
    /// 403: the client's address is not in the route's `allow` list, or the sign-on
    /// service refused.
    Forbidden,
    /// 401 (or a redirect to sign in): no valid credentials.
    Auth,
    /// 429: too many failed logins from this client.
    AuthRateLimit,
    /// 503: the sign-on service, or the password verifier, could not answer in time.
    AuthUnavailable,
    /// 503: every replica is at `max_concurrent` and the queue is full.
    QueueFull,
    /// 503: waited in the queue for `queue.timeout` without a free replica.
    QueueTimeout,
    /// 503: every replica of the route is down.
    UpstreamDown,
    /// 503: the route's app is starting (a browser's waiting page), or is stopped and the
    /// request is one that must not start it (`wake`).
    AppStarting,
    /// 503: `max_waiting` requests are already held while the app starts.
    AppWaitingFull,
    /// 502: the app's start failed (it exited, or never became ready).
    AppFailed,
    /// 504: the app was not ready within `start_timeout`.
    AppTimeout,
    /// 401: an API key that is missing (on a route with no other login), unknown,
    /// expired, or not allowed on the route.
    ApiKey,
    /// 429: the key's `max_concurrent` requests are already in progress.
    ApiKeyBusy,
}

impl Reject {
    pub const ALL: [Reject; 21] = [
        Reject::RateLimit,
        Reject::BodyTooLarge,
        Reject::NoRoute,
        Reject::BadRequest,
        Reject::AmbiguousPath,
        Reject::BodyTimeout,
        Reject::HeadTooLarge,
        Reject::Misdirected,
        Reject::Forbidden,
        Reject::Auth,
        Reject::AuthRateLimit,
        Reject::AuthUnavailable,
        Reject::QueueFull,
        Reject::QueueTimeout,
        Reject::UpstreamDown,
        Reject::AppStarting,
        Reject::AppWaitingFull,
        Reject::AppFailed,
        Reject::AppTimeout,
        Reject::ApiKey,
        Reject::ApiKeyBusy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reject::RateLimit => "rate_limit",
            Reject::BodyTooLarge => "body_too_large",
            Reject::NoRoute => "no_route",
            Reject::BadRequest => "bad_request",
            Reject::AmbiguousPath => "ambiguous_path",
            Reject::BodyTimeout => "body_timeout",
            Reject::HeadTooLarge => "head_too_large",
            Reject::Misdirected => "misdirected",
            Reject::Forbidden => "forbidden",
            Reject::Auth => "auth",
            Reject::AuthRateLimit => "auth_rate_limit",
            Reject::AuthUnavailable => "auth_unavailable",
            Reject::QueueFull => "queue_full",
            Reject::QueueTimeout => "queue_timeout",
            Reject::UpstreamDown => "upstream_down",
            Reject::AppStarting => "app_starting",
            Reject::AppWaitingFull => "app_waiting_full",
            Reject::AppFailed => "app_failed",
            Reject::AppTimeout => "app_timeout",
            Reject::ApiKey => "api_key",
            Reject::ApiKeyBusy => "api_key_concurrency",
        }
    }
}

/// What went wrong talking to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// Refused, unreachable, or the socket could not be set up.
    Connect,
    /// Connect, read or write timeout.
    Timeout,
    /// The connection closed or broke mid-request.
    Reset,
    /// The upstream spoke invalid HTTP.
    Protocol,
    Other,
}

impl UpstreamError {
    pub const ALL: [UpstreamError; 5] = [
        UpstreamError::Connect,
        UpstreamError::Timeout,
        UpstreamError::Reset,
        UpstreamError::Protocol,
        UpstreamError::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::Reset => "reset",
            UpstreamError::Protocol => "protocol",
            UpstreamError::Other => "other",
        }
    }
}

/// Why a client's TLS handshake failed. The client's doing, not the operator's: counted
/// and logged at debug, never at error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The client refused our certificate (an alert such as `certificate unknown` or
    /// `unknown ca`): a browser that does not trust a self-signed certificate.
    CertificateRejected,
    /// The client offers only protocol versions below the configured minimum.
    Version,
    /// No cipher suite, group or signature algorithm in common.
    Cipher,
    /// Not TLS at all (e.g. plain HTTP sent to the HTTPS port).
    NotTls,
    /// The client closed or reset the connection mid-handshake.
    Closed,
    /// The handshake did not finish within the handshake timeout.
    Timeout,
    Other,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 7] = [
        HandshakeFailure::CertificateRejected,
        HandshakeFailure::Version,
        HandshakeFailure::Cipher,
        HandshakeFailure::NotTls,
        HandshakeFailure::Closed,
        HandshakeFailure::Timeout,
        HandshakeFailure::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::CertificateRejected => "certificate_rejected",
            HandshakeFailure::Version => "version",
            HandshakeFailure::Cipher => "cipher",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Other => "other",
        }
    }
}

/// `gateway_tls_handshake_failures_total`, one counter per reason, resolved up front.
#[derive(Clone)]
pub struct HandshakeFailures(Vec<IntCounter>);

impl HandshakeFailures {
    pub(super) fn new(counters: Vec<IntCounter>) -> HandshakeFailures {
        HandshakeFailures(counters)
    }

    pub fn inc(&self, reason: HandshakeFailure) {
        if let Some(c) = HandshakeFailure::ALL.iter().position(|r| *r == reason) {
            self.0[c].inc();
        }
    }
}
