//! Password verification off the reactor. Checking an argon2id or bcrypt hash costs tens
//! of milliseconds of CPU (that is its point): done on a worker thread it would stall
//! every connection that thread serves, and even on another thread it competes with the
//! workers for the CPU. Verifications run on threads of their own, one per CPU, at a
//! low scheduling priority (nice 10): when the proxy needs the CPU, the proxy gets most
//! of it, while logins still progress on a machine whose apps keep every CPU busy (at
//! nice 19 they would starve there). The queue is bounded, and a login that waits longer
//! than `QUEUE_WAIT` is answered 503 rather than left hanging.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::warn;
use tokio::sync::oneshot;

use crate::config::PasswordHash;

/// Longest a login waits for its verification before the gateway says it is busy.
const QUEUE_WAIT: Duration = Duration::from_secs(5);
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
        Verifier { jobs }
    }
}

impl Verifier {
    /// Whether `password` matches `hash`; `None` when the verifiers are too busy.
    pub async fn verify(&self, hash: &PasswordHash, password: String) -> Option<bool> {
        let (answer, verified) = oneshot::channel();
        let job = Job {
            hash: hash.clone(),
            password,
            deadline: Instant::now() + QUEUE_WAIT,
            answer,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => return None,
        }
        tokio::time::timeout(QUEUE_WAIT, verified).await.ok()?.ok()
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
pub fn hash(password: &str) -> Result<String, String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
        .map_err(|e| format!("cannot make a salt: {e}"))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash: {e}"))
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
        assert_eq!(v.verify(&hash, "pw".into()).await, Some(true));
        assert_eq!(v.verify(&hash, "no".into()).await, Some(false));
    }
}
