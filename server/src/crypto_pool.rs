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
//!
//! While the RADIUS path is busy the same starvation could still happen: a flood of
//! Access-Requests on a machine whose cores other processes keep busy left the `SCHED_IDLE`
//! threads no CPU at all, and a token asking for a passcode gave up after its 15 s (the
//! end-to-end flood test failed so in 1 run of 3 beside two busy loops; with the server on
//! one core beside two busy loops and a flood, in every run). Two things undo it. A `SCHED_IDLE` thread that waited [`STARVED_JOB`] for a core to take a job it was
//! woken for passes that job to the nice-10 threads, and one that waited as long, and
//! [`STARVED_RATIO`] times the job's CPU time, while running a job says so after it;
//! either marks the RADIUS load starved
//! ([`RadiusLoad::starve`]; both pools share it), and for [`STARVED_HOLD_MS`] jobs go to
//! the nice-10 threads as if RADIUS were quiet. And the nice-10
//! threads watch the `SCHED_IDLE` queue while it holds jobs: once its threads have started
//! none for [`STARVED`] (one of them may be stuck in a long job), they take its jobs, oldest
//! first. While the `SCHED_IDLE` threads keep up, nothing moves.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send>;

/// How long a pool's `SCHED_IDLE` threads may start no job while jobs wait for them before
/// the nice-10 threads take those jobs.
const STARVED: Duration = Duration::from_secs(1);
/// How often the nice-10 threads look at the `SCHED_IDLE` queue while it holds jobs.
const STARVED_POLL: Duration = Duration::from_millis(100);
/// A `SCHED_IDLE` thread that waited this long for a core, to take a job it was woken for
/// or while running one...
const STARVED_JOB: Duration = Duration::from_millis(100);
/// ...and, while running one, waited this many times its CPU time for a core. In the
/// benchmark (RADIUS at 16 in flight beside full issuance) a `SCHED_IDLE` thread woke for
/// a job within 10 ms and an argon2id job waited at most 17 times its CPU time (314 ms);
/// beside a RADIUS flood and two busy loops on the server's one core the wake-ups took
/// 123-776 ms and jobs of under a millisecond waited 176-1,172 ms.
const STARVED_RATIO: u32 = 50;
/// How long jobs then go to the nice-10 threads whatever the RADIUS path does.
const STARVED_HOLD_MS: u64 = 5000;

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
    /// Each job with the moment it was queued.
    jobs: VecDeque<(Instant, Job)>,
    closed: bool,
    /// When one of this queue's own threads last took a job.
    last_taken: Option<Instant>,
    /// (A nice-10 queue.) Jobs wait in the `SCHED_IDLE` queue beside it: its threads look
    /// there every [`STARVED_POLL`] instead of sleeping until a job of their own comes.
    watch: bool,
}

