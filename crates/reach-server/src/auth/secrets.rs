//! Hashing and checking the secrets callers present: console passwords
//! (chosen by people) with argon2id, client secrets (32 random bytes made by
//! Reach) with HMAC-SHA-256 under a random per-secret key, which is enough
//! for a secret nobody can guess and costs microseconds to check.
//!
//! Every check goes through `Gate`. A fast hash is checked at once; argon2
//! work (passwords, and app secrets stored before the fast hash existed)
//! runs at most `permits` at a time, each in a memory block kept in a pool
//! and reused, so a flood of guesses costs a fixed amount of memory and a
//! bounded queue of waiting callers; past the queue a caller is told to come
//! back (`Busy`). The pool is emptied once no check ran for `IDLE_TRIM`, so
//! memory returns to its level after a burst. This module never logs a
//! secret or a hash.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Prefix of a client secret's fast hash: `$hmac-sha256$<key>$<mac>`, both base64.
const FAST_PREFIX: &str = "$hmac-sha256$";

/// argon2id hash (PHC string) of a password chosen by a person.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut raw = [0u8; 16];
    rand::rng().fill_bytes(&mut raw);
    let salt = SaltString::encode_b64(&raw).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))?
        .to_string())
}

/// Fast hash of a client secret Reach generated (high entropy): HMAC-SHA-256
/// keyed by 16 random bytes stored beside it.
pub fn hash_client_secret(secret: &str) -> String {
    let mut key = [0u8; 16];
    rand::rng().fill_bytes(&mut key);
    format!(
        "{FAST_PREFIX}{}${}",
        STANDARD_NO_PAD.encode(key),
        STANDARD_NO_PAD.encode(mac(&key, secret))
    )
}

fn mac(key: &[u8], secret: &str) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(secret.as_bytes());
    mac.finalize().into_bytes().into()
}

/// Whether `stored` is a fast hash (no argon2 work to check it).
pub fn is_fast(stored: &str) -> bool {
    stored.starts_with(FAST_PREFIX)
}

/// Checks `secret` against a fast hash; false for anything malformed.
fn fast_matches(secret: &str, stored: &str) -> bool {
    let Some((key, expected)) = stored
        .strip_prefix(FAST_PREFIX)
        .and_then(|rest| rest.split_once('$'))
    else {
        return false;
    };
    match (
        STANDARD_NO_PAD.decode(key),
        STANDARD_NO_PAD.decode(expected),
    ) {
        (Ok(key), Ok(expected)) => super::constant_time_eq(&mac(&key, secret), &expected),
        _ => false,
    }
}

/// The memory of one argon2 check at Reach's parameters (argon2's defaults:
/// 19 MiB). A stored hash asking for more is refused, never allocated.
fn blocks_per_check() -> usize {
    Params::default().block_count()
}

/// Checks `secret` against an argon2 PHC string, in `memory`.
fn argon2_matches(secret: &str, stored: &str, memory: &mut [Block]) -> bool {
    let mut check = || -> Option<bool> {
        let parsed = PasswordHash::new(stored).ok()?;
        let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(&parsed).ok()?;
        let expected = parsed.hash?;
        let mut salt = [0u8; 64];
        let salt = parsed.salt?.decode_b64(&mut salt).ok()?;
        let blocks = params.block_count();
        if blocks > memory.len() {
            tracing::warn!(
                blocks,
                "a stored password hash needs more memory than Reach allows; refused"
            );
            return Some(false);
        }
        let mut out = vec![0u8; expected.len()];
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(
                secret.as_bytes(),
                salt,
                &mut out,
                &mut memory[..blocks],
            )
            .ok()?;
        Some(super::constant_time_eq(&out, expected.as_bytes()))
    };
    check().unwrap_or(false)
}

/// The gate is full: too many checks are running and waiting.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the server is busy checking other secrets")]
pub struct Busy;

/// The pool's memory is given back once no check ran for this long.
pub const IDLE_TRIM: Duration = Duration::from_secs(30);

type Pool = Arc<Mutex<Vec<Vec<Block>>>>;

