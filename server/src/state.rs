//! The state every listener shares.

use std::sync::Arc;

use anyhow::Context as _;
use rusqlite::Connection;
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use crate::crypto_pool::{CryptoPool, GiveWay, RadiusLoad};
use crate::db::Store;
use crate::db::audit::Entry;
use crate::db::engine::{Engine, EngineError, TxLedger};
use crate::db::passcodes::NewPasscode;
use crate::db::{devices, nonces, passcodes, verify};
use crate::domain::passcode::{self, PasscodeKey};
use crate::domain::pin;
use crate::service::limiter::RateLimiter;
use crate::service::verify::{Decision, Request, decide_in_transaction};

/// A token request's nonce, to be recorded until `expires_at`.
pub struct Nonce {
    pub device_key_id: String,
    pub nonce: String,
    pub expires_at: i64,
}

/// Whether a passcode request may have its PIN checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Its nonce was seen before; no attempt was taken.
    Replay,
    /// The device has used up its PIN attempts.
    Locked,
    /// The attempt was taken: the device's count of attempts, this one included.
    Attempt(i64),
}

impl From<Option<i64>> for Admission {
    fn from(reserved: Option<i64>) -> Self {
        reserved.map_or(Self::Locked, Self::Attempt)
    }
}

/// Name of the server secret that keys passcode hashes.
pub const PASSCODE_SECRET: &str = "passcode-hmac-v1";

/// Shared, cheaply cloned state.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub passcode_key: PasscodeKey,
    /// Threads for HPKE and RSA work (a fraction of a millisecond each), two per core for
    /// each of the two priorities (`crypto_pool`), so it cannot starve the runtime.
    pub crypto: Arc<CryptoPool>,
    /// Threads for argon2id hashes and verifies (19 MiB and ~15 ms of one core each), one per
    /// core for each of the two priorities, and new jobs go to one priority's threads at a
    /// time: more at once only time-slice the same cores and evict each other's memory from
    /// the cache (4 threads on 2 cores verify 7–10 % fewer PINs a second than 2,
    /// BENCHMARKS.md). One of the `SCHED_IDLE` ones gives way while the RADIUS path is busy
    /// (`radius_load`).
    pub argon2: Arc<CryptoPool>,
    /// Access-Requests lately, counted by the RADIUS listener.
    pub radius_load: Arc<RadiusLoad>,
    /// Registrations per source address (each costs an argon2 hash).
    pub registration_limiter: Arc<RateLimiter>,
    /// On a SQLite file, the engine that decides RADIUS requests with group commit; none on
    /// PostgreSQL, where each check goes through the pool.
    pub engine: Option<Engine<Request, Decision>>,
}

impl AppState {
    pub async fn new(store: Store) -> anyhow::Result<Self> {
        let secret = store.secret(PASSCODE_SECRET).await?;
        let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let passcode_key = PasscodeKey::new(secret);
        let radius_load = Arc::new(RadiusLoad::default());
        let engine = match (store.sqlite_file(), store.write_turns()) {
            (Some(path), Some(turns)) => {
                let key = passcode_key.clone();
                let decide = move |ledger: &mut TxLedger<'_, '_>, request: &Request| {
                    decide_in_transaction(ledger, &key, request)
                };
                // A Reject is answered once its batch is decided, before the batch commits (db::engine).
                let early = |d: &Decision| matches!(d, Decision::Reject(_));
                // A batch's answers to one client leave in one send (radius::outbox).
                Some(Engine::start(path, turns, decide, early, crate::radius::outbox::together)?)
            }
            _ => None,
        };
        Ok(Self {
            store,
            engine,
            passcode_key,
            crypto: Arc::new(CryptoPool::start_beside(
                "tessera-crypto",
                workers * 2,
                radius_load.clone(),
                GiveWay::No,
            )?),
            argon2: Arc::new(CryptoPool::start_beside(
                "tessera-argon2",
                workers,
                radius_load.clone(),
                GiveWay::OneThread,
            )?),
            radius_load,
            registration_limiter: Arc::new(RateLimiter::new(20, std::time::Duration::from_secs(3))),
        })
    }

