//! Long-lived threads for CPU-heavy crypto (argon2id, HPKE, RSA) at a low CPU priority.
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
//!
//! Two priorities, chosen per job by how busy the RADIUS path is ([`RadiusLoad`]): while it
//! is busy, jobs run under `SCHED_IDLE`, so a RADIUS thread that wakes always gets a core
//! first; while it is quiet, at nice [`CRYPTO_NICE`]. `SCHED_IDLE` alone starved issuance
//! whenever other processes kept the cores busy: its weight is 3 against a normal thread's
//! 1,024, and a passcode took 4.6-11 s instead of 0.07 s beside two or three busy loops on
//! 2 cores (a token gives up after 15 s). A thread cannot move between the two without
//! privilege (leaving `SCHED_IDLE` needs `CAP_SYS_NICE` or an `RLIMIT_NICE` that allows
//! it), so each priority has its own threads and its own queue; the nice-10 threads hand
//! their backlog to the `SCHED_IDLE` ones when the RADIUS path turns busy. The cost,
//! measured with about 200 Access-Requests a second (quiet) during full issuance, 4
//! alternated pairs: RADIUS p99 3.0-3.6 ms against 1.2-3.1 ms, issuance 95-105 against
//! 82-99 passcodes/s.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads running queued jobs in order. Dropping the pool lets the threads
/// finish the queued jobs and exit.
pub struct CryptoPool {
    /// Threads under `SCHED_IDLE`: every job while the RADIUS path is busy, or always for a
    /// pool that follows no load.
    idle: Arc<Queue>,
    /// Threads at nice [`CRYPTO_NICE`] for the jobs queued while the RADIUS path is quiet.
    quiet: Option<(Arc<Queue>, Arc<RadiusLoad>)>,
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

    /// Moves `job` and every job still queued here to the front of `to`, in their order
    /// (they were queued before `to`'s), for `to`'s threads to run: the nice-10 threads'
    /// backlog when the RADIUS path turns busy goes to the `SCHED_IDLE` threads. Returns
    /// `job` back when `to` is closed (its threads may be gone) for the caller to run.
    fn hand_over(&self, job: Job, to: &Queue) -> Option<Job> {
        let mut target = to.lock();
        if target.closed {
            return Some(job);
        }
        let mut jobs = std::mem::take(&mut self.lock().jobs);
        jobs.push_front(job);
        while let Some(job) = jobs.pop_back() {
            target.jobs.push_front(job);
        }
        drop(target);
        to.ready.notify_all();
        None
    }

    /// The next job, or `None` once the pool is closed and drained. With `give_way_to`, no
    /// job while the RADIUS path is busy.
    fn next(&self, give_way_to: Option<&RadiusLoad>) -> Option<Job> {
        let mut state = self.lock();
        loop {
            if !state.closed && give_way_to.is_some_and(RadiusLoad::busy) {
                // A job's notification may have woken this thread: pass it on to one that
                // takes jobs, then look again a little later.
                if !state.jobs.is_empty() {
                    self.ready.notify_one();
                }
                state = self.ready.wait_timeout(state, GIVE_WAY_POLL).unwrap_or_else(|p| p.into_inner()).0;
                continue;
            }
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
    /// Starts `threads` threads named `name`, each under `SCHED_IDLE` ([`Priority::Idle`]),
    /// whatever the RADIUS path does: the pool's mechanics alone, for its tests (the server
    /// starts its pools with [`start_beside`](Self::start_beside)).
    #[cfg(test)]
    pub fn start(name: &str, threads: usize) -> std::io::Result<Self> {
        let idle = Arc::new(Queue::default());
        spawn_threads(name, &idle, threads.max(1), Priority::Idle, None, None)?;
        Ok(Self { idle, quiet: None })
    }

    /// Starts `threads` threads named `name` for each priority: a job queued while `load`
    /// is busy runs under `SCHED_IDLE`, one queued while it is quiet at nice
    /// [`CRYPTO_NICE`], or under `SCHED_IDLE` if `load` turns busy before it starts. With
    /// `give_way` (and several threads), one of the `SCHED_IDLE` threads takes no job while
    /// the RADIUS path is busy, leaving it a core.
    pub fn start_beside(name: &str, threads: usize, load: Arc<RadiusLoad>, give_way: GiveWay) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let (idle, quiet) = (Arc::new(Queue::default()), Arc::new(Queue::default()));
        let gives_way = (give_way == GiveWay::OneThread && threads > 1).then(|| load.clone());
        spawn_threads(name, &idle, threads, Priority::Idle, gives_way, None)?;
        spawn_threads(name, &quiet, threads, Priority::Low, None, Some((idle.clone(), load.clone())))?;
        Ok(Self { idle, quiet: Some((quiet, load)) })
    }

    /// Runs `f` on one of the pool's threads once the jobs queued before it have started.
    /// A job whose caller has gone away (a dropped request) is skipped.
    pub async fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.spawn(move || {
            if !tx.is_closed() {
                let _ = tx.send(f());
            }
        });
        rx.await.map_err(|_| anyhow::anyhow!("a crypto job panicked"))
    }

