//! TLS handshakes on the HTTPS listener, done by the gateway rather than by Pingora's
//! listener, for three reasons:
//!
//! - A handshake that fails is almost always the client's business: a browser refusing
//!   the self-signed certificate of a first run, a scanner probing, plain HTTP sent to
//!   the HTTPS port. Pingora logs each at error level; here each is counted in
//!   `gateway_tls_handshake_failures_total{reason}` and logged at debug, so that error
//!   stays for what the operator must act on.
//! - A handshake gets `HANDSHAKE_TIMEOUT`, not Pingora's fixed 60 s.
//! - The acceptor (and with it the session-ticket keys) is rebuilt every
//!   `TICKET_KEY_LIFETIME`: OpenSSL never rotates the keys of a context by itself.
//!
//! The certificate is chosen per SNI name from the live `CertStore` (a reload or a renewed
//! file reaches the next handshake; open connections keep theirs), and the connection
//! remembers which one it was served (`Served`), so that a request for a host served by
//! another certificate can be refused (`Served::covers`, 421).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use log::{debug, error, warn};
use openssl::ssl::{
    select_next_proto, AlpnError, NameType, SslAcceptor, SslMethod, SslOptions, SslRef, SslVersion,
};
use pingora::apps::ServerApp;
use pingora::listeners::TlsAccept;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::tls::server::handshake_with_callback;
use pingora::protocols::{GetSocketDigest, Stream};
use pingora::server::ShutdownWatch;

use super::{CertId, CertStore};
use crate::config::TlsVersion;
use crate::metrics::{HandshakeFailure, HandshakeFailures};
use crate::router::strip_port;

/// Longest a client may take to complete its TLS handshake. A real client needs two
/// round trips; what takes longer is holding a connection open for nothing.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long one set of session-ticket keys is used. A new acceptor (with new random keys)
/// replaces the old one after this: tickets issued before then no longer resume, and the
/// client makes one full handshake. An hour bounds how long a stolen key decrypts
/// recorded sessions (forward secrecy of resumed sessions).
pub const TICKET_KEY_LIFETIME: Duration = Duration::from_secs(3600);

/// Forward-secret AEAD suites only, for TLS 1.2, strongest first (TLS 1.3's suites are
/// all AEAD and forward secret).
const TLS12_CIPHERS: &str = "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256";

/// ALPN: HTTP/2 preferred, HTTP/1.1 otherwise (wire format).
const ALPN_H2_H1: &[u8] = b"\x02h2\x08http/1.1";

/// What a TLS connection was served, kept in its `SslDigest` extension for the requests
/// that follow on it.
#[derive(Debug)]
pub struct Served {
    /// The SNI name the client asked for, lower-case without a trailing dot (`None`: no SNI).
    sni: Option<Box<str>>,
    cert: CertId,
}

impl Served {
    /// Whether a request for `host` (`Host` or `:authority`, port allowed) may be answered
    /// on this connection: the host is the SNI name, or the certificate `store` serves
    /// for it now is the one this connection was served (a wildcard or a certificate
    /// with several names, which browsers share connections across).
    pub fn covers(&self, host: &[u8], store: &CertStore) -> bool {
        let host = strip_port(host);
        let host = host.strip_suffix(b".").unwrap_or(host);
        if self
            .sni
            .as_deref()
            .is_some_and(|sni| sni.as_bytes().eq_ignore_ascii_case(host))
        {
            return true;
        }
        let name = std::str::from_utf8(host).ok();
        store.select(name).id() == &self.cert
    }
}

/// The acceptor of the HTTPS listener, swapped when its ticket keys are rotated.
pub struct Acceptor {
    current: ArcSwap<SslAcceptor>,
    min: TlsVersion,
}

impl Acceptor {
    pub fn build(min: TlsVersion) -> Result<Arc<Acceptor>, openssl::error::ErrorStack> {
        Ok(Arc::new(Acceptor {
            current: ArcSwap::from_pointee(new_acceptor(min)?),
            min,
        }))
    }

    /// Replaces the acceptor, and so the session-ticket keys, with a fresh one.
    pub fn rotate(&self) {
        match new_acceptor(self.min) {
            Ok(acceptor) => self.current.store(Arc::new(acceptor)),
            Err(e) => error!("event=tls_ticket_rotation_failed error={e}"),
        }
    }
}

/// TLS 1.2+ (or 1.3 only), AEAD forward-secret suites in the server's order, no
/// compression, no renegotiation, ALPN h2 and http/1.1. Certificates come per handshake.
fn new_acceptor(min: TlsVersion) -> Result<SslAcceptor, openssl::error::ErrorStack> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    b.set_min_proto_version(Some(match min {
        TlsVersion::V1_2 => SslVersion::TLS1_2,
        TlsVersion::V1_3 => SslVersion::TLS1_3,
    }))?;
    b.set_cipher_list(TLS12_CIPHERS)?;
    b.set_options(
        SslOptions::CIPHER_SERVER_PREFERENCE
            | SslOptions::NO_COMPRESSION
            | SslOptions::NO_RENEGOTIATION,
    );
    b.set_alpn_select_callback(|_, offered| {
        select_next_proto(ALPN_H2_H1, offered).ok_or(AlpnError::NOACK)
    });
    Ok(b.build())
}

