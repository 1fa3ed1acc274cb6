//! `basic_auth`: HTTP Basic credentials checked against argon2id or bcrypt hashes.
//!
//! A browser sends the same `Authorization` header with every request of a page: fifty
//! assets would cost fifty hash verifications. A successful verification is remembered
//! for `CACHE_FOR`, keyed by a 128-bit keyed hash of the header (two SipHash-1-3 with
//! random keys; never the password itself), so a page load costs one. Without the keys,
//! a header that hits another's entry takes about 2^128 guesses. Failed verifications
//! are never remembered.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use http::HeaderValue;
use lru::LruCache;
use parking_lot::Mutex;

use super::verify::Verifier;
use crate::config::{PasswordHash, User};

/// How long a verified header is accepted without verifying again.
const CACHE_FOR: Duration = Duration::from_secs(60);
/// Most verified headers remembered per route.
const CACHE_SIZE: usize = 4096;
/// Longest `Authorization` header considered (a name and a password, base64).
const MAX_HEADER: usize = 4096;

/// Checked against when a route has no users at all (a bcrypt hash of a random string).
const DECOY: &str = "$2y$05$D7l5rDwL8IcwZ5257hh/juvTu3HFKgK21.iVOfOc29WsJOQnaBIhm";

/// The outcome of a Basic check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Verified: the user's name.
    Allowed(Arc<str>),
    /// No `Basic` credentials: a browser that has not asked its user yet.
    Missing,
    /// Credentials that do not match: counted as a failed login.
    Wrong,
    /// No verifier was free in time: 503.
    Busy,
}

pub struct Basic {
    /// `Basic realm="…", charset="UTF-8"`.
    pub challenge: HeaderValue,
    users: HashMap<String, PasswordHash>,
    /// Checked against when the user does not exist, so that a wrong name costs the same
    /// time as a wrong password (no user enumeration by timing): one of the route's own
    /// hashes, which no password is then accepted for.
    decoy: PasswordHash,
    /// The keys of the cache's hash.
    keys: [RandomState; 2],
    /// Keyed hash of a verified header → (user, verified at).
    verified: Mutex<LruCache<u128, Verified>>,
}

/// A header found good: for whom, and when.
type Verified = (Arc<str>, Instant);

impl std::fmt::Debug for Basic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Basic")
            .field("users", &self.users.len())
            .finish_non_exhaustive()
    }
}

impl Basic {
    /// `users` wins over nothing: the caller has already refused names given twice.
    pub fn new(realm: &str, users: Vec<User>) -> Basic {
        let challenge =
            HeaderValue::from_str(&format!("Basic realm=\"{realm}\", charset=\"UTF-8\""))
                .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"restricted\""));
        let decoy = users.first().map_or_else(
            || PasswordHash::Bcrypt(DECOY.to_string()),
            |u| u.hash.clone(),
        );
        Basic {
            challenge,
            decoy,
            users: users.into_iter().map(|u| (u.name, u.hash)).collect(),
            keys: [RandomState::new(), RandomState::new()],
            verified: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHE_SIZE).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// Checks the request's `Authorization` header.
    pub async fn check(&self, authorization: Option<&HeaderValue>, verifier: &Verifier) -> Outcome {
        let Some(header) = authorization.filter(|h| h.len() <= MAX_HEADER) else {
            return Outcome::Missing;
        };
        let key = self.key(header.as_bytes());
        if let Some(user) = self.remembered(&key) {
            return Outcome::Allowed(user);
        }
        let Some((user, password)) = credentials(header.as_bytes()) else {
            return Outcome::Missing;
        };
        let (hash, known) = match self.users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => (self.decoy.clone(), false),
        };
        match verifier.verify(&hash, password).await {
            None => Outcome::Busy,
            Some(true) if known => {
                let user: Arc<str> = user.into();
                self.verified
                    .lock()
                    .put(key, (user.clone(), Instant::now()));
                Outcome::Allowed(user)
            }
            Some(_) => Outcome::Wrong,
        }
    }

    fn key(&self, header: &[u8]) -> u128 {
        let [a, b] = &self.keys;
        (u128::from(a.hash_one(header)) << 64) | u128::from(b.hash_one(header))
    }

    fn remembered(&self, key: &u128) -> Option<Arc<str>> {
        let mut verified = self.verified.lock();
        match verified.get(key) {
            Some((user, at)) if at.elapsed() < CACHE_FOR => Some(user.clone()),
            Some(_) => {
                verified.pop(key);
                None
            }
            None => None,
        }
    }
}

/// `Basic BASE64(user:password)` → (user, password).
fn credentials(header: &[u8]) -> Option<(String, String)> {
    let (scheme, encoded) = header.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim_ascii())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> HeaderValue {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).expect("header")
    }

    #[tokio::test]
    async fn right_wrong_missing_and_remembered() {
        let hash = PasswordHash::Bcrypt(bcrypt::hash("pw", 4).expect("hash"));
        let b = Basic::new(
            "r",
            vec![User {
                name: "alice".into(),
                hash,
            }],
        );
        let v = Verifier::default();
        assert_eq!(
            b.check(Some(&basic("alice", "pw")), &v).await,
            Outcome::Allowed("alice".into())
        );
        assert_eq!(
            b.check(Some(&basic("alice", "no")), &v).await,
            Outcome::Wrong
        );
        assert_eq!(b.check(Some(&basic("bob", "pw")), &v).await, Outcome::Wrong);
        assert_eq!(b.check(None, &v).await, Outcome::Missing);
        let bearer = HeaderValue::from_static("Bearer abc");
        assert_eq!(b.check(Some(&bearer), &v).await, Outcome::Missing);
        assert!(b
            .remembered(&b.key(basic("alice", "pw").as_bytes()))
            .is_some());
        assert!(b
            .remembered(&b.key(basic("alice", "no").as_bytes()))
            .is_none());
        // The decoy is a real hash, so checking it costs what a real one does.
        assert!(bcrypt::verify("x", DECOY).is_ok());
    }
}