    /// Queues `job` to run on one of the pool's threads once the jobs queued before it have
    /// started. Nothing waits for it: the job hands its result on itself.
    pub fn spawn(&self, job: impl FnOnce() + Send + 'static) {
        let queue = match &self.quiet {
            Some((quiet, load)) if !load.busy() => quiet,
            _ => &self.idle,
        };
        queue.lock().jobs.push_back(Box::new(job));
        queue.ready.notify_one();
    }
}

/// Whether one of a pool's `SCHED_IDLE` threads leaves the busy RADIUS path a core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveWay {
    OneThread,
    No,
}

/// Starts `threads` threads named `name` taking the jobs of `queue` at `priority`; with
/// `gives_way`, the last of them takes none while that load is busy; with `hand_over`,
/// each hands the jobs still queued to that queue's threads once that load is busy.
fn spawn_threads(
    name: &str,
    queue: &Arc<Queue>,
    threads: usize,
    priority: Priority,
    gives_way: Option<Arc<RadiusLoad>>,
    hand_over: Option<(Arc<Queue>, Arc<RadiusLoad>)>,
) -> std::io::Result<()> {
    for i in 0..threads {
        let queue = queue.clone();
        let gives_way = gives_way.clone().filter(|_| i == threads - 1);
        let hand_over = hand_over.clone();
        std::thread::Builder::new().name(name.into()).spawn(move || {
            priority.apply();
            while let Some(job) = queue.next(gives_way.as_deref()) {
                let job = match &hand_over {
                    Some((to, load)) if load.busy() => match queue.hand_over(job, to) {
                        Some(job) => job,
                        None => continue,
                    },
                    _ => job,
                };
                // A panicking job loses its own answer (its caller gets an error), not the thread.
                let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
            }
        })?;
    }
    Ok(())
}

impl Drop for CryptoPool {
    fn drop(&mut self) {
        for queue in std::iter::once(&self.idle).chain(self.quiet.as_ref().map(|(q, _)| q)) {
            queue.lock().closed = true;
            queue.ready.notify_all();
        }
    }
}

/// How often a thread that gives way looks again whether the RADIUS path is still busy.
const GIVE_WAY_POLL: Duration = Duration::from_millis(5);
/// The RADIUS path is busy from this many requests in one window (1,000 a second)...
const BUSY_REQUESTS: u32 = 100;
const WINDOW_MS: u64 = 100;
/// ...until this long after the last such window.
const BUSY_HOLD_MS: u64 = 1000;

/// How busy the RADIUS path is, so that the crypto threads leave it the CPU and a core.
///
/// While it is busy, argon2id runs under `SCHED_IDLE`, so RADIUS always gets the CPU
/// first, yet on 2 cores RADIUS p99 at 16 in flight still doubled while argon2id ran on
/// both: each verify streams
/// through 19 MiB and takes the caches with it, and a core must be taken back from it each
/// time a RADIUS thread wakes. With one argon2id thread giving way while RADIUS is busy, the
/// p99 under full issuance rose 1.34-1.87x instead of 2.05-2.97x (4 alternated pairs,
/// BENCHMARKS.md), at the cost of issuance while RADIUS is busy (48-59 instead of 55-71
/// passcodes a second in those runs). With RADIUS quiet, issuance has every core.
#[derive(Debug)]
pub struct RadiusLoad {
    base: Instant,
    window_start_ms: AtomicU64,
    in_window: AtomicU32,
    busy_until_ms: AtomicU64,
}

impl Default for RadiusLoad {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            window_start_ms: AtomicU64::new(0),
            in_window: AtomicU32::new(0),
            busy_until_ms: AtomicU64::new(0),
        }
    }
}

impl RadiusLoad {
    /// Counts one Access-Request handed to verification.
    pub fn request(&self) {
        self.request_at(self.now_ms());
    }

