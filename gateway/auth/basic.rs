//! `basic_auth`: HTTP Basic credentials checked against argon2id or bcrypt hashes.
//!
//! A browser sends the same `Authorization` header with every request of a page: fifty
//! assets would cost fifty hash verifications. A successful verification is remembered
//! for `CACHE_FOR`, keyed by a 128-bit keyed hash of the header (two SipHash-1-3 with
//! random keys; never the password itself), so a page load costs one. Without the keys,
//! a header that hits another's entry takes about 2^128 guesses. Failed verifications
//! are never remembered.
//!
//! Requests of one client that carry the same credentials while they are being verified
//! wait for that one verification (single flight): an HTTP/2 page load sends its fifty
//! asset requests at once, and a cold cache costs one verification, not fifty. The
//! verification that runs is the one counted against the client's failed logins
//! (`Failures::reserve`); another client's limits are never handed on.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use http::HeaderValue;
use lru::LruCache;
use parking_lot::Mutex;
use tokio::sync::OnceCell;

use super::failures::Failures;
use super::verify::{Verifier, QUEUE_WAIT};
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
    /// The client has used up its failed logins (counting those in flight): 429 after
    /// this many seconds.
    Blocked(u64),
}

/// What one verification found, shared by the requests that waited for it.
#[derive(Debug, Clone)]
enum Verified {
    Right(Arc<str>),
    Wrong,
    Busy,
    Blocked(u64),
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
    verified: Mutex<LruCache<u128, Remembered>>,
    /// Verifications in progress, by the same key: later requests wait for them.
    flights: Flights,
}

/// Verifications in progress by the keyed hash of their header.
type Flights = Mutex<HashMap<u128, Arc<OnceCell<Verified>>>>;

/// A header found good: for whom, and when.
type Remembered = (Arc<str>, Instant);

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
            flights: Mutex::new(HashMap::new()),
        }
    }

    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// Checks the request's `Authorization` header from `client` (as
    /// `limits::client_bucket` keys it). A verification that runs takes a place under
    /// `failures` (when the route counts them) and counts there when it fails.
    pub async fn check(
        &self,
        authorization: Option<&HeaderValue>,
        client: IpAddr,
        failures: Option<&Arc<Failures>>,
        verifier: &Verifier,
    ) -> Outcome {
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
        // One flight per client and credentials: a client's limits (blocked, busy) are
        // never handed to another client that sends the same shared login.
        let flight = Flight::join(&self.flights, key ^ self.client_key(client));
        let verified = flight
            .cell
            .get_or_init(|| self.verify(key, user, password, client, failures, verifier))
            .await
            .clone();
        drop(flight);
        match verified {
            Verified::Right(user) => Outcome::Allowed(user),
            Verified::Wrong => Outcome::Wrong,
            Verified::Busy => Outcome::Busy,
            Verified::Blocked(retry) => Outcome::Blocked(retry),
        }
    }

    /// The one verification of a flight.
    async fn verify(
        &self,
        key: u128,
        user: String,
        password: String,
        client: IpAddr,
        failures: Option<&Arc<Failures>>,
        verifier: &Verifier,
    ) -> Verified {
        let deadline = Instant::now() + QUEUE_WAIT;
        let reservation = match failures {
            Some(f) => match f.reserve(client, deadline).await {
                Ok(reservation) => Some(reservation),
                Err(Some(retry)) => return Verified::Blocked(retry),
                Err(None) => return Verified::Busy,
            },
            None => None,
        };
        let (hash, known) = match self.users.get(&user) {
            Some(hash) => (hash.clone(), true),
            None => (self.decoy.clone(), false),
        };
        let verified = match verifier.verify(client, &hash, password, deadline).await {
            None => Verified::Busy,
            Some(true) if known => {
                let user: Arc<str> = user.into();
                self.verified
                    .lock()
                    .put(key, (user.clone(), Instant::now()));
                Verified::Right(user)
            }
            Some(_) => Verified::Wrong,
        };
        if let (Verified::Wrong, Some(f)) = (&verified, failures) {
            // Counted before the place is given back, so no waiter slips in between.
            f.failed(client).await;
        }
        drop(reservation);
        verified
    }

    fn key(&self, header: &[u8]) -> u128 {
        let [a, b] = &self.keys;
        (u128::from(a.hash_one(header)) << 64) | u128::from(b.hash_one(header))
    }

    /// `client` under the same keys, to tell one client's flight from another's.
    fn client_key(&self, client: IpAddr) -> u128 {
        let [a, b] = &self.keys;
        (u128::from(b.hash_one(client)) << 64) | u128::from(a.hash_one(client))
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

/// A request's part in the verification of its credentials. Leaving (done, or the
/// request cancelled) takes the flight out of the map, so no abandoned flight stays:
/// requests that come later start their own.
struct Flight<'a> {
    flights: &'a Flights,
    key: u128,
    cell: Arc<OnceCell<Verified>>,
}