/// At most `permits` argon2 checks at once, in pooled memory, with at most
/// `queue` callers waiting.
pub struct Gate {
    permits: tokio::sync::Semaphore,
    queue: usize,
    waiting: AtomicUsize,
    pool: Pool,
    /// Moving average of an argon2 check's duration, in microseconds.
    average_micros: AtomicU64,
    /// When a check last ended, in milliseconds since `epoch`.
    last_used: Arc<AtomicU64>,
    epoch: Instant,
    /// Whether a task is waiting to empty the pool.
    trim_scheduled: Arc<AtomicBool>,
    idle_trim: Duration,
}

impl Gate {
    /// `permits` 0: the number of CPUs, at most 8.
    pub fn new(permits: usize, queue: usize) -> Self {
        let permits = if permits == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get().min(8))
        } else {
            permits
        };
        Self {
            permits: tokio::sync::Semaphore::new(permits),
            queue,
            waiting: AtomicUsize::new(0),
            pool: Pool::default(),
            average_micros: AtomicU64::new(50_000),
            last_used: Arc::default(),
            epoch: Instant::now(),
            trim_scheduled: Arc::default(),
            idle_trim: IDLE_TRIM,
        }
    }

    /// Whether `secret` matches `stored` (a fast hash or an argon2 PHC
    /// string). `Busy` when the queue of argon2 checks is full.
    pub async fn verify(&self, secret: &str, stored: &str) -> Result<bool, Busy> {
        if is_fast(stored) {
            return Ok(fast_matches(secret, stored));
        }
        let permit = match self.permits.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                let _waiting = self.enter_queue()?;
                self.permits.acquire().await.expect("the gate never closes")
            }
        };
        let mut memory = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| vec![Block::default(); blocks_per_check()]);
        let started = Instant::now();
        let (secret, stored) = (secret.to_string(), stored.to_string());
        let outcome = tokio::task::spawn_blocking(move || {
            let matches = argon2_matches(&secret, &stored, &mut memory);
            (matches, memory)
        })
        .await;
        drop(permit);
        match outcome {
            Ok((matches, memory)) => {
                self.pool
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(memory);
                self.learn(started.elapsed());
                self.schedule_trim();
                Ok(matches)
            }
            Err(err) => {
                tracing::error!(error = %err, "a password check failed to run");
                Ok(false)
            }
        }
    }

    /// For an account that does not exist: waits about as long as a real
    /// check takes, without doing one, and is `Busy` when a real check
    /// would be, so that neither the answer nor its timing tells whether
    /// the name exists.
    pub async fn imitate(&self) -> Result<(), Busy> {
        if self.permits.available_permits() == 0
            && self.waiting.load(Ordering::Acquire) >= self.queue
        {
            return Err(Busy);
        }
        let average = self.average_micros.load(Ordering::Relaxed);
        let jitter = rand::rng().next_u64() % (average / 4 + 1);
        tokio::time::sleep(Duration::from_micros(average - average / 8 + jitter)).await;
        Ok(())
    }

    /// Memory blocks the pool holds (for tests: bounded by the permits).
    pub fn pooled(&self) -> usize {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn enter_queue(&self) -> Result<QueueSlot<'_>, Busy> {
        let before = self.waiting.fetch_add(1, Ordering::AcqRel);
        let slot = QueueSlot(&self.waiting);
        if before >= self.queue {
            return Err(Busy);
        }
        Ok(slot)
    }

    /// Empties the pool once the gate has been idle for `idle_trim` (one
    /// waiting task at a time).
    fn schedule_trim(&self) {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.last_used
            .store(millis(self.epoch.elapsed()), Ordering::Release);
        if self.trim_scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let (pool, last_used, scheduled) = (
            self.pool.clone(),
            self.last_used.clone(),
            self.trim_scheduled.clone(),
        );
        let (epoch, idle_trim) = (self.epoch, self.idle_trim);
        tokio::spawn(async move {
            loop {
                let idle =
                    millis(epoch.elapsed()).saturating_sub(last_used.load(Ordering::Acquire));
                if idle >= millis(idle_trim) {
                    pool.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    scheduled.store(false, Ordering::Release);
                    return;
                }
                tokio::time::sleep(idle_trim - Duration::from_millis(idle)).await;
            }
        });
    }

    fn learn(&self, took: Duration) {
        let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let old = self.average_micros.load(Ordering::Relaxed);
        self.average_micros
            .store(old - old / 8 + took / 8, Ordering::Relaxed);
    }
}