    /// Whether [`BUSY_REQUESTS`] came within one window in the last [`BUSY_HOLD_MS`].
    pub fn busy(&self) -> bool {
        self.busy_at(self.now_ms())
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn request_at(&self, now: u64) {
        // One RADIUS thread counts; should two ever race here, a window is miscounted by one.
        if now >= self.window_start_ms.load(Ordering::Relaxed) + WINDOW_MS {
            self.window_start_ms.store(now, Ordering::Relaxed);
            self.in_window.store(1, Ordering::Relaxed);
        } else if self.in_window.fetch_add(1, Ordering::Relaxed) + 1 == BUSY_REQUESTS {
            self.busy_until_ms.store(now + BUSY_HOLD_MS, Ordering::Relaxed);
        }
    }

    fn busy_at(&self, now: u64) -> bool {
        now < self.busy_until_ms.load(Ordering::Relaxed)
    }

    /// Busy from now on, for tests whose jobs may wait longer than [`BUSY_HOLD_MS`].
    #[cfg(test)]
    pub(crate) fn hold_busy(&self) {
        self.busy_until_ms.store(u64::MAX, Ordering::Relaxed);
    }
}

/// The nice value of crypto threads while the RADIUS path is quiet, and where `SCHED_IDLE`
/// is refused.
pub const CRYPTO_NICE: i32 = 10;

/// A crypto thread's CPU priority, set once when it starts.
#[derive(Clone, Copy, Debug)]
enum Priority {
    /// Linux's `SCHED_IDLE` policy, or nice [`CRYPTO_NICE`] if that is refused. Issuance
    /// saturates every core with argon2id (tens of milliseconds each); a RADIUS thread that
    /// wakes must get a core at once. At nice 10 it often did not: this kernel's scheduler
    /// (EEVDF) lets a running task finish its slice, and RADIUS threads waited up to 4 ms
    /// behind argon2 (`perf sched`; RADIUS p99 at 16 in flight 2.2-7.1 ms beside a nice-10
    /// argon2 process against 1.1-1.4 ms beside a `SCHED_IDLE` one, BENCHMARKS.md). A
    /// `SCHED_IDLE` thread is preempted by any other thread that wakes, and still has every
    /// cycle the rest leave idle, but next to nothing of a core other processes keep busy.
    Idle,
    /// Nice [`CRYPTO_NICE`]: below the server's other threads and other processes, with a
    /// share of a busy core (110 against a normal thread's 1,024).
    Low,
}

impl Priority {
    /// Sets the calling thread's priority; a refusal leaves it where it was, with a debug log.
    fn apply(self) {
        if let Priority::Idle = self {
            use thread_priority::{
                NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy, set_thread_priority_and_policy,
                thread_native_id, thread_schedule_policy,
            };
            let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
            // The crate also sets the nice value to 0 for this policy, where nice has no
            // effect; that part may be refused (a server started under `nice`): only the
            // policy counts.
            let _ = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle);
            if thread_schedule_policy().is_ok_and(|p| p == idle) {
                return;
            }
        }
        // On Linux a nice value belongs to the thread; raising one's own needs no privilege.
        use rustix::process::{getpriority_process, setpriority_process};
        let result = getpriority_process(None)
            .and_then(|now| if now < CRYPTO_NICE { setpriority_process(None, CRYPTO_NICE) } else { Ok(()) });
        if let Err(e) = result {
            tracing::debug!(error = %e, "cannot lower the priority of a crypto thread");
        }
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

    /// The policy and nice value of the thread that runs it.
    fn priority() -> (ThreadSchedulePolicy, i32) {
        (thread_schedule_policy().unwrap(), rustix::process::getpriority_process(None).unwrap())
    }

    #[tokio::test]
    async fn jobs_run_under_sched_idle_while_radius_is_busy_and_at_nice_10_while_it_is_quiet() {
        let load = Arc::new(RadiusLoad::default());
        let pool = CryptoPool::start_beside("test-beside", 2, load.clone(), GiveWay::No).unwrap();
        let (idle, normal) = (
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
        );
        let runtime_nice = rustix::process::getpriority_process(None).unwrap();
        for _ in 0..4 {
            assert_eq!(pool.run(priority).await.unwrap(), (normal, CRYPTO_NICE.max(runtime_nice)), "quiet");
        }
        // 100 Access-Requests within 100 ms, as the RADIUS listener counts them (more if a
        // window closed on the way), and busy for good: under SCHED_IDLE a job may wait
        // longer than the second the RADIUS path stays busy.
        let mut requests = 0;
        while !load.busy() && requests < 10 * BUSY_REQUESTS {
            load.request();
            requests += 1;
        }
        assert!(load.busy(), "busy after {requests} requests");
        load.hold_busy();
        for _ in 0..4 {
            assert_eq!(pool.run(priority).await.unwrap().0, idle, "busy");
        }
        load.busy_until_ms.store(0, Ordering::Relaxed);
        assert_eq!(pool.run(priority).await.unwrap().0, normal, "quiet again");
        assert_eq!(
            rustix::process::getpriority_process(None).unwrap(),
            runtime_nice,
            "the runtime keeps its nice value"
        );
    }