/// Wraps the HTTPS app: hands it connections that completed a TLS handshake.
pub struct Tls<A> {
    app: Arc<A>,
    acceptor: Arc<Acceptor>,
    certs: Certs,
    /// `None` when no metrics listener is configured.
    failures: Option<HandshakeFailures>,
}

impl<A> Tls<A> {
    pub fn new(
        app: Arc<A>,
        acceptor: Arc<Acceptor>,
        store: Arc<ArcSwap<CertStore>>,
        failures: Option<HandshakeFailures>,
    ) -> Tls<A> {
        Tls {
            app,
            acceptor,
            certs: Certs { store },
            failures,
        }
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
        let acceptor = self.acceptor.current.load_full();
        let handshake = handshake_with_callback(&acceptor, l4, &self.certs);
        let (reason, detail) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => return Some(Box::new(tls)),
            Ok(Err(e)) => {
                let detail = e.to_string();
                (classify(&detail), detail)
            }
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

/// Picks each handshake's certificate from the current store and records what was served.
struct Certs {
    store: Arc<ArcSwap<CertStore>>,
}

/// The handshake's SNI name, lower-case without a trailing dot.
fn sni(ssl: &SslRef) -> Option<Box<str>> {
    let name = ssl.servername(NameType::HOST_NAME)?;
    Some(name.trim_end_matches('.').to_ascii_lowercase().into())
}

#[async_trait]
impl TlsAccept for Certs {
    async fn certificate_callback(&self, ssl: &mut SslRef) {
        let store = self.store.load();
        let cert = store.select(ssl.servername(NameType::HOST_NAME));
        if let Err(e) = cert.install(ssl) {
            // The handshake fails for want of a certificate: the operator's problem.
            error!("event=tls_cert_install_failed error={e}");
        }
    }

    async fn handshake_complete_callback(
        &self,
        ssl: &SslRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let Some(leaf) = ssl.certificate() else {
            warn!("event=tls_no_certificate_after_handshake");
            return None;
        };
        Some(Arc::new(Served {
            sni: sni(ssl),
            cert: CertId::of(leaf),
        }))
    }
}

/// The reason label of a failed handshake, from the text of OpenSSL's error (Pingora's
/// handshake error carries it as text). OpenSSL's reason strings are stable across
/// OpenSSL 3 releases.
fn classify(error: &str) -> HandshakeFailure {
    let has = |reasons: &[&str]| reasons.iter().any(|r| error.contains(r));
    if has(&[
        "alert certificate",
        "alert bad certificate",
        "alert unknown ca",
    ]) {
        HandshakeFailure::CertificateRejected
    } else if has(&[
        "unsupported protocol",
        "no protocols available",
        "alert protocol version",
        "version too low",
    ]) {
        HandshakeFailure::Version
    } else if has(&[
        "no shared cipher",
        "no suitable signature algorithm",
        "no shared signature algorithms",
        "no suitable key share",
        "alert insufficient security",
        "alert handshake failure",
    ]) {
        HandshakeFailure::Cipher
    } else if has(&[
        "http request",
        "https proxy request",
        "wrong version number",
        "packet length too long",
        "record layer failure",
    ]) {
        HandshakeFailure::NotTls
    } else if has(&[
        "unexpected eof",
        "unexpected EOF",
        "Connection reset",
        "Broken pipe",
    ]) {
        HandshakeFailure::Closed
    } else {
        HandshakeFailure::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_group_into_labels() {
        for (text, label) in [
            ("TLS accept() failed: error:0A000416:SSL routines:ssl3_read_bytes:sslv3 alert certificate unknown:ssl/record/rec_layer_s3.c:1605:SSL alert number 46", "certificate_rejected"),
            ("error:0A000412:SSL routines::sslv3 alert bad certificate", "certificate_rejected"),
            ("error:0A000418:SSL routines::tlsv1 alert unknown ca", "certificate_rejected"),
            ("error:0A000102:SSL routines::unsupported protocol", "version"),
            ("error:0A0000C1:SSL routines::no shared cipher", "cipher"),
            ("error:0A00009C:SSL routines::http request", "not_tls"),
            ("error:0A00010B:SSL routines::wrong version number", "not_tls"),
            ("error:0A000126:SSL routines::unexpected eof while reading", "closed"),
            ("TLS accept() failed: unexpected EOF", "closed"),
            ("Connection reset by peer (os error 104)", "closed"),
            ("error:0A000438:SSL routines::tlsv1 alert internal error", "other"),
        ] {
            assert_eq!(classify(text).as_str(), label, "{text}");
        }
    }
}
