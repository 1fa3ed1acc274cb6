//! TLS handshakes on the HTTPS listener, done by the gateway rather than by Pingora's
//! listener, for two reasons:
//!
//! - A handshake that fails is almost always the client's business: a browser refusing
//!   the self-signed certificate of a first run, a scanner probing, plain HTTP sent to
//!   the HTTPS port. Pingora logs each at error level; here each is counted in
//!   `gateway_tls_handshake_failures_total{reason}` and logged at debug, so that error
//!   stays for what the operator must act on.
//! - A handshake gets `HANDSHAKE_TIMEOUT`, not Pingora's fixed 60 s.
//!
//! The certificate is chosen in OpenSSL's server-name callback (which runs with or
//! without SNI) from the live `CertStore`, so a reload or a renewed file reaches the next
//! handshake while open connections keep theirs.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use log::{debug, error, warn};
use openssl::ssl::{
    select_next_proto, AlpnError, ErrorCode, NameType, SniError, SslAcceptor, SslMethod, SslRef,
    SslVersion,
};
use pingora::apps::ServerApp;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::tls::server::prepare_tls_stream;
use pingora::protocols::{GetSocketDigest, Stream};
use pingora::server::ShutdownWatch;

use super::CertStore;
use crate::config::TlsVersion;
use crate::metrics::{HandshakeFailure, HandshakeFailures};

/// Longest a client may take to complete its TLS handshake. A real client needs two
/// round trips; what takes longer is holding a connection open for nothing.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Forward-secret AEAD suites only, for TLS 1.2 (TLS 1.3's suites are all AEAD).
const TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/// ALPN: HTTP/2 preferred, HTTP/1.1 otherwise (wire format).
const ALPN_H2_H1: &[u8] = b"\x02h2\x08http/1.1";

/// Wraps the HTTPS app: hands it connections that completed a TLS handshake.
pub struct Tls<A> {
    app: Arc<A>,
    acceptor: SslAcceptor,
    /// `None` when no metrics listener is configured.
    failures: Option<HandshakeFailures>,
}

impl<A> Tls<A> {
    /// TLS 1.2+ (or 1.3 only), AEAD forward-secret suites, ALPN h2 and http/1.1, the
    /// certificate for each handshake's SNI name from `store`.
    pub fn build(
        app: Arc<A>,
        store: Arc<ArcSwap<CertStore>>,
        min: TlsVersion,
        failures: Option<HandshakeFailures>,
    ) -> Result<Tls<A>, openssl::error::ErrorStack> {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
        b.set_min_proto_version(Some(match min {
            TlsVersion::V1_2 => SslVersion::TLS1_2,
            TlsVersion::V1_3 => SslVersion::TLS1_3,
        }))?;
        b.set_cipher_list(TLS12_CIPHERS)?;
        b.set_alpn_select_callback(|_, offered| {
            select_next_proto(ALPN_H2_H1, offered).ok_or(AlpnError::NOACK)
        });
        b.set_servername_callback(move |ssl, _alert| install_cert(&store.load(), ssl));
        Ok(Tls {
            app,
            acceptor: b.build(),
            failures,
        })
    }

    /// The TLS stream of a new connection, or `None` (counted and logged) when the
    /// handshake fails.
    async fn handshake(&self, stream: Stream) -> Option<Stream> {
        if !stream.as_any().is::<L4Stream>() {
            // Never the case: the listener is plain TCP and this is its first layer.
            error!("event=tls_unexpected_stream stream={stream:?}");
            return None;
        }
        let l4 = *stream.into_any().downcast::<L4Stream>().ok()?;
        let client = l4.get_socket_digest().and_then(|d| d.peer_addr().cloned());
        let mut tls = match prepare_tls_stream(&self.acceptor, l4) {
            Ok(tls) => tls,
            Err(e) => {
                warn!("event=tls_setup_failed error={e}");
                return None;
            }
        };
        let (reason, detail) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept()).await {
            Ok(Ok(())) => return Some(Box::new(tls)),
            Ok(Err(e)) => (classify(&e), e.to_string()),
            Err(_) => (HandshakeFailure::Timeout, String::new()),
        };
        if let Some(failures) = &self.failures {
            failures.inc(reason);
        }
        debug!(
            "event=tls_handshake_failed reason={} client={} detail={detail:?}",
            reason.as_str(),
            client.map_or_else(|| "-".to_string(), |a| a.to_string()),
        );
        None
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Tls<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let stream = self.handshake(stream).await?;
        self.app.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

/// Installs the certificate for the handshake's SNI name (the default one without SNI
/// or without a match).
fn install_cert(store: &CertStore, ssl: &mut SslRef) -> Result<(), SniError> {
    let cert = store.select(ssl.servername(NameType::HOST_NAME));
    cert.install(ssl).map_err(|e| {
        // The handshake fails for want of a certificate: the operator's problem.
        error!("event=tls_cert_install_failed error={e}");
        SniError::ALERT_FATAL
    })
}

/// The reason label of a failed handshake, from OpenSSL's error.
fn classify(e: &openssl::ssl::Error) -> HandshakeFailure {
    match e.code() {
        ErrorCode::SYSCALL | ErrorCode::ZERO_RETURN => return HandshakeFailure::Closed,
        ErrorCode::SSL => {}
        _ => return HandshakeFailure::Other,
    }
    let reasons = e
        .ssl_error()
        .map(|stack| stack.errors())
        .unwrap_or_default();
    let Some(reason) = reasons.iter().find_map(|e| e.reason()) else {
        return HandshakeFailure::Other;
    };
    reason_of(reason)
}

/// OpenSSL's reason strings (stable across OpenSSL 3 releases) grouped into the labels.
fn reason_of(reason: &str) -> HandshakeFailure {
    let alert = reason.starts_with("sslv3 alert ") || reason.starts_with("tlsv1 alert ");
    if alert && (reason.contains("certificate") || reason.ends_with("unknown ca")) {
        return HandshakeFailure::CertificateRejected;
    }
    match reason {
        "unsupported protocol"
        | "no protocols available"
        | "tlsv1 alert protocol version"
        | "version too low"
        | "unknown protocol" => HandshakeFailure::Version,
        "no shared cipher"
        | "no suitable signature algorithm"
        | "no shared signature algorithms"
        | "no suitable key share"
        | "no shared groups"
        | "tlsv1 alert insufficient security"
        | "sslv3 alert handshake failure" => HandshakeFailure::Cipher,
        "http request"
        | "https proxy request"
        | "wrong version number"
        | "packet length too long"
        | "record layer failure" => HandshakeFailure::NotTls,
        "unexpected eof while reading" => HandshakeFailure::Closed,
        _ => HandshakeFailure::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_group_into_labels() {
        for (reason, label) in [
            ("sslv3 alert certificate unknown", "certificate_rejected"),
            ("sslv3 alert bad certificate", "certificate_rejected"),
            ("tlsv1 alert unknown ca", "certificate_rejected"),
            ("unsupported protocol", "version"),
            ("no shared cipher", "cipher"),
            ("http request", "not_tls"),
            ("wrong version number", "not_tls"),
            ("unexpected eof while reading", "closed"),
            ("tlsv1 alert decode error", "other"),
        ] {
            assert_eq!(reason_of(reason).as_str(), label, "{reason}");
        }
    }
}