    /// Runs CPU-heavy crypto (HPKE, RSA) on the crypto threads, at a low CPU priority
    /// (`crypto_pool`: `SCHED_IDLE` while the RADIUS path is busy, nice 10 while it is quiet).
    pub async fn blocking<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
        self.crypto.run(f).await
    }

    /// Runs an argon2id hash or verify on the argon2id threads, at the crypto threads' priority.
    pub async fn argon2<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
        self.argon2.run(f).await
    }

    // The token API's writes on every passcode request. On a SQLite file they run on the
    // verification engine's thread, inside its batches (`Engine::write`, `write_then`), so
    // that RADIUS never waits for them; on PostgreSQL through the pool. Only the PIN attempt (in one
    // write with its request's nonce) is synced to the disk before the answer, as every pool
    // commit is: a power loss must not give a guesser attempts back. A nonce or a passcode
    // lost to a power loss costs nothing: the start after it voids every unused passcode
    // (`db::runs`), and a replayed request is sealed to the token that sent it, so its
    // answer is of no use to the replayer.

    /// Records a token request's nonce; false when it was seen before (a replay).
    pub async fn record_nonce(&self, device_key_id: &str, nonce: &str, expires_at: i64) -> anyhow::Result<bool> {
        let Some(engine) = &self.engine else {
            return Ok(self.store.record_nonce(device_key_id, nonce, expires_at).await?);
        };
        let (device_key_id, nonce) = (device_key_id.to_owned(), nonce.to_owned());
        Ok(engine.write(false, move |conn| nonces::record_nonce_in(conn, &device_key_id, &nonce, expires_at)).await?)
    }

    /// A passcode request's PIN check, in three steps: its nonce recorded and, if it was
    /// not seen before, a PIN attempt taken, both on the disk before the PIN is checked
    /// (`Store::reserve_pin_attempt`); the PIN checked with argon2id; if it is right, a
    /// passcode generated and stored with `issued` as its audit entry
    /// (`Store::insert_passcode`).
    ///
    /// On SQLite each step starts the next on the thread where it ends: the log-sync thread
    /// queues the argon2id job, which queues the passcode's write, whose commit answers the
    /// request. So the runtime wakes once for the three steps instead of three times; with
    /// both cores busy verifying PINs, each wake-up pre-empts an argon2id thread
    /// (BENCHMARKS.md, Next steps item 25). On PostgreSQL the steps run one after the other
    /// through the pool.
    pub async fn check_pin_and_issue(&self, check: PinCheck, issued: Entry<'_>) -> anyhow::Result<PinChecked> {
        let Some(engine) = &self.engine else {
            return self.check_pin_and_issue_in_steps(check, issued).await;
        };
        let (tx, answer) = oneshot::channel::<anyhow::Result<PinChecked>>();
        let PinCheck { nonce, device_id, user_id, limit, pin, pin_hash, passcode_length, expires_at, now } = check;
        let mut audit = verify::audit_values(&issued, 0);
        let (argon2, key, storing) = (self.argon2.clone(), self.passcode_key.clone(), engine.clone());
        let admit = move |conn: &Connection| {
            if !nonces::record_nonce_in(conn, &nonce.device_key_id, &nonce.nonce, nonce.expires_at)? {
                return Ok(Admission::Replay);
            }
            Ok(Admission::from(devices::reserve_pin_attempt_in(conn, device_id, limit)?))
        };
        // On the log-sync thread (or this one, if the engine refused the write).
        let admitted = move |admitted: Result<Admission, EngineError>| {
            let count = match admitted {
                Ok(Admission::Attempt(count)) => count,
                Ok(Admission::Replay) => return answer_with(tx, Ok(PinChecked::Replay)),
                Ok(Admission::Locked) => return answer_with(tx, Ok(PinChecked::Locked)),
                Err(e) => {
                    let e = anyhow::Error::new(e).context("recording the nonce and the PIN attempt failed");
                    return answer_with(tx, Err(e));
                }
            };
            // The attempt is on the disk; the PIN may be checked.
            argon2.spawn(move || {
                if tx.is_closed() {
                    return; // The request went away; as through the runtime, its attempt stays taken.
                }
                let Some((code, hash)) = verify_pin_and_generate(&pin, &pin_hash, &key, user_id, passcode_length)
                else {
                    return answer_with(tx, Ok(PinChecked::Wrong { attempts: count }));
                };
                audit.0 = crate::now();
                let insert = move |conn: &Connection| {
                    let p = NewPasscode { user_id, device_id, hash: &hash, expires_at, now };
                    passcodes::insert_passcode_in(conn, &p, &audit)
                };
                // On the engine's thread, once committed.
                storing.write_then(false, insert, move |stored| {
                    let stored = stored.map_err(|e| anyhow::Error::new(e).context("storing the passcode failed"));
                    answer_with(tx, stored.map(|()| PinChecked::Issued(code)));
                });
            });
        };
        engine.write_then(true, admit, admitted);
        answer.await.map_err(|_| anyhow::anyhow!("the PIN check ended without an answer (a job panicked)"))?
    }

    /// [`check_pin_and_issue`](Self::check_pin_and_issue) on PostgreSQL.
    async fn check_pin_and_issue_in_steps(&self, check: PinCheck, issued: Entry<'_>) -> anyhow::Result<PinChecked> {
        let PinCheck { nonce, device_id, user_id, limit, pin, pin_hash, passcode_length, expires_at, now } = check;
        let store = &self.store;
        let admitted = async {
            if !store.record_nonce(&nonce.device_key_id, &nonce.nonce, nonce.expires_at).await? {
                return Ok(Admission::Replay);
            }
            Ok::<_, sqlx::Error>(Admission::from(store.reserve_pin_attempt(device_id, limit).await?))
        };
        let count = match admitted.await.context("recording the nonce and the PIN attempt failed")? {
            Admission::Attempt(count) => count,
            Admission::Replay => return Ok(PinChecked::Replay),
            Admission::Locked => return Ok(PinChecked::Locked),
        };
        let key = self.passcode_key.clone();
        let checked = self.argon2(move || verify_pin_and_generate(&pin, &pin_hash, &key, user_id, passcode_length));
        let Some((code, hash)) = checked.await.context("PIN check failed")? else {
            return Ok(PinChecked::Wrong { attempts: count });
        };
        let p = NewPasscode { user_id, device_id, hash: &hash, expires_at, now };
        store.insert_passcode(p, issued).await.context("storing the passcode failed")?;
        Ok(PinChecked::Issued(code))
    }
}

