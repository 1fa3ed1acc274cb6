//! TLS termination: the certificates of one configuration (`CertStore`), and the
//! handshakes of the HTTPS listener (`accept`), which choose one per SNI name.
//!
//! The store sits behind its own `ArcSwap` so that a reload or a renewed certificate file
//! changes what new handshakes get, while open connections keep theirs.

mod accept;
mod selfsigned;

use std::path::Path;
use std::sync::Arc;

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::ssl::SslRef;
use openssl::x509::{X509Ref, X509};
use pingora::tls::ext;

use crate::config::{CertFiles, Config, Diagnostic};
use crate::router::HostMap;

pub use accept::{Acceptor, Served, Tls, TICKET_KEY_LIFETIME};
pub use selfsigned::{
    ensure_self_signed, generate as generate_self_signed, self_signed_reusable, SelfSignedError,
    SELF_SIGNED_CERT, SELF_SIGNED_KEY,
};

/// The default certificate: the configured one, or a self-signed pair generated (when
/// `write`) into the state directory. Logs when it generates one.
pub fn default_cert(config: &Config, write: bool) -> Result<CertFiles, SelfSignedError> {
    if let Some(files) = &config.tls.default_cert {
        return Ok(files.clone());
    }
    let (files, generated) = ensure_self_signed(config, write)?;
    if generated {
        log::info!(
            "event=self_signed_generated cert={} key={} note=\"tls names no certificate; browsers will warn\"",
            files.cert.display(),
            files.key.display()
        );
    }
    Ok(files)
}

/// Why a certificate pair failed to load, and whether the key file (not the
/// certificate) is at fault, for the diagnostic's position.
#[derive(Debug)]
pub struct LoadError {
    pub at_key: bool,
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A certificate's identity: the SHA-256 of its leaf, DER-encoded. The same across reloads
/// while the file holds the same certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertId([u8; 32]);

impl CertId {
    pub fn of(leaf: &X509Ref) -> CertId {
        let mut id = [0u8; 32];
        // SHA-256 of a parsed certificate cannot fail short of memory exhaustion; the
        // all-zero id then only makes two such certificates look alike.
        if let Ok(digest) = leaf.digest(MessageDigest::sha256()) {
            id.copy_from_slice(&digest[..32.min(digest.len())]);
        }
        CertId(id)
    }
}

/// A parsed certificate chain and the private key that matches its leaf.
pub struct CertKey {
    id: CertId,
    leaf: X509,
    chain: Vec<X509>,
    key: PKey<Private>,
}

impl CertKey {
    /// Reads and checks a PEM chain and key; the error names the file at fault.
    pub fn load(files: &CertFiles) -> Result<CertKey, LoadError> {
        CertKey::from_files(&files.cert, &files.key)
    }

    /// `load` of a certificate file and a key file.
    pub fn from_files(cert_file: &Path, key_file: &Path) -> Result<CertKey, LoadError> {
        let read =
            |p: &Path| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let at_cert = |message| LoadError {
            at_key: false,
            message,
        };
        let at_key = |message| LoadError {
            at_key: true,
            message,
        };
        let pem = read(cert_file).map_err(at_cert)?;
        let mut certs = X509::stack_from_pem(&pem)
            .map_err(|_| at_cert(format!("{} is not a PEM certificate", cert_file.display())))?
            .into_iter();
        let leaf = certs
            .next()
            .ok_or_else(|| at_cert(format!("{} holds no certificate", cert_file.display())))?;
        let key = PKey::private_key_from_pem(&read(key_file).map_err(at_key)?)
            .map_err(|_| at_key(format!("{} is not a PEM private key", key_file.display())))?;
        let matches = leaf
            .public_key()
            .map(|pk| pk.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(at_cert(format!(
                "key {} does not match certificate {}",
                key_file.display(),
                cert_file.display()
            )));
        }
        Ok(CertKey {
            id: CertId::of(&leaf),
            leaf,
            chain: certs.collect(),
            key,
        })
    }

    /// An in-memory self-signed certificate for `localhost`.
    fn throwaway() -> Result<CertKey, openssl::error::ErrorStack> {
        let (cert, key) = selfsigned::generate(&["localhost"])?;
        let leaf = X509::from_pem(&cert)?;
        Ok(CertKey {
            id: CertId::of(&leaf),
            leaf,
            chain: Vec::new(),
            key: PKey::private_key_from_pem(&key)?,
        })
    }