    #[test]
    fn jobs_queued_while_quiet_move_to_sched_idle_when_radius_turns_busy() {
        let load = Arc::new(RadiusLoad::default());
        let pool = CryptoPool::start_beside("test-hand-over", 1, load.clone(), GiveWay::No).unwrap();
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        pool.spawn(move || {
            started_tx.send(()).unwrap();
            release_rx.recv().unwrap();
        });
        started_rx.recv_timeout(Duration::from_secs(5)).expect("the quiet thread took the first job");
        // Two more queue up behind it for the (one) quiet thread...
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..2 {
            let tx = tx.clone();
            pool.spawn(move || tx.send((i, priority().0)).unwrap());
        }
        // ...and the RADIUS path turns busy before it is free again.
        load.hold_busy();
        release_tx.send(()).unwrap();
        let ran: Vec<_> = (0..2).map(|_| rx.recv_timeout(Duration::from_secs(5)).expect("a queued job ran")).collect();
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        assert_eq!(ran, [(0, idle), (1, idle)], "both under SCHED_IDLE, in the order they were queued");
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
        let pool = CryptoPool::start_beside("test-crypto-end", 3, Arc::default(), GiveWay::No).unwrap();
        assert_eq!(pool.run(|| 1).await.unwrap(), 1);
        // A new thread takes its name once it runs, which on a busy machine can be after the
        // job above has already run on another one. Three threads for each priority.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while threads_named("test-crypto-end") < 6 {
            assert!(std::time::Instant::now() < deadline, "the pool's six threads did not start");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(threads_named("test-crypto-end"), 6);
        let (tx, rx) = std::sync::mpsc::channel();
        let queues = [&pool.idle, &pool.quiet.as_ref().unwrap().0];
        for (queue, name) in queues.into_iter().zip(["idle", "quiet"]) {
            let tx = tx.clone();
            queue.lock().jobs.push_back(Box::new(move || tx.send(name).unwrap()));
        }
        drop(pool);
        let mut ran: Vec<_> =
            (0..2).map(|_| rx.recv_timeout(Duration::from_secs(5)).expect("a queued job ran")).collect();
        ran.sort();
        assert_eq!(ran, ["idle", "quiet"], "each queue's last job ran");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while threads_named("test-crypto-end") > 0 {
            assert!(std::time::Instant::now() < deadline, "the pool's threads did not end");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn the_radius_path_is_busy_from_a_thousand_requests_a_second_until_a_second_after() {
        let load = RadiusLoad::default();
        // 99 in one window: not busy.
        for t in 0..99 {
            load.request_at(t);
        }
        assert!(!load.busy_at(99));
        // A new window: 100 within 100 ms make it busy, for a second after the 100th.
        for t in 0..100 {
            load.request_at(200 + t / 2);
        }
        assert!(load.busy_at(250));
        assert!(load.busy_at(1248));
        assert!(!load.busy_at(1250));
    }

    /// Most jobs of `pool` seen running at once, of `jobs` jobs of 50 ms each.
    async fn most_at_once(pool: &Arc<CryptoPool>, jobs: usize) -> usize {
        use std::sync::atomic::AtomicUsize;
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..jobs {
            let (pool, now, most) = (pool.clone(), now.clone(), most.clone());
            set.spawn(async move {
                pool.run(move || {
                    most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(50));
                    now.fetch_sub(1, Ordering::SeqCst);
                })
                .await
                .unwrap()
            });
        }
        set.join_all().await;
        most.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn one_thread_gives_way_while_the_radius_path_is_busy() {
        let load = Arc::new(RadiusLoad::default());
        let pool = Arc::new(CryptoPool::start_beside("test-give-way", 2, load.clone(), GiveWay::OneThread).unwrap());
        assert_eq!(most_at_once(&pool, 6).await, 2, "both threads while RADIUS is quiet");
        load.hold_busy();
        assert_eq!(most_at_once(&pool, 6).await, 1, "one thread while it is busy");
        load.busy_until_ms.store(0, Ordering::Relaxed);
        assert_eq!(most_at_once(&pool, 6).await, 2, "both again after");
        // A pool of one thread never gives way.
        let single = Arc::new(CryptoPool::start_beside("test-give-way", 1, load.clone(), GiveWay::OneThread).unwrap());
        load.hold_busy();
        let done = tokio::time::timeout(Duration::from_secs(5), most_at_once(&single, 2));
        assert_eq!(done.await.expect("a lone thread must keep taking jobs"), 1);
    }
}
