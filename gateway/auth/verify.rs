//! Password verification off the reactor. Checking an argon2id or bcrypt hash costs tens
//! of milliseconds of CPU (that is its point): done on a worker thread it would stall
//! every connection that thread serves, and even on another thread it competes with the
//! workers for the CPU. Verifications run on threads of their own, one per CPU, at a
//! low scheduling priority (nice 10): when the proxy needs the CPU, the proxy gets most
//! of it, while logins still progress on a machine whose apps keep every CPU busy (at
//! nice 19 they would starve there). The queue is bounded, and a login that waits longer
//! than `QUEUE_WAIT` is answered 503 rather than left hanging.
//!
//! One client (address, or IPv6 prefix) has at most `PER_CLIENT` verifications queued or
//! running; its others wait their turn outside the queue. So a flood of guesses from one
//! address never stands between another client and its login: the queue is first come,
//! first served, and holds at most `PER_CLIENT` jobs of each client.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::warn;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::config::PasswordHash;

/// Longest a login waits for its verification before the gateway says it is busy: a
/// burst of logins (a class signing in at once) is served a few seconds late, as nginx
/// or Caddy would serve it, rather than refused.
pub const QUEUE_WAIT: Duration = Duration::from_secs(30);
/// Verifications one client may have queued or running at once.
const PER_CLIENT: usize = 2;
/// Logins of one client that may wait for a turn; more are answered busy (503) at once.
/// Enough for a class logging in together behind one NAT address.
const MAX_WAITING: usize = 256;
/// Logins that may wait for a verifier.
const QUEUE: usize = 1024;
/// The verifier threads' nice value: a tenth of a normal thread's share of a busy CPU.
const NICE: libc::c_int = 10;

struct Job {
    hash: PasswordHash,
    password: String,
    /// Past this nobody waits for the answer: skip the work.
    deadline: Instant,
    answer: oneshot::Sender<bool>,
}

/// The shared, bounded pool of password verifications. One per process.
pub struct Verifier {
    jobs: SyncSender<Job>,
    /// Each client's turns: `PER_CLIENT` permits, handed out first come, first served.
    clients: parking_lot::Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

/// A client's turn at the verifier; given back when dropped.
struct Turn<'a> {
    verifier: &'a Verifier,
    client: IpAddr,
    permit: OwnedSemaphorePermit,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut clients = self.verifier.clients.lock();
        // Nobody else holds or waits for this client's turns (the map, this turn): the
        // entry goes, so the map holds only clients with logins in progress.
        if Arc::strong_count(self.permit.semaphore()) == 2 {
            clients.remove(&self.client);
        }
    }
}

impl Default for Verifier {
    fn default() -> Self {
        let (jobs, queue) = sync_channel::<Job>(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        for i in 0..threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-{i}"))
                .spawn(move || work(&queue));
            if let Err(e) = spawned {
                warn!("event=verifier_thread_failed error={e}");
            }
        }
        Verifier {
            jobs,
            clients: parking_lot::Mutex::new(HashMap::new()),
        }
    }
}

impl Verifier {
    /// Whether `password` matches `hash`, for `client` (as `limits::client_bucket` keys
    /// it); `None` when the verifiers are too busy to answer by `deadline` (a login's
    /// `QUEUE_WAIT`), or `client` already has `MAX_WAITING` logins waiting.
    pub async fn verify(
        &self,
        client: IpAddr,
        hash: &PasswordHash,
        password: String,
        deadline: Instant,
    ) -> Option<bool> {
        let _turn = self.turn(client, deadline).await?;
        let (answer, verified) = oneshot::channel();
        let job = Job {
            hash: hash.clone(),
            password,
            deadline,
            answer,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => return None,
        }
        let deadline = tokio::time::Instant::from_std(deadline);
        tokio::time::timeout_at(deadline, verified).await.ok()?.ok()
    }

    /// Waits (until `deadline`) for one of `client`'s `PER_CLIENT` turns, in order of
    /// arrival; `None` past the deadline or when `MAX_WAITING` of its logins wait already.
    async fn turn(&self, client: IpAddr, deadline: Instant) -> Option<Turn<'_>> {
        let turns = {
            let mut clients = self.clients.lock();
            let turns = clients
                .entry(client)
                .or_insert_with(|| Arc::new(Semaphore::new(PER_CLIENT)))
                .clone();
            // The map's handle, this one, and one per holder (its permit) and waiter.
            if Arc::strong_count(&turns) > PER_CLIENT + MAX_WAITING + 1 {
                return None;
            }
            turns
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        let permit = tokio::time::timeout_at(deadline, turns.acquire_owned()).await;
        permit.ok()?.ok().map(|permit| Turn {
            verifier: self,
            client,
            permit,
        })
    }
}

/// A verifier thread: lowest priority, then jobs until the pool is gone.
fn work(queue: &Mutex<Receiver<Job>>) {
    // SAFETY: plain system calls on the calling thread (on Linux, PRIO_PROCESS with a
    // thread id sets that thread's nice value).
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, NICE);
    }
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        if Instant::now() > job.deadline || job.answer.is_closed() {
            continue;
        }
        let _ = job.answer.send(matches(&job.hash, &job.password));
    }
}

/// The verification itself (blocking, CPU-bound).
pub fn matches(hash: &PasswordHash, password: &str) -> bool {
    use argon2::password_hash::{PasswordHash as Phc, PasswordVerifier};
    match hash {
        PasswordHash::Argon2id(text) => Phc::new(text).is_ok_and(|phc| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &phc)
                .is_ok()
        }),
        PasswordHash::Bcrypt(text) => bcrypt::verify(password, text).unwrap_or(false),
    }
}

/// An argon2id hash of `password` with OWASP's parameters (19 MiB, 2 passes) and a random
/// salt, for `gateway hash-password`.
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_wrong_passwords_do_not() {
        let hash = PasswordHash::Argon2id(super::hash("s3cret").expect("hash"));
        assert!(matches(&hash, "s3cret"));
        assert!(!matches(&hash, "s3cret "));
        let bcrypt = PasswordHash::Bcrypt(bcrypt::hash("pw", 4).expect("bcrypt"));
        assert!(matches(&bcrypt, "pw"));
        assert!(!matches(&bcrypt, "Pw"));
    }

    #[tokio::test]
    async fn the_pool_answers() {
        let v = Verifier::default();
        let hash = PasswordHash::Bcrypt(bcrypt::hash("pw", 4).expect("bcrypt"));
        let client = IpAddr::from([192, 0, 2, 1]);
        let deadline = Instant::now() + QUEUE_WAIT;
        assert_eq!(
            v.verify(client, &hash, "pw".into(), deadline).await,
            Some(true)
        );
        assert_eq!(
            v.verify(client, &hash, "no".into(), deadline).await,
            Some(false)
        );
        assert!(v.clients.lock().is_empty(), "every turn given back");
    }
}
