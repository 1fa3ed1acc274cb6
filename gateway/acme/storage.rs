//! What the gateway keeps in `acme.storage/<directory>/`: `account.json` (the account's
//! URL and private key), `<host>/cert.pem` and `<host>/key.pem`, `.lock`, which the
//! replica that orders holds, and, while an order awaits validation,
//! `.well-known/acme-challenge/<token>`, which every replica sharing the storage serves
//! (the server's validation request may reach any of them). Directories are created 0700 and files 0600; every file is
//! written beside its final name and renamed over it, so a reader (this process's
//! certificate check, another replica) sees the old file or the new one, never half.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use instant_acme::AccountCredentials;

use crate::config::AcmeSettings;
use crate::tls::CertKey;

const ACCOUNT: &str = "account.json";
const LOCK: &str = ".lock";

/// Creates `dir` and its missing parents, each 0700.
pub fn ensure_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Writes `bytes` to `path` (0600) through a temporary file renamed over it.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The stored account of this directory, if any.
pub fn load_account(dir: &Path) -> io::Result<Option<AccountCredentials>> {
    let path = dir.join(ACCOUNT);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not an account file: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn save_account(dir: &Path, credentials: &AccountCredentials) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(credentials).map_err(io::Error::other)?;
    ensure_dir(dir)?;
    write_private(&dir.join(ACCOUNT), &json)
}

/// A host's stored certificate, when it loads and its key matches.
pub struct Stored {
    pub not_before: i64,
    pub not_after: i64,
}

/// The stored certificate of `host`, if it loads, its key matches and it names `host`
/// (a pair seeded from certbot may be for other names).
pub fn stored(host_dir: &Path, host: &str) -> Option<Stored> {
    let (cert, key) = AcmeSettings::cert_files(host_dir);
    let ck = CertKey::from_files(&cert, &key).ok()?;
    if !names(ck.leaf(), host) {
        return None;
    }
    Some(Stored {
        not_before: ck.not_before(),
        not_after: ck.not_after(),
    })
}

/// Whether the certificate's DNS names cover `host` (exactly, or by a one-label wildcard).
fn names(leaf: &openssl::x509::X509Ref, host: &str) -> bool {
    let Some(sans) = leaf.subject_alt_names() else {
        return false;
    };
    sans.iter().filter_map(|n| n.dnsname()).any(|name| {
        let name = name.to_ascii_lowercase();
        match name.strip_prefix("*.") {
            Some(parent) => host.split_once('.').is_some_and(|(_, rest)| rest == parent),
            None => name == host,
        }
    })
}

/// Stores a new certificate chain and its key: the key first, so that the pair on disk
/// is only ever mismatched between the two renames (a reader then keeps the old pair).
pub fn save_cert(host_dir: &Path, chain_pem: &[u8], key_pem: &[u8]) -> io::Result<()> {
    ensure_dir(host_dir)?;
    let (cert, key) = AcmeSettings::cert_files(host_dir);
    write_private(&key, key_pem)?;
    write_private(&cert, chain_pem)
}

/// Where challenge answers are written, below the storage directory `dir`.
const CHALLENGES: &str = ".well-known/acme-challenge";

/// A challenge answer on disk, removed when dropped.
pub struct TokenFile(PathBuf);

impl Drop for TokenFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes the answer to `token` where every replica sharing `dir` serves it from.
pub fn publish_token(dir: &Path, token: &str, key_authorization: &str) -> io::Result<TokenFile> {
    let challenges = dir.join(CHALLENGES);
    ensure_dir(&challenges)?;
    let path = challenges.join(token);
    write_private(&path, key_authorization.as_bytes())?;
    Ok(TokenFile(path))
}

/// The ordering lock of a storage directory shared by several replicas: held while one
/// of them orders, released when dropped. `None`: another process holds it.
pub fn try_lock(dir: &Path) -> io::Result<Option<File>> {
    ensure_dir(dir)?;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(dir.join(LOCK))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_private_and_the_lock_is_exclusive() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b");
        save_cert(&dir.join("host"), b"cert", b"key").expect("save");
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.permissions().mode() & 0o777);
        assert_eq!(mode(&dir).ok(), Some(0o700));
        assert_eq!(mode(&dir.join("host/key.pem")).ok(), Some(0o600));
        assert_eq!(mode(&dir.join("host/cert.pem")).ok(), Some(0o600));
        assert!(
            stored(&dir.join("host"), "host").is_none(),
            "not a certificate"
        );
        let (cert, key) =
            crate::tls::generate_self_signed(&["a.test", "*.apps.test"]).expect("cert");
        save_cert(&dir.join("a"), &cert, &key).expect("save");
        assert!(stored(&dir.join("a"), "a.test").is_some());
        assert!(stored(&dir.join("a"), "x.apps.test").is_some());
        assert!(
            stored(&dir.join("a"), "b.test").is_none(),
            "names another host"
        );
        let held = try_lock(&dir).expect("lock").expect("free");
        assert!(try_lock(&dir).expect("lock").is_none(), "held by another");
        drop(held);
        assert!(try_lock(&dir).expect("lock").is_some(), "released");
    }
}