impl<'a> Flight<'a> {
    fn join(flights: &'a Flights, key: u128) -> Self {
        let cell = flights.lock().entry(key).or_default().clone();
        Flight { flights, key, cell }
    }
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        let mut flights = self.flights.lock();
        if flights
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.cell))
        {
            flights.remove(&self.key);
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

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    fn alice(cost: u32) -> Basic {
        let hash = PasswordHash::Bcrypt(bcrypt::hash("pw", cost).expect("hash"));
        Basic::new(
            "r",
            vec![User {
                name: "alice".into(),
                hash,
            }],
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn guesses_in_flight_count_and_the_same_credentials_share_a_verification() {
        let b = Arc::new(alice(8));
        let v = Arc::new(Verifier::default());
        let limit = |limit| {
            Arc::new(Failures::new(
                crate::config::FailureLimit {
                    limit,
                    per: Duration::from_secs(60),
                },
                64,
                "r",
                None,
            ))
        };
        let run = |password: &'static str, f: &Arc<Failures>| {
            let (b, v, f) = (b.clone(), v.clone(), f.clone());
            tokio::spawn(async move {
                b.check(Some(&basic("alice", password)), CLIENT, Some(&f), &v)
                    .await
            })
        };
        // Fifty requests with one wrong password: every one is answered as wrong (the
        // ones that came together shared a verification).
        let shared = limit(100);
        let same: Vec<_> = (0..50).map(|_| run("no", &shared)).collect();
        for outcome in same {
            assert_eq!(outcome.await.expect("join"), Outcome::Wrong);
        }
        // Distinct guesses at once against a limit of 3: never more verifications than
        // failures left, whatever the timing; the rest are refused once those failed.
        let three = limit(3);
        let guesses: Vec<_> = ["a", "b", "c", "d", "e", "f"]
            .map(|p| run(p, &three))
            .into_iter()
            .collect();
        let mut wrong = 0;
        let mut blocked = 0;
        for outcome in guesses {
            match outcome.await.expect("join") {
                Outcome::Wrong => wrong += 1,
                Outcome::Blocked(_) => blocked += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((wrong, blocked), (3, 3));
        assert!(three.blocked_local(CLIENT).is_some());
        assert!(b.flights.lock().is_empty(), "no flight left behind");
    }

    #[tokio::test]
    async fn right_wrong_missing_and_remembered() {
        let b = alice(4);
        let v = Verifier::default();
        let check = |header: Option<HeaderValue>| {
            let (b, v) = (&b, &v);
            async move { b.check(header.as_ref(), CLIENT, None, v).await }
        };
        assert_eq!(
            check(Some(basic("alice", "pw"))).await,
            Outcome::Allowed("alice".into())
        );
        assert_eq!(check(Some(basic("alice", "no"))).await, Outcome::Wrong);
        assert_eq!(check(Some(basic("bob", "pw"))).await, Outcome::Wrong);
        assert_eq!(check(None).await, Outcome::Missing);
        let bearer = HeaderValue::from_static("Bearer abc");
        assert_eq!(check(Some(bearer)).await, Outcome::Missing);
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