/// A caller's place in the queue, given back when it gets a permit or leaves.
struct QueueSlot<'a>(&'a AtomicUsize);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Too many secret checks are running and waiting (`auth::secrets::Gate`).
impl From<Busy> for crate::error::ApiError {
    fn from(_: Busy) -> Self {
        Self::TooManyRequests {
            message: "The server is busy checking other credentials; retry in 1 s".into(),
            retry_after_secs: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_kinds_of_hash_verify() {
        let gate = Gate::new(1, 4);
        let slow = hash_password("correct horse").unwrap();
        assert!(gate.verify("correct horse", &slow).await.unwrap());
        assert!(!gate.verify("Correct horse", &slow).await.unwrap());
        let fast = hash_client_secret("s3cret");
        assert!(is_fast(&fast) && !is_fast(&slow));
        assert!(gate.verify("s3cret", &fast).await.unwrap());
        assert!(!gate.verify("s3cret!", &fast).await.unwrap());
        assert_ne!(
            fast,
            hash_client_secret("s3cret"),
            "each hash has its own key"
        );
        for bad in [
            "not a hash",
            "$hmac-sha256$",
            "$hmac-sha256$!!$!!",
            "$argon2id$v=19$x",
        ] {
            assert!(!gate.verify("s3cret", bad).await.unwrap(), "{bad}");
        }
    }

    #[tokio::test]
    async fn argon2_checks_reuse_pooled_memory() {
        let gate = Gate::new(2, 16);
        let hash = hash_password("pooled password").unwrap();
        let checks = (0..8).map(|_| gate.verify("pooled password", &hash));
        for result in futures::future::join_all(checks).await {
            assert_eq!(result, Ok(true));
        }
        assert!(gate.pooled() <= 2, "at most one block per permit");
    }

    #[tokio::test]
    async fn the_pool_is_emptied_once_idle() {
        let mut gate = Gate::new(1, 4);
        gate.idle_trim = Duration::from_millis(50);
        let hash = hash_password("idle password").unwrap();
        assert!(gate.verify("idle password", &hash).await.unwrap());
        assert_eq!(gate.pooled(), 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while gate.pooled() != 0 {
            assert!(Instant::now() < deadline, "the pool was never emptied");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            gate.verify("idle password", &hash).await.unwrap(),
            "and refills"
        );
    }

    #[tokio::test]
    async fn a_full_queue_is_busy_at_once() {
        let gate = std::sync::Arc::new(Gate::new(1, 1));
        let hash = hash_password("queued password").unwrap();
        // One check runs, one waits; the next caller finds the queue full.
        let _held = gate.permits.acquire().await.unwrap();
        let waiting = {
            let (gate, hash) = (gate.clone(), hash.clone());
            tokio::spawn(async move { gate.verify("queued password", &hash).await })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while gate.waiting.load(Ordering::Acquire) != 1 {
            assert!(Instant::now() < deadline, "the check never queued");
            tokio::task::yield_now().await;
        }
        assert_eq!(gate.verify("queued password", &hash).await, Err(Busy));
        assert_eq!(
            gate.imitate().await,
            Err(Busy),
            "an unknown name is as busy"
        );
        assert!(
            gate.verify("x", &hash_client_secret("x")).await.unwrap(),
            "fast checks never queue"
        );
        drop(_held);
        assert_eq!(waiting.await.unwrap(), Ok(true));
    }

    #[test]
    fn a_hash_asking_for_more_memory_is_refused() {
        let params = Params::new(Params::DEFAULT_M_COST * 2, 1, 1, None).unwrap();
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let big = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        let mut memory = vec![Block::default(); blocks_per_check()];
        assert!(!argon2_matches("pw", &big, &mut memory));
    }
}
