//! The state every listener shares.

use std::sync::Arc;

use crate::crypto_pool::{CryptoPool, RadiusLoad};
use crate::db::Store;
use crate::db::audit::Entry;
use crate::db::engine::{Engine, TxLedger};
use crate::db::passcodes::NewPasscode;
use crate::db::{devices, nonces, passcodes, verify};
use crate::domain::passcode::PasscodeKey;
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
    /// Threads for HPKE and RSA work (a fraction of a millisecond each), two per core, so it
    /// cannot starve the runtime.
    pub crypto: Arc<CryptoPool>,
    /// Threads for argon2id hashes and verifies (19 MiB and ~15 ms of one core each), one per
    /// core: more only time-slice the same cores and evict each other's memory from the cache
    /// (4 threads on 2 cores verify 7–10 % fewer PINs a second than 2, BENCHMARKS.md). One
    /// of them gives way while the RADIUS path is busy (`radius_load`).
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
            crypto: Arc::new(CryptoPool::start("tessera-crypto", workers * 2)?),
            argon2: Arc::new(CryptoPool::start_giving_way("tessera-argon2", workers, Some(radius_load.clone()))?),
            radius_load,
            registration_limiter: Arc::new(RateLimiter::new(20, std::time::Duration::from_secs(3))),
        })
    }

    /// Runs CPU-heavy crypto (HPKE, RSA) on the crypto threads, at the lowest CPU priority.
    pub async fn blocking<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
        self.crypto.run(f).await
    }

    /// Runs an argon2id hash or verify on the argon2id threads, at the lowest CPU priority.
    pub async fn argon2<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
        self.argon2.run(f).await
    }

    // The token API's writes on every passcode request. On a SQLite file they run on the
    // verification engine's thread, inside its batches (`Engine::write`), so that RADIUS
    // never waits for them; on PostgreSQL through the pool. Only the PIN attempt (in one
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

    /// Records a passcode request's nonce and, if it was not seen before, takes a PIN
    /// attempt before the PIN is checked (`Store::reserve_pin_attempt`). On SQLite both are
    /// one synced write of the engine's: one trip to its thread instead of two.
    pub async fn admit_pin_check(&self, nonce: Nonce, device_id: i64, limit: i64) -> anyhow::Result<Admission> {
        let Some(engine) = &self.engine else {
            if !self.store.record_nonce(&nonce.device_key_id, &nonce.nonce, nonce.expires_at).await? {
                return Ok(Admission::Replay);
            }
            return Ok(Admission::from(self.store.reserve_pin_attempt(device_id, limit).await?));
        };
        Ok(engine
            .write(true, move |conn| {
                if !nonces::record_nonce_in(conn, &nonce.device_key_id, &nonce.nonce, nonce.expires_at)? {
                    return Ok(Admission::Replay);
                }
                Ok(Admission::from(devices::reserve_pin_attempt_in(conn, device_id, limit)?))
            })
            .await?)
    }

    /// Stores an issued passcode with its audit entry (`Store::insert_passcode`).
    pub async fn insert_passcode(&self, p: NewPasscode<'_>, audit: Entry<'_>) -> anyhow::Result<()> {
        let Some(engine) = &self.engine else {
            return Ok(self.store.insert_passcode(p, audit).await?);
        };
        let (user_id, device_id, hash, expires_at, now) =
            (p.user_id, p.device_id, p.hash.to_vec(), p.expires_at, p.now);
        let audit = verify::audit_values(&audit, crate::now());
        Ok(engine
            .write(false, move |conn| {
                let p = NewPasscode { user_id, device_id, hash: &hash, expires_at, now };
                passcodes::insert_passcode_in(conn, &p, &audit)
            })
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy, thread_schedule_policy};

    #[tokio::test]
    async fn crypto_work_runs_under_sched_idle_and_the_runtime_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        let state = AppState::new(store).await.unwrap();
        let policy = || thread_schedule_policy().unwrap();
        let before = policy();
        assert_ne!(before, ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle));
        // Every job of both pools, whichever of their threads runs it.
        for _ in 0..4 {
            assert_eq!(
                state.blocking(policy).await.unwrap(),
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
            );
            assert_eq!(
                state.argon2(policy).await.unwrap(),
                ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle)
            );
        }
        assert_eq!(policy(), before, "the runtime's own thread keeps its policy");
    }
}
