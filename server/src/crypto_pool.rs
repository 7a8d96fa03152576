//! Long-lived threads for CPU-heavy crypto (argon2id, HPKE, RSA) at the lowest CPU priority.
//!
//! Why not tokio's blocking pool behind a semaphore, as before: a blocking-pool thread parks
//! as soon as its job is done, and the next job (a request that was waiting for a permit)
//! wakes it again microseconds later. On this kernel's scheduler (EEVDF) a `SCHED_IDLE`
//! thread that waited behind the RADIUS threads during its last job wakes up with that
//! waiting still owed to it, and until it has run it off, the RADIUS threads on its core are
//! not eligible to run; nothing then preempts it before the next tick (4 ms here). Here a
//! thread takes the next queued job without sleeping, so under issuance load the argon2id
//! threads rarely wake. Measured (BENCHMARKS.md, Issuance): RADIUS p99 at 16 in flight under
//! full issuance 3.4 -> 2.9 ms (medians of 7 and 9 runs), issuance/argon2id 0.72-0.84 ->
//! 0.80-0.83 (4 alternated pairs). What remains of that p99 is the same kernel rule hit
//! another way: a RADIUS thread preempted by a waking thread while argon2id is queued on its
//! core can wait up to a tick.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads running queued jobs in order. Dropping the pool lets the threads
/// finish the queued jobs and exit.
pub struct CryptoPool {
    queue: Arc<Queue>,
}

#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    closed: bool,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A job never runs under this lock, so a poisoned lock still holds a consistent queue.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next job, or `None` once the pool is closed and drained.
    fn next(&self) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.closed {
                return None;
            }
            state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl CryptoPool {
    /// Starts `threads` threads named `name`, each under the lowest CPU priority
    /// ([`lower_priority`]).
    pub fn start(name: &str, threads: usize) -> std::io::Result<Self> {
        let queue = Arc::new(Queue::default());
        for _ in 0..threads.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new().name(name.into()).spawn(move || {
                lower_priority();
                while let Some(job) = queue.next() {
                    // A panicking job loses its own answer (its caller gets an error), not the thread.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                }
            })?;
        }
        Ok(Self { queue })
    }

    /// Runs `f` on one of the pool's threads once the jobs queued before it have started.
    /// A job whose caller has gone away (a dropped request) is skipped.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            if !tx.is_closed() {
                let _ = tx.send(f());
            }
        });
        self.queue.lock().jobs.push_back(job);
        self.queue.ready.notify_one();
        rx.await.map_err(|_| anyhow::anyhow!("a crypto job panicked"))
    }
}

impl Drop for CryptoPool {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.ready.notify_all();
    }
}

/// The nice value of crypto threads where `SCHED_IDLE` is refused.
const CRYPTO_NICE: i32 = 10;

/// Puts the calling thread under Linux's `SCHED_IDLE` policy, or at nice [`CRYPTO_NICE`] if
/// that is refused. Issuance saturates every core with argon2id (tens of milliseconds each);
/// a RADIUS thread that wakes must get a core at once. At nice 10 it often did not: this
/// kernel's scheduler (EEVDF) lets a running task finish its slice, and RADIUS threads
/// waited up to 4 ms behind argon2 (`perf sched`; RADIUS p99 at 16 in flight 2.2-7.1 ms
/// beside a nice-10 argon2 process against 1.1-1.4 ms beside a `SCHED_IDLE` one,
/// BENCHMARKS.md). A `SCHED_IDLE` thread is preempted by any other thread that wakes, and
/// still has every cycle the rest leave idle.
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id, thread_schedule_policy,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
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
    async fn jobs_run_under_sched_idle_off_the_runtime() {
        let pool = CryptoPool::start("test-crypto", 2).unwrap();
        let runtime_policy = thread_schedule_policy().unwrap();
        assert_ne!(runtime_policy, ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle));
        for _ in 0..4 {
            let (policy, name) = pool
                .run(|| (thread_schedule_policy().unwrap(), std::thread::current().name().map(str::to_owned)))
                .await
                .unwrap();
            assert_eq!(policy, ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle));
            assert_eq!(name.as_deref(), Some("test-crypto"));
        }
        assert_eq!(thread_schedule_policy().unwrap(), runtime_policy, "the runtime's own thread keeps its policy");
    }

    #[tokio::test]
    async fn many_jobs_all_answer_and_a_panic_costs_only_its_own_answer() {
        let pool = Arc::new(CryptoPool::start("test-crypto", 2).unwrap());
        let mut jobs = tokio::task::JoinSet::new();
        for i in 0..64u64 {
            let pool = pool.clone();
            jobs.spawn(async move { (i, pool.run(move || i * i).await.unwrap()) });
        }
        let mut answers = jobs.join_all().await;
        answers.sort();
        assert_eq!(answers, (0..64u64).map(|i| (i, i * i)).collect::<Vec<_>>());
        assert!(pool.run(|| panic!("job fails")).await.is_err());
        assert!(pool.run(|| panic!("job fails")).await.is_err());
        // Both threads survived their panics.
        let after = tokio::time::timeout(std::time::Duration::from_secs(5), pool.run(|| "still running"));
        assert_eq!(after.await.expect("no thread left to run jobs").unwrap(), "still running");
    }

    #[tokio::test]
    async fn a_job_whose_caller_went_away_is_skipped() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let pool = CryptoPool::start("test-crypto", 1).unwrap();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let blocker = pool.run(move || wait.recv().unwrap());
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let abandoned = pool.run(move || flag.store(true, Ordering::SeqCst));
        // Both are queued once polled; the second one's caller gives up while the first runs.
        let (blocked, gave_up) = tokio::join!(
            tokio::time::timeout(std::time::Duration::from_millis(200), blocker),
            tokio::time::timeout(std::time::Duration::from_millis(20), abandoned)
        );
        assert!(blocked.is_err() && gave_up.is_err());
        release.send(()).unwrap();
        assert_eq!(pool.run(|| "after").await.unwrap(), "after");
        assert!(!ran.load(Ordering::SeqCst), "the abandoned job ran");
    }

    /// Threads of this process whose name is `name`.
    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim_end() == name)
            .count()
    }

    #[tokio::test]
    async fn dropping_the_pool_ends_its_threads_after_the_queued_jobs() {
        let pool = CryptoPool::start("test-crypto-end", 3).unwrap();
        assert_eq!(pool.run(|| 1).await.unwrap(), 1);
        // A new thread takes its name once it runs, which on a busy machine can be after the
        // job above has already run on another one.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while threads_named("test-crypto-end") < 3 {
            assert!(std::time::Instant::now() < deadline, "the pool's three threads did not start");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(threads_named("test-crypto-end"), 3);
        let (tx, rx) = std::sync::mpsc::channel();
        pool.queue.lock().jobs.push_back(Box::new(move || tx.send("queued job ran").unwrap()));
        drop(pool);
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(5)), Ok("queued job ran"));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while threads_named("test-crypto-end") > 0 {
            assert!(std::time::Instant::now() < deadline, "the pool's threads did not end");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
