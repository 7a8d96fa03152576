//! The state every listener shares.

use std::sync::Arc;

use tokio::sync::Semaphore;

use crate::db::Store;
use crate::db::engine::{Engine, TxLedger};
use crate::domain::passcode::PasscodeKey;
use crate::service::limiter::RateLimiter;
use crate::service::verify::{Decision, Request, decide_in_transaction};

/// Name of the server secret that keys passcode hashes.
pub const PASSCODE_SECRET: &str = "passcode-hmac-v1";

/// Shared, cheaply cloned state.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub passcode_key: PasscodeKey,
    /// Bounds concurrent HPKE and RSA work (a fraction of a millisecond each) so it cannot
    /// starve the runtime.
    pub crypto_permits: Arc<Semaphore>,
    /// Bounds concurrent argon2id hashes and verifies (19 MiB and ~15 ms of one core each) to
    /// one per core: more only time-slice the same cores and evict each other's memory from
    /// the cache (4 threads on 2 cores verify 7–10 % fewer PINs a second than 2, BENCHMARKS.md).
    pub argon2_permits: Arc<Semaphore>,
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
        let engine = match store.sqlite_file() {
            Some(path) => {
                let key = passcode_key.clone();
                let decide = move |ledger: &mut TxLedger<'_, '_>, request: &Request| {
                    decide_in_transaction(ledger, &key, request)
                };
                Some(Engine::start(path, decide)?)
            }
            None => None,
        };
        Ok(Self {
            store,
            engine,
            passcode_key,
            crypto_permits: Arc::new(Semaphore::new(workers * 2)),
            argon2_permits: Arc::new(Semaphore::new(workers)),
            registration_limiter: Arc::new(RateLimiter::new(20, std::time::Duration::from_secs(3))),
        })
    }

    /// Runs CPU-heavy crypto on the blocking pool, bounded by `crypto_permits`, at a lower
    /// CPU priority ([`CRYPTO_NICE`]).
    pub async fn blocking<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
        run_lowered(&self.crypto_permits, f).await
    }

    /// Runs an argon2id hash or verify on the blocking pool, bounded by `argon2_permits`, at
    /// [`CRYPTO_NICE`].
    pub async fn argon2<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
        run_lowered(&self.argon2_permits, f).await
    }
}

async fn run_lowered<T: Send + 'static>(
    permits: &Semaphore,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let _permit = permits.acquire().await?;
    Ok(tokio::task::spawn_blocking(move || {
        lower_priority();
        f()
    })
    .await?)
}

/// The nice value of threads doing argon2 and RSA work. Issuance saturates every core with
/// argon2id (tens of milliseconds each); at the same priority the RADIUS path waited its turn
/// behind it (RADIUS p99 at 16 in flight rose 3× under full issuance load, BENCHMARKS.md). At
/// nice 10 the scheduler gives a runnable RADIUS thread about 9 parts in 10 of a contended
/// core, while argon2 still has all of any core RADIUS leaves idle.
pub const CRYPTO_NICE: i32 = 10;

/// Raises the calling thread's nice value to [`CRYPTO_NICE`] unless it is already at least
/// that (a server started under `nice 19` stays there). Linux keeps a nice value per thread,
/// and an unprivileged thread may always lower its own priority. Cheap (two syscalls), so it
/// is simply repeated for every job on a reused blocking thread.
fn lower_priority() {
    use rustix::process::{getpriority_process, setpriority_process};
    let result = getpriority_process(None)
        .and_then(|now| if now < CRYPTO_NICE { setpriority_process(None, CRYPTO_NICE) } else { Ok(()) });
    if let Err(e) = result {
        tracing::debug!(error = %e, "cannot lower the priority of a crypto thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn crypto_work_runs_at_the_lower_priority_and_the_runtime_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        let state = AppState::new(store).await.unwrap();
        let nice = || rustix::process::getpriority_process(None).unwrap();
        let before = nice();
        let expected = before.max(CRYPTO_NICE);
        // Set, not added: a reused blocking thread stays where the first job put it.
        for _ in 0..4 {
            assert_eq!(state.blocking(nice).await.unwrap(), expected);
            assert_eq!(state.argon2(nice).await.unwrap(), expected);
        }
        assert_eq!(nice(), before, "the runtime's own thread keeps its priority");
    }
}