    pub fn id(&self) -> &CertId {
        &self.id
    }

    /// The leaf certificate (for expiry and serial checks).
    pub fn leaf(&self) -> &X509 {
        &self.leaf
    }

    /// The leaf's notAfter as unix seconds (0 if it cannot be read).
    pub fn not_after(&self) -> i64 {
        unix_seconds(self.leaf.not_after())
    }

    /// The leaf's notBefore as unix seconds (0 if it cannot be read).
    pub fn not_before(&self) -> i64 {
        unix_seconds(self.leaf.not_before())
    }

    fn install(&self, ssl: &mut SslRef) -> Result<(), openssl::error::ErrorStack> {
        ext::ssl_use_certificate(ssl, &self.leaf)?;
        ext::ssl_use_private_key(ssl, &self.key)?;
        for cert in &self.chain {
            ext::ssl_add_chain_cert(ssl, cert)?;
        }
        Ok(())
    }
}

fn unix_seconds(t: &openssl::asn1::Asn1TimeRef) -> i64 {
    openssl::asn1::Asn1Time::from_unix(0)
        .and_then(|epoch| epoch.diff(t))
        .map_or(0, |d| i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// The certificates of one configuration: route certificates by host, plus the default.
pub struct CertStore {
    by_host: HostMap<Arc<CertKey>>,
    default: Arc<CertKey>,
    /// notAfter (unix seconds) of the certificate each route host is served, and of the
    /// default one (`_default`), for `gateway_tls_certificate_expiry_timestamp_seconds`.
    expiry: Vec<(String, i64)>,
}

impl CertStore {
    /// Loads every certificate `config` names. `default_cert` is used when the config's
    /// `tls` names none (the generated self-signed pair); `None` (for `gateway check`
    /// before the first start) uses a throw-away self-signed certificate.
    pub fn build(
        config: &Config,
        default_cert: Option<&CertFiles>,
    ) -> Result<CertStore, Vec<Diagnostic>> {
        let mut errors = Vec::new();
        let mut load = |files: &CertFiles| {
            CertKey::load(files)
                .map(Arc::new)
                .map_err(|e| {
                    let (pos, path) = match e.at_key {
                        true => (files.key_pos, files.path.replace(".cert", ".key")),
                        false => (files.pos, files.path.clone()),
                    };
                    errors.push(Diagnostic::new(&config.file, pos, format!("{path}: {e}")))
                })
                .ok()
        };
        let default = match default_cert {
            Some(files) => load(files),
            None => CertKey::throwaway().map(Arc::new).ok(),
        };
        let mut by_host = HostMap::default();
        // One entry per host: the routes of a host (by path) share its certificate.
        let mut route_certs: Vec<(String, Option<Arc<CertKey>>)> = Vec::new();
        for route in &config.routes {
            let host = route.host.to_string();
            let ck = match route.acme {
                // Not issued yet (or half-written): the default is served meanwhile.
                true => route
                    .tls
                    .as_ref()
                    .and_then(|f| CertKey::load(f).ok().map(Arc::new)),
                false => route.tls.as_ref().and_then(&mut load),
            };
            if let Some(ck) = &ck {
                by_host.insert(&route.host, ck.clone());
            }
            match route_certs.iter_mut().find(|(h, _)| *h == host) {
                Some((_, kept)) => *kept = kept.take().or(ck),
                None => route_certs.push((host, ck)),
            }
        }
        match default {
            Some(default) if errors.is_empty() => {
                let mut expiry: Vec<(String, i64)> = route_certs
                    .into_iter()
                    .map(|(host, ck)| (host, ck.as_ref().unwrap_or(&default).not_after()))
                    .collect();
                expiry.push(("_default".to_string(), default.not_after()));
                Ok(CertStore {
                    by_host,
                    default,
                    expiry,
                })
            }
            _ => Err(errors),
        }
    }

    /// The certificate for an SNI name (the default when there is none or no match).
    pub fn select(&self, server_name: Option<&str>) -> &Arc<CertKey> {
        server_name
            .and_then(|name| self.by_host.lookup(name.as_bytes()))
            .unwrap_or(&self.default)
    }

    /// (host, notAfter unix seconds) for every route host, and `_default`.
    pub fn expiry(&self) -> &[(String, i64)] {
        &self.expiry
    }

    /// How many route-specific certificates, besides the default.
    pub fn route_certs(&self) -> usize {
        self.by_host.len()
    }
}
