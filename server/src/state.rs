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
                // A Reject is answered as soon as it is decided, before its batch commits (db::engine).
                let early = |d: &Decision| matches!(d, Decision::Reject(_));
                Some(Engine::start(path, decide, early)?)
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

    /// Runs CPU-heavy crypto on the blocking pool, bounded by `crypto_permits`, at the
    /// lowest CPU priority (`SCHED_IDLE`, see [`lower_priority`]).
    pub async fn blocking<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
        run_lowered(&self.crypto_permits, f).await
    }

    /// Runs an argon2id hash or verify on the blocking pool, bounded by `argon2_permits`, at
    /// the lowest CPU priority.
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

/// The nice value of threads doing argon2 and RSA work where `SCHED_IDLE` is refused.
const CRYPTO_NICE: i32 = 10;

/// Puts the calling thread under Linux's `SCHED_IDLE` policy, or at nice [`CRYPTO_NICE`] if
/// that is refused. Issuance saturates every core with argon2id (tens of milliseconds each);
/// a RADIUS thread that wakes must get a core at once. At nice 10 it often did not: this
/// kernel's scheduler (EEVDF) lets a running task finish its slice, and RADIUS threads
/// waited up to 4 ms behind argon2 (`perf sched`; RADIUS p99 at 16 in flight 2.2-7.1 ms
/// beside a nice-10 argon2 process against 1.1-1.4 ms beside a `SCHED_IDLE` one,
/// BENCHMARKS.md). A `SCHED_IDLE` thread is preempted by any other thread that wakes, and
/// still has every cycle the rest leave idle. Linux keeps the policy per thread, and a
/// thread may always lower its own; it is set once and kept on a reused blocking thread.
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id, thread_schedule_policy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if thread_schedule_policy().is_ok_and(|p| p == idle) {
        return;
    }
    // The crate also sets the nice value to 0 for this policy, where nice has no effect;
    // that part may be refused (a server started under `nice`): only the policy counts.
    let _ = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle);
    if thread_schedule_policy().is_ok_and(|p| p == idle) {
        return;
    }
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
    use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy, thread_schedule_policy};

    #[tokio::test]
    async fn crypto_work_runs_under_sched_idle_and_the_runtime_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        let state = AppState::new(store).await.unwrap();
        let policy = || thread_schedule_policy().unwrap();
        let before = policy();
        assert_ne!(before, ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle));
        // Kept: a reused blocking thread stays where the first job put it.
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