/// A job a nice-10 thread took: one of its own queue's, or one it took over from starved
/// threads.
enum Taken {
    Own(Job),
    Rescued(Job),
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
        jobs.push_front((Instant::now(), job));
        while let Some(job) = jobs.pop_back() {
            target.jobs.push_front(job);
        }
        drop(target);
        to.ready.notify_all();
        self.lock().watch = true;
        None
    }

    /// Queues `job` for this queue's threads.
    fn push(&self, job: Job) {
        self.lock().jobs.push_back((Instant::now(), job));
        self.ready.notify_one();
    }

    /// Queues `job` for this queue's threads, before the others; returns it back if the
    /// queue is closed (its threads may be gone).
    fn push_front(&self, job: Job) -> Option<Job> {
        let mut state = self.lock();
        if state.closed {
            return Some(job);
        }
        state.jobs.push_front((Instant::now(), job));
        drop(state);
        self.ready.notify_one();
        None
    }

    /// (A nice-10 queue.) Jobs were queued for the `SCHED_IDLE` threads beside it: its
    /// threads start looking there, if they were not already.
    fn watch(&self) {
        let mut state = self.lock();
        if !state.watch {
            state.watch = true;
            drop(state);
            self.ready.notify_one();
        }
    }

    /// (A `SCHED_IDLE` queue.) Its oldest job if its threads have started none for
    /// [`STARVED`] while it waited; and whether any job waits here still.
    fn take_starved(&self) -> (Option<Job>, bool) {
        let mut state = self.lock();
        if state.closed {
            return (None, false); // Its own threads finish what it holds.
        }
        let Some((queued, _)) = state.jobs.front() else { return (None, false) };
        let since = state.last_taken.map_or(*queued, |taken| taken.max(*queued));
        if since.elapsed() < STARVED {
            return (None, true);
        }
        let job = state.jobs.pop_front().map(|(_, job)| job);
        (job, !state.jobs.is_empty())
    }

    /// The next job, or `None` once the pool is closed and drained. With `give_way_to`, no
    /// job while the RADIUS path is busy.
    /// Also how long the thread waited for a core once the job was there to take (zero if
    /// it did not sleep for it).
    fn next(&self, give_way_to: Option<&RadiusLoad>) -> Option<(Duration, Job)> {
        let mut state = self.lock();
        let mut slept_since = None;
        loop {
            if !state.closed && give_way_to.is_some_and(RadiusLoad::busy) {
                // A job's notification may have woken this thread: pass it on to one that
                // takes jobs, then look again a little later.
                if !state.jobs.is_empty() {
                    self.ready.notify_one();
                }
                slept_since = Some(Instant::now());
                state = self.ready.wait_timeout(state, GIVE_WAY_POLL).unwrap_or_else(|p| p.into_inner()).0;
                continue;
            }
            if let Some((queued, job)) = state.jobs.pop_front() {
                let now = Instant::now();
                state.last_taken = Some(now);
                let late = slept_since.map_or(Duration::ZERO, |slept: Instant| now - slept.max(queued));
                return Some((late, job));
            }
            if state.closed {
                return None;
            }
            slept_since = Some(Instant::now());
            state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// (A nice-10 queue.) Its next job, or one taken over from `starved`'s threads
    /// ([`take_starved`](Self::take_starved)) while they start none; `None` once the pool is
    /// closed and drained.
    fn next_or_starved(&self, starved: &Queue) -> Option<Taken> {
        let mut state = self.lock();
        loop {
            if let Some((_, job)) = state.jobs.pop_front() {
                return Some(Taken::Own(job));
            }
            if state.closed {
                return None;
            }
            if !state.watch {
                state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Not holding this lock while taking the other: `hand_over` takes them the
            // other way round. A job queued there meanwhile sets `watch` again.
            state.watch = false;
            drop(state);
            let (taken, waiting) = starved.take_starved();
            if let Some(job) = taken {
                if waiting {
                    self.lock().watch = true;
                }
                return Some(Taken::Rescued(job));
            }
            state = self.lock();
            state.watch |= waiting;
            if state.watch && state.jobs.is_empty() && !state.closed {
                state = self.ready.wait_timeout(state, STARVED_POLL).unwrap_or_else(|p| p.into_inner()).0;
            }
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
        spawn_threads(name, &idle, threads.max(1), Priority::Idle, Role::Alone)?;
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
        let last_gives_way = give_way == GiveWay::OneThread && threads > 1;
        let idle_role = Role::Idle { quiet: quiet.clone(), load: load.clone(), last_gives_way };
        spawn_threads(name, &idle, threads, Priority::Idle, idle_role)?;
        spawn_threads(name, &quiet, threads, Priority::Low, Role::Quiet { idle: idle.clone(), load: load.clone() })?;
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
        match &self.quiet {
            Some((quiet, load)) if !load.sched_idle_now() => quiet.push(Box::new(job)),
            Some((quiet, _)) => {
                self.idle.push(Box::new(job));
                quiet.watch();
            }
            None => self.idle.push(Box::new(job)),
        }
    }
}

/// Whether one of a pool's `SCHED_IDLE` threads leaves the busy RADIUS path a core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GiveWay {
    OneThread,
    No,
}

/// What a pool's thread does beside taking its own queue's jobs.
#[derive(Clone)]
enum Role {
    /// Nothing: a pool that follows no load (its tests).
    #[cfg(test)]
    Alone,
    /// A `SCHED_IDLE` thread beside nice-10 threads: it passes on a job it got no core for
    /// (and says when it was starved), and, with `last_gives_way`, the pool's last such
    /// thread takes no job while the RADIUS path is busy.
    Idle { quiet: Arc<Queue>, load: Arc<RadiusLoad>, last_gives_way: bool },
    /// A nice-10 thread: it hands its backlog to the `SCHED_IDLE` threads when the RADIUS
    /// path turns busy, and takes their jobs while they start none
    /// ([`Queue::next_or_starved`]).
    Quiet { idle: Arc<Queue>, load: Arc<RadiusLoad> },
}

/// Starts `threads` threads named `name` taking the jobs of `queue` at `priority`, each in
/// `role`.
fn spawn_threads(
    name: &str,
    queue: &Arc<Queue>,
    threads: usize,
    priority: Priority,
    role: Role,
) -> std::io::Result<()> {
    for i in 0..threads {
        let (queue, role) = (queue.clone(), role.clone());
        std::thread::Builder::new().name(name.into()).spawn(move || {
            priority.apply();
            match role {
                #[cfg(test)]
                Role::Alone => run_idle(&queue, None, None),
                Role::Idle { quiet, load, last_gives_way } => {
                    let gives_way = (last_gives_way && i == threads - 1).then_some(&*load);
                    run_idle(&queue, Some((&quiet, &load)), gives_way);
                }
                Role::Quiet { idle, load } => run_quiet(&queue, &idle, &load),
            }
        })?;
    }
    Ok(())
}

/// A `SCHED_IDLE` thread's loop; `beside`, the nice-10 threads' queue and the load they
/// share.
fn run_idle(queue: &Queue, beside: Option<(&Queue, &RadiusLoad)>, gives_way: Option<&RadiusLoad>) {
    while let Some((late, job)) = queue.next(gives_way) {
        let Some((quiet, load)) = beside else {
            run(job);
            continue;
        };
        if late >= STARVED_JOB {
            // This thread waited that long for a core once woken for the job: the job goes
            // to the nice-10 threads, and so do the next ones for a while (unless the pool
            // is closing: then it runs here).
            load.starve();
            if let Some(job) = quiet.push_front(job) {
                run(job);
            }
            continue;
        }
        let (at, cpu) = (Instant::now(), thread_cpu());
        run(job);
        // Waiting for a core while it ran.
        let (wall, cpu) = (at.elapsed(), thread_cpu().saturating_sub(cpu));
        let stalled = wall.saturating_sub(cpu);
        if stalled >= STARVED_JOB && stalled >= cpu * STARVED_RATIO {
            load.starve();
        }
    }
}

/// A nice-10 thread's loop; `idle`, the `SCHED_IDLE` threads' queue.
fn run_quiet(queue: &Queue, idle: &Queue, load: &RadiusLoad) {
    while let Some(taken) = queue.next_or_starved(idle) {
        let job = match taken {
            Taken::Rescued(job) => job,
            Taken::Own(job) if load.sched_idle_now() => match queue.hand_over(job, idle) {
                Some(job) => job,
                None => continue,
            },
            Taken::Own(job) => job,
        };
        run(job);
    }
}

/// Runs a job; a panicking job loses its own answer (its caller gets an error), not the
/// thread.
fn run(job: Job) {
    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
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
    /// Until when `SCHED_IDLE` threads are known to be starved (see the module's notes).
    starved_until_ms: AtomicU64,
}

impl Default for RadiusLoad {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            window_start_ms: AtomicU64::new(0),
            in_window: AtomicU32::new(0),
            busy_until_ms: AtomicU64::new(0),
            starved_until_ms: AtomicU64::new(0),
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

    /// Whether jobs queued now go to the `SCHED_IDLE` threads: while the RADIUS path is
    /// busy, unless those threads were starved in the last [`STARVED_HOLD_MS`].
    fn sched_idle_now(&self) -> bool {
        let now = self.now_ms();
        self.busy_at(now) && now >= self.starved_until_ms.load(Ordering::Relaxed)
    }

    /// A `SCHED_IDLE` thread was starved: jobs go to the nice-10 threads for a while.
    fn starve(&self) {
        let now = self.now_ms();
        if self.starved_until_ms.swap(now + STARVED_HOLD_MS, Ordering::Relaxed) < now {
            // An overloaded machine: the operator should know, once per spell.
            tracing::warn!(
                hold_ms = STARVED_HOLD_MS,
                "crypto threads got no CPU while RADIUS is busy (the machine is overloaded): \
                 token requests and PIN checks run at nice 10 for a while"
            );
        }
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

/// The calling thread's CPU time so far.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(u64::try_from(t.tv_sec).unwrap_or(0), u32::try_from(t.tv_nsec).unwrap_or(0))
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

    #[test]
    fn jobs_the_sched_idle_threads_cannot_start_run_at_nice_10_after_a_while() {
        let load = Arc::new(RadiusLoad::default());
        load.hold_busy();
        let pool = CryptoPool::start_beside("test-starved", 1, load, GiveWay::No).unwrap();
        // The one SCHED_IDLE thread is held, as other processes' load would hold it.
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        pool.spawn(move || {
            started_tx.send(priority().0).unwrap();
            release_rx.recv().unwrap();
        });
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        assert_eq!(started_rx.recv_timeout(Duration::from_secs(5)).unwrap(), idle);
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..2 {
            let (tx, queued) = (tx.clone(), Instant::now());
            pool.spawn(move || tx.send((i, priority(), queued.elapsed())).unwrap());
        }
        let ran: Vec<_> =
            (0..2).map(|_| rx.recv_timeout(Duration::from_secs(10)).expect("a starved job ran")).collect();
        let normal = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other);
        for (i, (policy, nice), waited) in &ran {
            assert_eq!((*policy, *nice >= CRYPTO_NICE), (normal, true), "job {i} ran at nice 10: {ran:?}");
            assert!(*waited >= STARVED, "job {i} was taken over after {waited:?}, before {STARVED:?}");
        }
        assert_eq!(ran.iter().map(|r| r.0).collect::<Vec<_>>(), [0, 1], "oldest first");
        release_tx.send(()).unwrap();
    }

    #[tokio::test]
    async fn jobs_run_at_nice_10_for_a_while_once_the_sched_idle_threads_were_starved() {
        let load = Arc::new(RadiusLoad::default());
        load.hold_busy();
        let pool = CryptoPool::start_beside("test-starve", 1, load.clone(), GiveWay::No).unwrap();
        let (idle, normal) = (
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
        );
        assert_eq!(pool.run(priority).await.unwrap().0, idle, "busy");
        load.starve();
        assert_eq!(pool.run(priority).await.unwrap().0, normal, "busy, but starved a moment ago");
        load.starved_until_ms.store(0, Ordering::Relaxed);
        assert_eq!(pool.run(priority).await.unwrap().0, idle, "busy, the spell over");
    }

    #[test]
    fn no_job_moves_while_the_sched_idle_threads_keep_starting_jobs() {
        let load = Arc::new(RadiusLoad::default());
        load.hold_busy();
        let pool = CryptoPool::start_beside("test-slow", 1, load, GiveWay::No).unwrap();
        // 1.5 s of jobs for one thread: each waits longer than STARVED to start, but its
        // thread starts one every 100 ms.
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..15 {
            let tx = tx.clone();
            pool.spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                tx.send((i, priority().0)).unwrap();
            });
        }
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        for expected in 0..15 {
            let (i, policy) = rx.recv_timeout(Duration::from_secs(10)).expect("every job ran");
            assert_eq!((i, policy), (expected, idle), "in order, under SCHED_IDLE");
        }
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
            queue.lock().jobs.push_back((Instant::now(), Box::new(move || tx.send(name).unwrap())));
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
