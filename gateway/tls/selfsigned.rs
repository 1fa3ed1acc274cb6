//! A self-signed certificate for first runs: when routes.yaml names no certificate, one
//! covering every route host is generated into the state directory (never beside the
//! config, which a service may not write), and reused while it still covers the same
//! hosts and has 30 days left.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509NameBuilder, X509};

use crate::config::{CertFiles, Config, HostPattern};

/// The files' names in the state directory.
pub const SELF_SIGNED_CERT: &str = "selfsigned.pem";
pub const SELF_SIGNED_KEY: &str = "selfsigned.key";
const VALID_DAYS: u32 = 365;
const RENEW_BEFORE_DAYS: u32 = 30;

/// The names the self-signed certificate must cover: every route host, plus localhost.
fn wanted_names(config: &Config) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = config
        .routes
        .iter()
        .map(|r| match &r.host {
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Wildcard(s) => format!("*.{s}"),
        })
        .collect();
    names.insert("localhost".to_string());
    names
}

/// Why the self-signed default certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SelfSignedError {
    #[error("cannot generate a certificate")]
    Generate(#[from] ErrorStack),
    #[error("cannot create {}", .path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The pair to use as the default certificate when `tls` names none, writing a fresh one
/// when the existing files are missing, stale or cover other hosts. Returns the files
/// and whether they were (re)generated. With `write` false (`gateway check`), nothing is
/// written and the files may not exist yet.
pub fn ensure_self_signed(
    config: &Config,
    write: bool,
) -> Result<(CertFiles, bool), SelfSignedError> {
    let files = self_signed_files(config);
    let names = wanted_names(config);
    if current(&files, &names) || !write {
        return Ok((files, false));
    }
    let (cert_pem, key_pem) = generate(&names.iter().map(String::as_str).collect::<Vec<_>>())?;
    if let Some(dir) = files.cert.parent() {
        std::fs::create_dir_all(dir).map_err(|source| SelfSignedError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    replace(&files.key, &key_pem)?;
    replace(&files.cert, &cert_pem)?;
    Ok((files, true))
}

/// Writes `pem` beside `path` (mode 0600) and renames it over `path`: the directory being
/// writable is enough (what `gateway check` tests), whoever owns the old file, and no
/// reader ever sees half a file.
fn replace(path: &Path, pem: &[u8]) -> Result<(), SelfSignedError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".new-{}", std::process::id()));
    let new = path.with_file_name(name);
    write_private(&new, pem)?;
    std::fs::rename(&new, path).map_err(|source| {
        let _ = std::fs::remove_file(&new);
        SelfSignedError::Write {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Where the self-signed pair lives: the state directory.
fn self_signed_files(config: &Config) -> CertFiles {
    let base = &config.state_dir.path;
    CertFiles {
        cert: base.join(SELF_SIGNED_CERT),
        key: base.join(SELF_SIGNED_KEY),
        path: "tls".to_string(),
        pos: None,
        key_pos: None,
    }
}

/// True when `run` would serve the self-signed pair already on disk as it is (it exists,
/// covers the route hosts and has 30 days left); otherwise it makes a new one.
pub fn self_signed_reusable(config: &Config) -> bool {
    current(&self_signed_files(config), &wanted_names(config))
}

/// True when the files exist, parse, cover exactly `names` and are not about to expire.
fn current(files: &CertFiles, names: &BTreeSet<String>) -> bool {
    let Ok(ck) = super::CertKey::load(files) else {
        return false;
    };
    let leaf = ck.leaf();
    let covered: BTreeSet<String> = leaf
        .subject_alt_names()
        .map(|sans| {
            sans.iter()
                .filter_map(|n| n.dnsname().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let fresh = Asn1Time::days_from_now(RENEW_BEFORE_DAYS)
        .map(|limit| leaf.not_after() > limit)
        .unwrap_or(false);
    fresh && covered == *names
}

fn write_private(path: &Path, pem: &[u8]) -> Result<(), SelfSignedError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| SelfSignedError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(pem).map_err(err)
}

/// A self-signed ECDSA P-256 certificate for `names` (DNS names, `*.` wildcards allowed;
/// IP literals become IP SANs), valid for a year. Returns (certificate PEM, key PEM).
pub fn generate(names: &[&str]) -> Result<(Vec<u8>, Vec<u8>), ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;

    let mut subject = X509NameBuilder::new()?;
    subject.append_entry_by_nid(Nid::COMMONNAME, names.first().copied().unwrap_or("gateway"))?;
    subject.append_entry_by_nid(Nid::ORGANIZATIONNAME, "gateway self-signed")?;
    let subject = subject.build();

    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;

    let mut b = X509::builder()?;
    b.set_version(2)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&subject)?;
    b.set_issuer_name(&subject)?;
    b.set_pubkey(&key)?;
    let (not_before, not_after) = (
        Asn1Time::days_from_now(0)?,
        Asn1Time::days_from_now(VALID_DAYS)?,
    );
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    let mut san = SubjectAlternativeName::new();
    for name in names {
        if name.parse::<std::net::IpAddr>().is_ok() {
            san.ip(name);
        } else {
            san.dns(name);
        }
    }
    let ctx = b.x509v3_context(None, None);
    let san = san.build(&ctx)?;
    b.append_extension(san)?;
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
    b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok((b.build().to_pem()?, key.private_key_to_pem_pkcs8()?))
}