/// Checks a PIN against its argon2id hash (on the calling thread: one of the argon2id
/// pool's); if it is right, a fresh passcode of `length` digits and the hash it is stored
/// under.
fn verify_pin_and_generate(
    pin: &str,
    pin_hash: &str,
    key: &PasscodeKey,
    user_id: i64,
    length: u32,
) -> Option<(Zeroizing<String>, [u8; 32])> {
    if !pin::verify(pin, pin_hash) {
        return None;
    }
    let code = passcode::generate(length);
    let hash = key.hash(user_id, &code);
    Some((code, hash))
}

/// Hands a PIN check's outcome to the request waiting for it, if it still is.
fn answer_with(tx: oneshot::Sender<anyhow::Result<PinChecked>>, outcome: anyhow::Result<PinChecked>) {
    let _ = tx.send(outcome);
}

/// A passcode request whose PIN is to be checked ([`AppState::check_pin_and_issue`]).
pub struct PinCheck {
    pub nonce: Nonce,
    pub device_id: i64,
    pub user_id: i64,
    /// The domain's limit of PIN attempts.
    pub limit: i64,
    pub pin: String,
    /// The device's argon2id PIN hash.
    pub pin_hash: String,
    /// The passcode to issue: its length, expiry, and the time it is issued.
    pub passcode_length: u32,
    pub expires_at: i64,
    pub now: i64,
}

/// What became of a PIN check.
pub enum PinChecked {
    /// The nonce was seen before; no attempt was taken.
    Replay,
    /// The device has used up its PIN attempts.
    Locked,
    /// A wrong PIN: the device's count of attempts, this one included.
    Wrong { attempts: i64 },
    /// A right PIN: the passcode issued, stored.
    Issued(Zeroizing<String>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy, thread_schedule_policy};

    #[tokio::test]
    async fn crypto_work_runs_below_the_runtime_and_under_sched_idle_while_radius_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        let state = AppState::new(store).await.unwrap();
        let policy = || thread_schedule_policy().unwrap();
        let nice = || rustix::process::getpriority_process(None).unwrap();
        let (before, runtime_nice) = (policy(), nice());
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        assert_ne!(before, idle);
        // Every job of both pools, whichever of their threads runs it.
        for _ in 0..4 {
            assert_eq!(state.blocking(move || (policy(), nice())).await.unwrap(), (before, runtime_nice.max(10)));
            assert_eq!(state.argon2(move || (policy(), nice())).await.unwrap(), (before, runtime_nice.max(10)));
        }
        // As if 1,000 Access-Requests a second had come (crypto_pool's tests count them),
        // for as long as the jobs below may wait under SCHED_IDLE.
        state.radius_load.hold_busy();
        for _ in 0..4 {
            assert_eq!(state.blocking(policy).await.unwrap(), idle);
            assert_eq!(state.argon2(policy).await.unwrap(), idle);
        }
        assert_eq!((policy(), nice()), (before, runtime_nice), "the runtime's own thread keeps its priority");
    }
}
