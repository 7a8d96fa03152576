//! The SQLite verification engine: one thread owns a SQLite connection (rusqlite, cached
//! prepared statements) and decides queued RADIUS requests in batches, each batch one
//! transaction and so one commit however many passcodes it consumes: group commit.
//!
//! Why a thread of its own: through sqlx every statement hopped between tokio and sqlx's
//! SQLite worker and every consumption, failure count and audit row was its own commit.
//! SQLite has one writer at a time anyway, so serialising the checks on one thread loses no
//! parallelism and lets a batch share one commit. An Accept is answered only after the batch
//! holding it has committed: a batch that rolls back cannot undo a consumption already
//! answered. A Reject (an outcome `early` accepts) is answered once its batch is decided,
//! before the commit: nothing it writes (a failure count, an audit row) makes a later answer
//! unsafe if lost, so it need not wait for the commit; a commit that fails after it loses
//! those rows. A batch
//! that fails is rolled back and its requests retried one by one, so one bad request cannot
//! fail its neighbours.
//!
//! Commits do not sync the write-ahead log (`synchronous = NORMAL`): a commit is in the
//! operating system's page cache when it returns, so a crash or `kill -9` of the server
//! loses nothing; the checkpoint thread syncs the log every 20 ms or so. What a power loss
//! could undo, the last moments of consumptions, [`runs`](super::runs) makes harmless: a
//! start after the machine went down under a running server voids every unused passcode.
//! Syncing the log for each batch holding an Accept halved Accepts at 16 in flight
//! (BENCHMARKS.md).
//!
//! The queue is bounded ([`QUEUE`]); each request carries a deadline, and one whose deadline
//! has passed is answered [`EngineError::Expired`] without being checked, so nothing is
//! consumed for a requester that has already been told Reject.
//!
//! The token API's writes of a passcode request (its nonce, the PIN attempt, the issued
//! passcode) are queued here too ([`Engine::write`]) and run inside the same batches: a
//! writer of its own held SQLite's lock across its trips through the runtime and sqlx's
//! worker, and the engine waited for it (BENCHMARKS.md, Issuance).

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rusqlite::{Connection, OptionalExtension as _, Statement, Transaction, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::WriteTurns;
use super::audit::Entry;
use super::checkpoint::{Link, LogRestarts, restart_here};
use super::failures::{self, Failures};
use super::live_passcodes::{self, LivePasscodes};
use super::log_sync::LogSync;
use super::passcodes::PasscodeRow;
use super::runs::{self, Run};
use super::user_index::{self, UserIndex};
use super::verify::{
    AUDIT_INSERT, CONSUME_PASSCODE, ENGINE_DEVICE_DISABLED, ENGINE_RECENT_PASSCODES, ENGINE_USER_BY_ID,
    ENGINE_USER_FACTS, UserFactsRow, audit_refs, user_facts,
};
use crate::service::verify::{Ledger, UserFacts};

/// Requests waiting for the engine; beyond this, new ones are refused at once.
pub const QUEUE: usize = 4096;
/// Most requests decided in one transaction.
pub const MAX_BATCH: usize = 512;
/// How much of the database file the engine maps: 2 GiB, the most SQLite maps unless built
/// with a larger `SQLITE_MAX_MMAP_SIZE`, so a database of a million users (about 500 MB)
/// is mapped whole. With 256 MiB, three quarters of a 2,000,000-user file were read through
/// `read()` into SQLite's small page cache, page by page, at random user lookups.
const MMAP_BYTES: i64 = 2 << 30;
/// How long the engine must have found work waiting after every batch before it lets this
/// process's waiting writers go first (db::WriteTurns). With pauses between batches, a
/// writer finds SQLite's lock free in one of them; waiting for a writer's turn, which it
/// holds across its trips through the async runtime and sqlx's worker thread, cost the
/// RADIUS p99 under full issuance load 2-3 times (BENCHMARKS.md).
const SATURATED_AFTER: Duration = Duration::from_millis(10);
/// How long a write queued with [`Engine::write`] may wait for its batch.
const WRITE_PATIENCE: Duration = Duration::from_secs(5);
/// Kept free before the earliest deadline of a batch when waiting for a lock held by
/// another process, so the answer still arrives in time.
const DEADLINE_MARGIN: Duration = Duration::from_millis(150);

/// How long a restart of the log between two batches waits for readers or a writer.
const RESTART_PATIENCE: Duration = Duration::from_millis(1);
/// How long the engine sleeps between tries for a write lock another connection holds.
const LOCK_POLL: Duration = Duration::from_micros(100);
/// How long preparing the statements may wait for a lock at startup (rusqlite's default
/// `busy_timeout`, which the engine's own handler replaces).
const STARTUP_PATIENCE: Duration = Duration::from_secs(5);

/// How a group of answers is sent: runs the closure, which answers each request of the group
/// (see [`Engine::start`]).
pub type Together = fn(&mut dyn FnMut());

thread_local! {
    /// Until when the batch being decided on this thread may wait for the write lock.
    static LOCK_DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// How this thread sends a group of answers; by default each as it comes.
    static TOGETHER: Cell<Together> = const { Cell::new(one_by_one) };
}

fn one_by_one(answer: &mut dyn FnMut()) {
    answer();
}

/// The engine connection's busy handler. SQLite's default (`busy_timeout`) sleeps 1, 2, 5,
/// 10, 15, 20, 25… ms between tries, so a batch that found the token API's connection
/// committing (one fsync, about a millisecond) waited several milliseconds more than the
/// lock was held: RADIUS p99 rose to 3.5× idle under full issuance load (BENCHMARKS.md).
/// This one tries again every [`LOCK_POLL`] until the batch's deadline, then gives up.
fn wait_for_lock(_tries: i32) -> bool {
    match LOCK_DEADLINE.get() {
        Some(deadline) if Instant::now() + LOCK_POLL < deadline => {
            std::thread::sleep(LOCK_POLL);
            true
        }
        _ => false,
    }
}

/// Why the engine gave no decision.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("database unavailable: locked by another writer until the request's deadline")]
    Busy,
    #[error("database unavailable: {QUEUE} requests already waiting")]
    Overloaded,
    #[error("database unavailable: the verification engine has stopped")]
    Stopped,
    #[error("database too slow: the request's deadline passed while it waited")]
    Expired,
    #[error("database error: {0}")]
    Failed(String),
}

/// Where a decision goes: called once with the job it decides, on the engine's thread (or
/// on the submitter's when the queue refuses the job). It must be quick: the batch's other
/// requests wait while it runs. The RADIUS listener encodes and sends its answer here, so
/// an answer leaves without waking another thread (BENCHMARKS.md).
pub type Reply<J, O> = Box<dyn FnOnce(&J, Result<O, EngineError>) + Send>;

/// A write queued with [`Engine::write`], run inside a batch's transaction; it may run
/// again if its batch rolls back.
type WriteFn = Box<dyn FnMut(&Connection) -> rusqlite::Result<()> + Send>;
/// Where a write's outcome goes: `Ok` once its batch has committed.
type WriteDone = Box<dyn FnOnce(Result<(), EngineError>) + Send>;

/// What a queued item asks of the engine; its answer is taken once sent.
enum Work<J, O> {
    /// A request for the handler to decide.
    Decide { job: J, reply: Option<Reply<J, O>> },
    /// A write of another part of the server (the token API's), run as it is.
    Write { run: WriteFn, done: Option<WriteDone> },
}

/// One queued item with its deadline. Dropped unanswered (the engine stopped), it answers
/// [`EngineError::Stopped`].
struct Pending<J, O> {
    work: Work<J, O>,
    deadline: Instant,
}

impl<J, O> Pending<J, O> {
    fn decide(job: J, deadline: Instant, reply: Reply<J, O>) -> Self {
        Self { work: Work::Decide { job, reply: Some(reply) }, deadline }
    }

    /// A write (see [`Engine::write`]) and `deliver`, called with its result; with `log`,
    /// only once the log has been synced after its batch committed.
    fn write<T: Send + 'static>(
        log: Option<&LogSync>,
        mut write: impl FnMut(&Connection) -> rusqlite::Result<T> + Send + 'static,
        deliver: impl FnOnce(Result<T, EngineError>) + Send + 'static,
    ) -> Self {
        // The value of the last run, handed over once its batch has committed.
        let slot = Arc::new(std::sync::Mutex::new(None));
        let kept = slot.clone();
        let run: WriteFn = Box::new(move |conn| {
            let value = write(conn)?;
            *kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(value);
            Ok(())
        });
        let finish = move |outcome: Result<(), EngineError>| {
            let value = outcome.and_then(|()| {
                let value = slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
                value.ok_or_else(|| EngineError::Failed("bug: a write committed without its result".into()))
            });
            deliver(value);
        };
        let done: WriteDone = match log.cloned() {
            None => Box::new(finish),
            // Committed: the answer waits for the log-sync thread, the engine does not.
            Some(log) => Box::new(move |outcome| match outcome {
                Ok(()) => log.after_sync(Box::new(move |synced| finish(synced.map_err(EngineError::Failed)))),
                Err(e) => finish(Err(e)),
            }),
        };
        let work = Work::Write { run, done: Some(done) };
        Self { work, deadline: Instant::now() + WRITE_PATIENCE }
    }

    fn answered(&self) -> bool {
        match &self.work {
            Work::Decide { reply, .. } => reply.is_none(),
            Work::Write { done, .. } => done.is_none(),
        }
    }

    /// Answers with `outcome` (`None` for a write: it is done).
    fn answer(&mut self, outcome: Result<Option<O>, EngineError>) {
        // A panicking reply loses its own answer only; the engine thread goes on.
        let panicked = match &mut self.work {
            Work::Decide { job, reply } => {
                let Some(reply) = reply.take() else { return };
                let answer = outcome.and_then(|o| o.ok_or_else(|| EngineError::Failed("bug: no decision".into())));
                std::panic::catch_unwind(AssertUnwindSafe(|| reply(job, answer))).is_err()
            }
            Work::Write { done, .. } => {
                let Some(done) = done.take() else { return };
                std::panic::catch_unwind(AssertUnwindSafe(|| done(outcome.map(|_| ())))).is_err()
            }
        };
        if panicked {
            tracing::error!("bug: answering a queued request panicked; that request goes unanswered");
        }
    }

    fn fail(&mut self, e: EngineError) {
        self.answer(Err(e));
    }
}

impl<J, O> Drop for Pending<J, O> {
    fn drop(&mut self) {
        self.fail(EngineError::Stopped);
    }
}

/// The handle requests are submitted through; cheap to clone.
pub struct Engine<J, O> {
    queue: mpsc::Sender<Pending<J, O>>,
    /// The database file and this server's run on it, removed at a clean stop.
    run: Arc<(Box<Path>, Run)>,
    /// Syncs the log for synced writes ([`Engine::write`]).
    log: LogSync,
    #[cfg(test)]
    log_restarts: Arc<LogRestarts>,
}

impl<J, O> Clone for Engine<J, O> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
            run: self.run.clone(),
            log: self.log.clone(),
            #[cfg(test)]
            log_restarts: self.log_restarts.clone(),
        }
    }
}

impl<J: Send + 'static, O: Send + 'static> Engine<J, O> {
    /// Opens the database file at `path`, records this server's run on it (voiding the unused
    /// passcodes if the machine went down under an earlier one, see [`runs`]) and starts the
    /// engine thread; `handler` decides one job inside the current batch's transaction. An
    /// outcome for which `early` is true is answered at once, before the batch commits; the
    /// others after the commit. Each group of answers (the early ones, those after the
    /// commit) is given to `together` to send, so that the RADIUS listener can send a
    /// client's answers in one go. The thread ends when every handle is gone.
    pub fn start<H>(
        path: &Path,
        turns: WriteTurns,
        handler: H,
        early: fn(&O) -> bool,
        together: Together,
    ) -> anyhow::Result<Self>
    where
        H: FnMut(&mut TxLedger<'_, '_>, &J) -> anyhow::Result<O> + Send + 'static,
    {
        let conn = open(path)?;
        // The log beside the file SQLite opened: it resolves symbolic links, and puts the
        // log next to the link's target.
        let log = LogSync::start(conn.path().map_or(path, Path::new))?;
        // Fail here, at startup, rather than on the engine's thread.
        LOCK_DEADLINE.set(Some(Instant::now() + STARTUP_PATIENCE));
        Prepared::new(&conn).context("cannot prepare the verification statements")?;
        let this_run = Run::this_process();
        let claimed = runs::claim(&conn, &this_run, runs::process_alive)
            .context("cannot record this server's run in the database (engine_runs)")?;
        report(&claimed);
        let memory = Memory::load(&conn)?;
        // The checkpoint thread ends with this one, when `checkpoints` is dropped; a message
        // on it wakes that thread from its sleep.
        let (checkpoints, stop) = std::sync::mpsc::channel::<()>();
        let log_restarts = Arc::new(LogRestarts::default());
        super::checkpoint::start(path, turns.clone(), log_restarts.clone(), stop)?;
        let (queue, rx) = mpsc::channel(QUEUE);
        let checkpoints = Link { restarts: log_restarts.clone(), wake: checkpoints };
        std::thread::Builder::new()
            .name("tessera-sqlite".into())
            .spawn(move || {
                TOGETHER.set(together);
                run(conn, &turns, &checkpoints, memory, rx, handler, early);
                drop(checkpoints);
            })
            .context("cannot start the SQLite verification thread")?;
        Ok(Self {
            queue,
            run: Arc::new((path.into(), this_run)),
            log,
            #[cfg(test)]
            log_restarts,
        })
    }

    /// Marks a clean stop: removes this server's run with a synced commit, which puts every
    /// consumption before it on the disk. Call it once no request can be answered any more.
    pub async fn release(&self) -> anyhow::Result<()> {
        let run = self.run.clone();
        tokio::task::spawn_blocking(move || runs::release(&run.0, &run.1)).await?
    }

    /// Queues `job`; `reply` gets its decision (an Accept once committed), or at once an
    /// error when the queue is full or the engine has stopped.
    pub fn send(&self, job: J, deadline: Instant, reply: Reply<J, O>) {
        self.queue(Pending::decide(job, deadline, reply));
    }

    /// Runs `write` on the engine's thread, inside the transaction of its next batch, and
    /// returns what it returned once that batch has committed. With `synced`, it returns
    /// only once the log has been synced after that commit, by a thread of its own
    /// ([`LogSync`]): the write is on the disk when this returns, as the pool's commits are,
    /// and the engine goes on deciding meanwhile; without, it is as durable as a RADIUS
    /// consumption (a crash or `kill -9` loses nothing, a power loss may lose the last
    /// moments). The token API writes this way on a SQLite file, so the engine never waits
    /// for its writes: through the pool they held the write lock for milliseconds across
    /// their trips through the runtime and sqlx's worker, and RADIUS p99 under full issuance
    /// load was 4-6x idle because of it (BENCHMARKS.md). `write` runs again if its batch
    /// rolls back (a neighbour failed) and is retried alone, so it must only touch the
    /// database; an error it returns fails it alone.
    pub async fn write<T: Send + 'static>(
        &self,
        synced: bool,
        write: impl FnMut(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, EngineError> {
        let (tx, answer) = oneshot::channel();
        self.write_then(synced, write, move |result| {
            let _ = tx.send(result);
        });
        answer.await.unwrap_or(Err(EngineError::Stopped))
    }

    /// As [`write`](Self::write), but hands the result to `then` on the thread that has it
    /// (the engine's, the log-sync thread's, or this one's if the queue refuses the write)
    /// instead of waking a task: a chain of steps on other threads (the token API's PIN
    /// check, `AppState::check_pin_and_issue`) goes on from there, and the runtime wakes
    /// once at its end rather than at each step. `then` must be quick: the engine's batch,
    /// or the other synced writes' answers, wait while it runs.
    pub fn write_then<T: Send + 'static>(
        &self,
        synced: bool,
        write: impl FnMut(&Connection) -> rusqlite::Result<T> + Send + 'static,
        then: impl FnOnce(Result<T, EngineError>) + Send + 'static,
    ) {
        self.queue(Pending::write(synced.then_some(&self.log), write, then));
    }

    fn queue(&self, pending: Pending<J, O>) {
        match self.queue.try_send(pending) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(mut refused)) => refused.fail(EngineError::Overloaded),
            // Dropped: answers `Stopped`.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Queues `job` and waits for its decision, committed.
    #[cfg(test)]
    pub async fn submit(&self, job: J, deadline: Instant) -> Result<O, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.send(job, deadline, oneshot_reply(reply));
        answer.await.unwrap_or(Err(EngineError::Stopped))
    }
}

/// A [`Reply`] that hands the decision to a oneshot channel.
#[cfg(test)]
fn oneshot_reply<J, O: Send + 'static>(tx: oneshot::Sender<Result<O, EngineError>>) -> Reply<J, O> {
    Box::new(move |_, answer| {
        let _ = tx.send(answer);
    })
}

/// Tells the operator what the start found of earlier runs on the database.
fn report(claimed: &runs::Claimed) {
    if let Some(lost) = &claimed.lost_boot {
        tracing::warn!(
            voided = claimed.voided,
            pid = lost.pid,
            "the machine went down while a server was running on this database: its unused passcodes are voided, \
             as consumptions of its last moments may not have reached the disk; their users fetch new ones"
        );
    }
    for old in &claimed.crashed {
        tracing::info!(
            pid = old.pid,
            "a server on this database stopped without a clean shutdown while the machine kept running: \
             nothing it committed is lost"
        );
    }
    for other in &claimed.running {
        tracing::warn!(pid = other.pid, "another tessera-server is running on this database");
    }
}

fn open(path: &Path) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // As the pool's connections: WAL (set once per file, by migrations' connection already),
    // foreign keys enforced. Commits do not sync the log (see the module's documentation).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Pages read through a memory map instead of a read() into SQLite's cache each: about
    // 10 % less CPU per request with 150,000 users (BENCHMARKS.md). Writes still go through
    // the WAL; the mapped pages the engine has touched count as the process's file-backed
    // RSS (shared with the page cache, which the kernel can reclaim), up to the file's size.
    conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
    // Checkpoints run on their own thread (`db::checkpoint`); this one's only if it lags.
    conn.pragma_update(None, "wal_autocheckpoint", super::checkpoint::ENGINE_FALLBACK)?;
    conn.busy_handler(Some(wait_for_lock))?;
    Ok(conn)
}

fn run<J, O, H>(
    conn: Connection,
    turns: &WriteTurns,
    checkpoints: &Link,
    mut memory: Memory,
    mut rx: mpsc::Receiver<Pending<J, O>>,
    mut handler: H,
    early: fn(&O) -> bool,
) where
    H: FnMut(&mut TxLedger<'_, '_>, &J) -> anyhow::Result<O>,
{
    LOCK_DEADLINE.set(Some(Instant::now() + STARTUP_PATIENCE));
    let mut stmts = match Prepared::new(&conn) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot prepare the verification statements; RADIUS requests will be rejected");
            return;
        }
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    // When the engine last found its queue empty.
    let mut idle_at = Instant::now();
    loop {
        let first = match rx.try_recv() {
            Ok(p) => p,
            Err(mpsc::error::TryRecvError::Empty) => {
                idle_at = Instant::now();
                match rx.blocking_recv() {
                    Some(p) => p,
                    None => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        // Saturated: batches have followed each other without a pause for a while, so
        // writers waiting on SQLite's lock may never find it free (db::WriteTurns).
        let saturated = idle_at.elapsed() >= SATURATED_AFTER;
        decide_batch(&conn, saturated.then_some(turns), &mut stmts, &mut memory, &mut batch, &mut handler, early);
        checkpoints.after_batch();
        let restarts = &checkpoints.restarts;
        if restarts.take_request() {
            LOCK_DEADLINE.set(Some(Instant::now() + RESTART_PATIENCE));
            restart_here(&conn, restarts);
        }
    }
    tracing::debug!("SQLite verification engine stopped");
}

/// Decides and answers every request of `batch`, leaving it empty.
fn decide_batch<'c, J, O, H>(
    conn: &'c Connection,
    turns: Option<&WriteTurns>,
    stmts: &mut Prepared<'c>,
    memory: &mut Memory,
    batch: &mut Vec<Pending<J, O>>,
    handler: &mut H,
    early: fn(&O) -> bool,
) where
    H: FnMut(&mut TxLedger<'_, 'c>, &J) -> anyhow::Result<O>,
{
    let now = Instant::now();
    let (mut live, late): (Vec<_>, Vec<_>) = batch.drain(..).partition(|p| p.deadline > now + DEADLINE_MARGIN);
    for mut p in late {
        p.fail(EngineError::Expired);
    }
    let Some(earliest) = live.iter().map(|p| p.deadline).min() else { return };
    // Wait for another process's write lock only as long as the most urgent request allows.
    let patience = earliest.saturating_duration_since(now).saturating_sub(DEADLINE_MARGIN);
    LOCK_DEADLINE.set(Some(now + patience));
    let alone = live.len() == 1;
    let Err(failure) = transaction(conn, turns, stmts, memory, &mut live, handler, early) else { return };
    // Rolled back. Requests already answered (early) are not decided again: a second
    // decision could differ from the answer sent (a passcode the rolled-back batch had
    // consumed is unused again); their failure counts and audit rows are lost.
    let answered = live.iter().filter(|p| p.answered()).count();
    live.retain(|p| !p.answered());
    if answered > 0 {
        tracing::warn!(answered, "batch rolled back after some Rejects were sent; their audit rows are lost");
    }
    if is_busy(&failure) {
        for mut p in live {
            p.fail(EngineError::Busy);
        }
    } else if alone {
        // The request decided alone is the one that fails.
        for mut p in live {
            p.fail(EngineError::Failed(format!("{failure:#}")));
        }
    } else if !live.is_empty() {
        tracing::warn!(
            error = format!("{failure:#}"),
            requests = live.len(),
            "batch failed; deciding its requests one by one"
        );
        for p in &mut live {
            if let Err(e) = transaction(conn, turns, stmts, memory, std::slice::from_mut(p), handler, early) {
                let e = if is_busy(&e) { EngineError::Busy } else { EngineError::Failed(format!("{e:#}")) };
                p.fail(e);
            }
        }
    }
}

/// Runs `handler` for each request (and each queued write as it is) in one write
/// transaction and commits; any error rolls
/// the whole transaction back, and with it what the batch changed in `failures`. Outcomes
/// `early` accepts are answered once every request is decided, before the commit, the
/// others once it has committed; an error leaves unanswered what was not answered yet.
/// Early answers go out together rather than one by one as decided: each answer wakes the
/// client's side, whose next request then wakes the listener; together they cost one such
/// round, and the server's CPU per Reject fell 15-25 % (BENCHMARKS.md).
fn transaction<'c, J, O, H>(
    conn: &'c Connection,
    turns: Option<&WriteTurns>,
    stmts: &mut Prepared<'c>,
    memory: &mut Memory,
    requests: &mut [Pending<J, O>],
    handler: &mut H,
    early: fn(&O) -> bool,
) -> anyhow::Result<()>
where
    H: FnMut(&mut TxLedger<'_, 'c>, &J) -> anyhow::Result<O>,
{
    // When saturated, this process's writers first (db::WriteTurns); then SQLite's lock.
    let _turn = turns.map(take_turn).transpose()?;
    // IMMEDIATE takes the write lock first, so a batch never fails half-way on an upgrade.
    // Unchecked (by `&Connection`): the engine's statements borrow the connection for its
    // whole life, and this thread runs one transaction at a time.
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    // What other connections logged since the last batch (committed: kept even if this
    // batch rolls back; a passcode this batch consumes leaves the copy even then, and is
    // found among the stored rows if sent again).
    let Memory { failures, users, live } = memory;
    failures.read_new(&mut stmts.failures_after)?;
    users.read_new(&mut stmts.deletions_after)?;
    let now = crate::now();
    live.read_new(&mut stmts.live_after, now)?;
    live.sweep_if_due(now);
    let mut decided = Vec::with_capacity(requests.len());
    // A panic while deciding (a bug, perhaps reachable by a crafted request) fails the batch
    // as an error does, and the thread goes on: the batch rolls back and is decided again
    // request by request, where only the request that panics fails. An engine thread that
    // died would leave every later RADIUS request without a decision until a restart.
    let decisions = std::panic::catch_unwind(AssertUnwindSafe(|| -> anyhow::Result<()> {
        let mut ledger = TxLedger { conn, stmts, failures: &mut *failures, users: &mut *users, live: &mut *live };
        for p in requests.iter_mut() {
            match &mut p.work {
                Work::Decide { job, .. } => decided.push(Some(handler(&mut ledger, job)?)),
                Work::Write { run, .. } => {
                    run(conn)?;
                    decided.push(None);
                }
            }
        }
        // The batch's failure-log rows, together, before any answer goes out.
        let TxLedger { conn, stmts, failures, .. } = ledger;
        failures.flush(|rows| failures::append_rows(&mut stmts.append_failures, conn, rows))?;
        Ok(())
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".into());
        tracing::error!(
            panic = what,
            requests = requests.len(),
            "bug: deciding a RADIUS request panicked; its batch is rolled back"
        );
        Err(anyhow::anyhow!("deciding the request panicked: {what}"))
    });
    if let Err(e) = decisions {
        failures.rollback();
        return Err(e);
    }
    // Every request decided: the early outcomes go out together, before the commit.
    let mut after_commit = Vec::with_capacity(decided.len());
    let together = TOGETHER.get();
    let mut decided = requests.iter_mut().zip(decided);
    together(&mut || {
        for (p, outcome) in decided.by_ref() {
            match outcome {
                Some(outcome) if early(&outcome) => p.answer(Ok(Some(outcome))),
                outcome => after_commit.push((p, outcome)),
            }
        }
    });
    if let Err(e) = tx.commit() {
        failures.rollback();
        return Err(e.into());
    }
    failures.commit();
    together(&mut || {
        for (p, outcome) in after_commit.drain(..) {
            p.answer(Ok(outcome));
        }
    });
    Ok(())
}

/// Waits in line with this process's other writers (db::WriteTurns) until the batch's lock
/// deadline; past it, fails as SQLite's "busy" does.
fn take_turn(turns: &WriteTurns) -> anyhow::Result<tokio::sync::MutexGuard<'_, ()>> {
    let deadline = LOCK_DEADLINE.get().unwrap_or_else(Instant::now);
    super::wait_for_turn(turns, deadline).ok_or_else(|| {
        let busy = rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY);
        rusqlite::Error::SqliteFailure(busy, Some("this process's writers held the database".into())).into()
    })
}

/// SQLite's "busy" or "locked": another connection holds the write lock.
fn is_busy(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(c.downcast_ref::<rusqlite::Error>(), Some(rusqlite::Error::SqliteFailure(f, _))
            if matches!(f.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked))
    })
}

/// The [`Ledger`] inside a batch's transaction. Its operations are plain calls that never
/// wait, so the service's async sequence runs on this thread without a runtime.
pub struct TxLedger<'a, 'c> {
    conn: &'c Connection,
    stmts: &'a mut Prepared<'c>,
    failures: &'a mut Failures,
    users: &'a mut UserIndex,
    live: &'a mut LivePasscodes,
}

/// What the engine keeps in memory between batches, beside the database.
struct Memory {
    failures: Failures,
    users: UserIndex,
    live: LivePasscodes,
}

impl Memory {
    fn load(conn: &Connection) -> anyhow::Result<Self> {
        let now = crate::now();
        let mut rows_after = conn.prepare(live_passcodes::ROWS_AFTER)?;
        Ok(Self {
            failures: Failures::load(conn, now).context("cannot read the wrong-passcode log")?,
            users: UserIndex::load(conn).context("cannot index the users")?,
            live: LivePasscodes::load(&mut rows_after, now).context("cannot read the live passcodes")?,
        })
    }
}

/// `$N` placeholders (shared with PostgreSQL) in SQLite's numbered form `?N`: SQLite numbers
/// `$N` by order of first appearance, not by N.
pub fn sqlite_sql(sql: &str) -> String {
    sql.replace('$', "?")
}

/// The verification statements, prepared once for the engine's connection and kept: through
/// rusqlite's statement cache every execution took a statement out of the cache's LRU and
/// put it back (7 % of an Accept's instructions under callgrind).
struct Prepared<'c> {
    user_facts: Statement<'c>,
    user_by_id: Statement<'c>,
    deletions_after: Statement<'c>,
    recent_passcodes: Statement<'c>,
    device_disabled: Statement<'c>,
    consume: Statement<'c>,
    live_after: Statement<'c>,
    consume_live: Statement<'c>,
    /// Statement `i` appends 2^i failure-log rows (`failures::append_rows`).
    append_failures: Vec<Statement<'c>>,
    failures_after: Statement<'c>,
    audit: Statement<'c>,
}

impl<'c> Prepared<'c> {
    fn new(conn: &'c Connection) -> rusqlite::Result<Self> {
        let prepare = |sql: &str| conn.prepare(&sqlite_sql(sql));
        Ok(Self {
            user_facts: prepare(ENGINE_USER_FACTS)?,
            user_by_id: prepare(ENGINE_USER_BY_ID)?,
            deletions_after: conn.prepare(user_index::DELETIONS_AFTER)?,
            recent_passcodes: prepare(ENGINE_RECENT_PASSCODES)?,
            device_disabled: prepare(ENGINE_DEVICE_DISABLED)?,
            consume: prepare(CONSUME_PASSCODE)?,
            live_after: conn.prepare(live_passcodes::ROWS_AFTER)?,
            consume_live: conn.prepare(live_passcodes::CONSUME_LIVE)?,
            append_failures: (0..failures::APPEND_CHUNKS)
                .map(|i| conn.prepare(&failures::append_rows_sql(1 << i)))
                .collect::<rusqlite::Result<_>>()?,
            failures_after: conn.prepare(failures::ROWS_AFTER)?,
            audit: prepare(AUDIT_INSERT)?,
        })
    }
}

impl Ledger for TxLedger<'_, '_> {
    async fn user(&mut self, domain_id: i64, username: &str, now: i64) -> anyhow::Result<Option<UserFacts>> {
        // The id from memory (db::user_index); the domain and the disabled flag from pages
        // that stay cached. A name it does not know is looked up, and the answer kept.
        let known = match self.users.get(domain_id, username) {
            Some(id) => self
                .stmts
                .user_by_id
                .query_row(params![domain_id, id], |r| Ok((id, r.get(2)?, r.get(0)?, r.get(1)?, 0)))
                .optional()?,
            None => None,
        };
        let row = match known {
            Some(row) => Some(row),
            None => {
                let row: Option<UserFactsRow> = self
                    .stmts
                    .user_facts
                    .query_row(params![domain_id, username], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, 0)))
                    .optional()?;
                self.users.learn(domain_id, username, row.map(|r| r.0));
                row
            }
        };
        // The count from memory (db::failures), over the user's domain's window.
        Ok(row.map(user_facts).map(|mut facts| {
            facts.recent_failures = self.failures.count(facts.id, facts.policy.since(now));
            facts
        }))
    }

    async fn recent_passcodes(&mut self, user_id: i64) -> anyhow::Result<Vec<PasscodeRow>> {
        let rows = self.stmts.recent_passcodes.query_map(params![user_id], |r| {
            Ok(PasscodeRow {
                id: r.get(0)?,
                hash: r.get(1)?,
                expires_at: r.get(2)?,
                used: r.get(3)?,
                device_id: r.get(4)?,
                device_disabled: None,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    async fn device_disabled(&mut self, device_id: i64) -> anyhow::Result<bool> {
        Ok(self.stmts.device_disabled.exists(params![device_id])?)
    }

    async fn consume(&mut self, passcode_id: i64, now: i64) -> anyhow::Result<bool> {
        Ok(self.stmts.consume.execute(params![passcode_id, now])? == 1)
    }

    fn live_match(&mut self, user_id: i64, hash: &[u8; 32], now: i64) -> Option<(i64, i64)> {
        self.live.find(user_id, hash, now).map(|p| (p.id, p.device_id))
    }

    async fn consume_live(
        &mut self,
        user_id: i64,
        (id, device_id): (i64, i64),
        hash: &[u8; 32],
        now: i64,
    ) -> anyhow::Result<bool> {
        // Out of the copy either way: consumed, or no longer what its row holds.
        self.live.remove(user_id, id);
        Ok(self.stmts.consume_live.execute(params![id, user_id, device_id, &hash[..], now])? == 1)
    }

    async fn clear_failures(&mut self, user_id: i64) -> anyhow::Result<()> {
        self.failures.clear(user_id, crate::now());
        Ok(())
    }

    async fn record_failure(&mut self, user_id: i64, now: i64, forget_before: i64) -> anyhow::Result<()> {
        self.failures.record(user_id, now, forget_before);
        Ok(())
    }

    async fn audit(&mut self, entry: Entry<'_>) -> anyhow::Result<()> {
        self.stmts.audit.execute(audit_refs(&entry, crate::now()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn placeholders_become_numbered_sqlite_parameters() {
        assert_eq!(sqlite_sql("SELECT $3 - x WHERE a = $1 AND b = $2"), "SELECT ?3 - x WHERE a = ?1 AND b = ?2");
    }

    /// Tessera's schema (the engine prepares its statements against it) plus a table `t` on a
    /// fresh file, and an engine whose handler inserts the job's value, failing for negative
    /// values, and answers outcomes that end in 1 early.
    fn engine() -> (tempfile::TempDir, std::path::PathBuf, Engine<i64, i64>) {
        let (dir, path) = schema();
        let engine = Engine::start(&path, WriteTurns::default(), insert_or_fail, ends_in_one, one_by_one).unwrap();
        (dir, path, engine)
    }

    /// The file of [`engine`], with no engine started on it.
    fn schema() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.db");
        let conn = Connection::open(&path).unwrap();
        crate::db::test_db::migrate(&conn);
        conn.execute_batch(
            "CREATE TABLE t (v INTEGER NOT NULL); CREATE TABLE parent (id INTEGER PRIMARY KEY); \
             CREATE TABLE orphan (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)",
        )
        .unwrap();
        (dir, path)
    }

    /// Inserts `v` and answers `10 v + 1` for odd `v` (early), `10 v` for even `v`; 99 also
    /// leaves a row whose deferred foreign key fails the commit.
    fn insert_or_fail(ledger: &mut TxLedger<'_, '_>, v: &i64) -> anyhow::Result<i64> {
        anyhow::ensure!(*v >= 0, "negative");
        ledger.conn.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
        if *v == 99 {
            ledger.conn.execute("INSERT INTO orphan (parent) VALUES (12345)", [])?;
        }
        Ok(*v * 10 + *v % 2)
    }

    fn ends_in_one(o: &i64) -> bool {
        o % 10 == 1
    }

    /// Decides `jobs` as one batch on a connection of its own; the answers in job order.
    fn decide(path: &Path, jobs: &[i64]) -> Vec<Result<i64, EngineError>> {
        decide_with(path, jobs, &mut insert_or_fail, ends_in_one)
    }

    fn decide_with(
        path: &Path,
        jobs: &[i64],
        handler: &mut impl FnMut(&mut TxLedger<'_, '_>, &i64) -> anyhow::Result<i64>,
        early: fn(&i64) -> bool,
    ) -> Vec<Result<i64, EngineError>> {
        let conn = open(path).unwrap();
        let mut stmts = Prepared::new(&conn).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut batch, mut answers) = (Vec::new(), Vec::new());
        for &job in jobs {
            let (reply, answer) = oneshot::channel();
            batch.push(Pending::decide(job, deadline, oneshot_reply(reply)));
            answers.push(answer);
        }
        let mut memory = Memory::load(&conn).unwrap();
        decide_batch(&conn, Some(&WriteTurns::default()), &mut stmts, &mut memory, &mut batch, handler, early);
        answers.into_iter().map(|a| a.blocking_recv().unwrap()).collect()
    }

    fn stored(path: &Path) -> Vec<i64> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn.prepare("SELECT v FROM t ORDER BY v").unwrap();
        stmt.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap()
    }

    /// The outcome of a ledger operation, which on the engine's thread never waits: polled
    /// once, an error if it did wait.
    fn at_once<T>(operation: impl Future<Output = T>) -> anyhow::Result<T> {
        let operation = std::pin::pin!(operation);
        match operation.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
            std::task::Poll::Ready(outcome) => Ok(outcome),
            std::task::Poll::Pending => anyhow::bail!("the engine's ledger waited"),
        }
    }

    /// The engine finds users through its index in memory (db::user_index), kept across
    /// batches, while another connection adds, disables, deletes and re-creates them.
    #[test]
    fn users_read_through_the_index_follow_another_connections_changes() {
        let (_dir, path) = schema();
        let admin = Connection::open(&path).unwrap();
        admin.execute_batch(crate::db::test_db::DOMAIN_AND_ALICE).unwrap();
        let conn = open(&path).unwrap();
        let mut stmts = Prepared::new(&conn).unwrap();
        let mut memory = Memory::load(&conn).unwrap();
        // Job 1 asks for alice, 2 for bob; the answer is 10 × id + disabled, 0 for no user.
        let mut lookup = |ledger: &mut TxLedger<'_, '_>, job: &i64| -> anyhow::Result<i64> {
            let name = if *job == 1 { "alice" } else { "bob" };
            Ok(at_once(ledger.user(1, name, 0))??.map_or(0, |f| f.id * 10 + i64::from(f.disabled)))
        };
        let mut users = || -> Vec<i64> {
            let deadline = Instant::now() + Duration::from_secs(5);
            let (mut batch, mut answers) = (Vec::new(), Vec::new());
            for job in [1, 2] {
                let (reply, answer) = oneshot::channel();
                batch.push(Pending::decide(job, deadline, oneshot_reply(reply)));
                answers.push(answer);
            }
            decide_batch(&conn, None, &mut stmts, &mut memory, &mut batch, &mut lookup, |_| false);
            answers.into_iter().map(|a| a.blocking_recv().unwrap().unwrap()).collect()
        };
        assert_eq!(users(), [10, 0], "alice indexed at the start; no bob");
        admin.execute("INSERT INTO users (id, domain_id, username, created_at) VALUES (2, 1, 'bob', 0)", []).unwrap();
        assert_eq!(users(), [10, 20], "bob, created since, looked up");
        admin.execute("UPDATE users SET disabled = 1 WHERE id = 1", []).unwrap();
        assert_eq!(users(), [11, 20], "alice disabled");
        admin.execute("UPDATE users SET disabled = 0 WHERE id = 1", []).unwrap();
        admin.execute("DELETE FROM users WHERE id = 2", []).unwrap();
        assert_eq!(users(), [10, 0], "alice enabled again; bob deleted");
        admin.execute("INSERT INTO users (id, domain_id, username, created_at) VALUES (3, 1, 'bob', 0)", []).unwrap();
        admin.execute("DELETE FROM users WHERE id = 1", []).unwrap();
        admin.execute("INSERT INTO users (id, domain_id, username, created_at) VALUES (4, 1, 'alice', 0)", []).unwrap();
        assert_eq!(users(), [40, 30], "both deleted and created again, under new ids");
        // alice, the largest id, deleted; SQLite hands her id to the next user.
        admin.execute("DELETE FROM users WHERE id = 4", []).unwrap();
        admin.execute("INSERT INTO users (domain_id, username, created_at) VALUES (1, 'dave', 0)", []).unwrap();
        assert_eq!(users(), [0, 30], "no alice, and not dave under her name");
        // Of the users, only the index of the disabled ones is read.
        let mut explain = admin.prepare(&format!("EXPLAIN QUERY PLAN {}", sqlite_sql(ENGINE_USER_BY_ID))).unwrap();
        let plan: Vec<String> = explain.query_map([1, 4], |r| r.get(3)).unwrap().map(Result::unwrap).collect();
        let users: Vec<_> = plan.iter().filter(|step| step.contains(" users ")).collect();
        assert!(users.len() == 1 && users[0].contains("USING INDEX users_disabled"), "{plan:?}");
    }

    /// An Accept finds its passcode in the engine's copy (db::live_passcodes), which follows
    /// what other connections store and change, and never accepts what the rows refuse.
    #[test]
    fn passcodes_checked_from_memory_follow_another_connections_changes() {
        use crate::domain::passcode::PasscodeKey;
        use crate::service::verify::{Decision, Request, decide_in_transaction};

        let (_dir, path) = schema();
        let admin = Connection::open(&path).unwrap();
        admin.execute_batch(crate::db::test_db::DOMAIN_AND_ALICE).unwrap();
        admin
            .execute_batch(
                "INSERT INTO devices (id, domain_id, device_key_id, user_id, public_key, pin_hash, created_at) \
                 VALUES (1, 1, 'a', 1, x'00', 'x', 0), (2, 1, 'b', 1, x'01', 'x', 0)",
            )
            .unwrap();
        let key = PasscodeKey::new(vec![7; 32]);
        let now = crate::now();
        // Stores a passcode of alice's on `device`, as issuance does, and returns its id.
        let issue = |passcode: &str, device: i64| -> i64 {
            admin
                .execute(
                    "INSERT INTO passcodes (user_id, device_id, hash, expires_at, created_at) VALUES (1, ?1, ?2, ?3, ?4)",
                    params![device, &key.hash(1, passcode)[..], now + 60, now],
                )
                .unwrap();
            admin.last_insert_rowid()
        };
        let conn = open(&path).unwrap();
        let mut stmts = Prepared::new(&conn).unwrap();
        let before = issue("111111", 1);
        let mut memory = Memory::load(&conn).unwrap();
        assert_eq!(memory.live.len(), 1);
        let mut check = |passcode: &str| -> Decision {
            let request = Request {
                client_name: "c".into(),
                domain_id: 1,
                domain_code: "127000000001".into(),
                source: std::net::Ipv4Addr::LOCALHOST.into(),
                username: "alice".into(),
                passcode: passcode.to_owned().into(),
            };
            let mut decide = |ledger: &mut TxLedger<'_, '_>, r: &Request| decide_in_transaction(ledger, &key, r);
            let (reply, answer) = oneshot::channel();
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut batch = vec![Pending::decide(request, deadline, oneshot_reply(reply))];
            decide_batch(&conn, None, &mut stmts, &mut memory, &mut batch, &mut decide, |_| false);
            answer.blocking_recv().unwrap().unwrap()
        };
        let used = |id: i64| -> i64 {
            admin.query_row("SELECT used FROM passcodes WHERE id = ?1", [id], |r| r.get(0)).unwrap()
        };
        assert_eq!(check("111111"), Decision::Accept, "stored before the start");
        assert_eq!(used(before), 1);
        assert_eq!(check("111111"), Decision::Reject("passcode already used"));

        // Stored since by another connection: read at the next batch.
        let later = issue("222222", 1);
        assert_eq!(check("222222"), Decision::Accept);
        assert_eq!(used(later), 1);

        // In the copy, then used through another connection: refused, and why.
        issue("333333", 1);
        assert_eq!(check("999999"), Decision::Reject("wrong passcode"), "a batch reads it into the copy");
        admin.execute("UPDATE passcodes SET used = 1 WHERE used = 0", []).unwrap();
        assert_eq!(check("333333"), Decision::Reject("passcode already used"));

        // In the copy, then its device disabled, enabled, and removed.
        let on_b = issue("444444", 2);
        assert_eq!(check("999999"), Decision::Reject("wrong passcode"));
        admin.execute("UPDATE devices SET disabled = 1 WHERE id = 2", []).unwrap();
        assert_eq!(check("444444"), Decision::Reject("device disabled"));
        admin.execute("UPDATE devices SET disabled = 0 WHERE id = 2", []).unwrap();
        assert_eq!(check("444444"), Decision::Accept);
        assert_eq!(used(on_b), 1);
        issue("555555", 2);
        assert_eq!(check("999999"), Decision::Reject("wrong passcode"));
        admin.execute("DELETE FROM devices WHERE id = 2", []).unwrap();
        assert_eq!(check("555555"), Decision::Reject("wrong passcode"), "its passcodes went with it");

        // The newest passcodes pruned: ids are not handed out again (migration 0011), so the
        // next one is read, and a copy of a pruned one consumes nothing.
        let newest = issue("666666", 1);
        assert_eq!(check("999999"), Decision::Reject("wrong passcode"));
        admin.execute("DELETE FROM passcodes WHERE id >= ?1", [newest]).unwrap();
        let next = issue("777777", 1);
        assert!(next > newest, "{next} after {newest}");
        assert_eq!(check("666666"), Decision::Reject("wrong passcode"));
        assert_eq!(check("777777"), Decision::Accept);
        assert_eq!(memory.live.len(), 0, "consumed and stale passcodes leave the copy");
    }

    /// The engine reads a device's flag from the index of disabled devices (migration 0008),
    /// not from the devices table: a device disabled, then enabled again, by another
    /// connection reads as such.
    #[test]
    fn a_device_reads_as_disabled_while_its_flag_is_set_by_another_connection() {
        let (_dir, path) = schema();
        let admin = Connection::open(&path).unwrap();
        admin
            .execute_batch(
                "INSERT INTO domains (id, code, name, device_name, passcode_lifetime_secs, pin_min_length, passcode_length, \
                   max_pin_failures, registration_ttl_secs, public_key, private_key, created_at) \
                   VALUES (1, '127000000001', 'D', 'd', 60, 4, 6, 3, 600, x'00', x'00', 0); \
                 INSERT INTO users (id, domain_id, username, created_at) VALUES (1, 1, 'alice', 0); \
                 INSERT INTO devices (id, domain_id, device_key_id, user_id, public_key, pin_hash, created_at) \
                   VALUES (7, 1, 'k7', 1, x'00', 'h', 0), (8, 1, 'k8', 1, x'00', 'h', 0)",
            )
            .unwrap();
        let mut flag = |ledger: &mut TxLedger<'_, '_>, device: &i64| -> anyhow::Result<i64> {
            Ok(i64::from(at_once(ledger.device_disabled(*device))??))
        };
        let flags = |path: &Path, flag: &mut _| -> Vec<i64> {
            decide_with(path, &[7, 8], flag, |_| false).into_iter().map(Result::unwrap).collect()
        };
        assert_eq!(flags(&path, &mut flag), [0, 0]);
        admin.execute("UPDATE devices SET disabled = 1 WHERE id = 8", []).unwrap();
        assert_eq!(flags(&path, &mut flag), [0, 1]);
        admin.execute("UPDATE devices SET disabled = 0 WHERE id = 8", []).unwrap();
        assert_eq!(flags(&path, &mut flag), [0, 0]);
        let plan: String = admin
            .query_row(&format!("EXPLAIN QUERY PLAN {}", sqlite_sql(ENGINE_DEVICE_DISABLED)), [7], |r| r.get(3))
            .unwrap();
        assert!(plan.contains("INDEX devices_disabled"), "{plan}");
    }

    #[test]
    fn a_failing_request_does_not_fail_its_batch_neighbours() {
        let (_dir, path, _engine) = engine();
        let answers = decide(&path, &[2, -1, 4, 6]);
        assert_eq!(answers[0].as_ref().unwrap(), &20);
        assert!(matches!(answers[1], Err(EngineError::Failed(_))));
        assert_eq!(answers[2].as_ref().unwrap(), &40);
        assert_eq!(answers[3].as_ref().unwrap(), &60);
        assert_eq!(stored(&path), vec![2, 4, 6], "the failed request changed nothing, the others committed");
    }

    #[test]
    fn early_answers_wait_for_the_batch_to_be_decided_and_are_never_decided_twice() {
        let (_dir, path, _engine) = engine();
        // -1 fails while the batch is decided: nothing has been answered yet, so every
        // request is decided again alone, 3 (an early outcome) too.
        let answers = decide(&path, &[2, 3, -1, 4]);
        assert_eq!(answers[0].as_ref().unwrap(), &20);
        assert_eq!(answers[1].as_ref().unwrap(), &31);
        assert!(matches!(answers[2], Err(EngineError::Failed(_))));
        assert_eq!(answers[3].as_ref().unwrap(), &40);
        assert_eq!(stored(&path), vec![2, 3, 4]);
        // 99 leaves a dangling deferred foreign key, so the commit fails after 5 and 99 were
        // answered early: they keep their one answer and are not decided again (their rows
        // are lost); 6, not yet answered, is decided again alone.
        let answers = decide(&path, &[5, 99, 6]);
        assert_eq!((answers[0].as_ref().unwrap(), answers[1].as_ref().unwrap()), (&51, &991));
        assert_eq!(answers[2].as_ref().unwrap(), &60);
        assert_eq!(stored(&path), vec![2, 3, 4, 6]);
        // Without a failure, an early answer's writes commit with its batch.
        let answers = decide(&path, &[7, 8]);
        assert_eq!((answers[0].as_ref().unwrap(), answers[1].as_ref().unwrap()), (&71, &80));
        assert_eq!(stored(&path), vec![2, 3, 4, 6, 7, 8]);
    }

    /// As [`insert_or_fail`], but panics on 13 after inserting it.
    fn insert_or_panic(ledger: &mut TxLedger<'_, '_>, v: &i64) -> anyhow::Result<i64> {
        let outcome = insert_or_fail(ledger, v)?;
        assert_ne!(*v, 13, "a bug reached by request 13");
        Ok(outcome)
    }

    #[tokio::test]
    async fn a_panic_fails_only_its_own_request_and_the_engine_goes_on() {
        let (_dir, path) = schema();
        let engine = Engine::start(&path, WriteTurns::default(), insert_or_panic, ends_in_one, one_by_one).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        // Queued together, so they are likely one batch; decided again alone after the panic.
        let (a, b, c) =
            tokio::join!(engine.submit(2, deadline), engine.submit(13, deadline), engine.submit(4, deadline));
        assert_eq!((a.unwrap(), c.unwrap()), (20, 40));
        assert!(matches!(&b, Err(EngineError::Failed(e)) if e.contains("panicked")), "{b:?}");
        for _ in 0..3 {
            assert!(matches!(engine.submit(13, deadline).await, Err(EngineError::Failed(_))));
            assert_eq!(engine.submit(6, deadline).await.unwrap(), 60, "the engine thread still decides");
        }
        assert_eq!(stored(&path), vec![2, 4, 6, 6, 6], "the panicking request's insert rolled back");
    }

    /// Records a wrong passcode of user 1 at `|v|` through the ledger, then fails for a
    /// negative `v`; answers the user's count.
    fn fail_user_one(ledger: &mut TxLedger<'_, '_>, v: &i64) -> anyhow::Result<i64> {
        at_once(ledger.record_failure(1, v.abs(), 0))??;
        anyhow::ensure!(*v >= 0, "negative");
        Ok(ledger.failures.count(1, 0))
    }

    #[test]
    fn failure_counts_roll_back_with_their_batch_and_survive_a_restart() {
        let (_dir, path, _engine) = engine();
        Connection::open(&path).unwrap().execute_batch(crate::db::test_db::DOMAIN_AND_ALICE).unwrap();
        // -6 fails the batch: the failures of 5 and -6 are undone with it, then 5 and 7 are
        // decided again one by one and -6 fails alone.
        let answers = decide_with(&path, &[5, -6, 7], &mut fail_user_one, |_| false);
        assert_eq!(answers[0].as_ref().unwrap(), &1);
        assert!(matches!(answers[1], Err(EngineError::Failed(_))));
        assert_eq!(answers[2].as_ref().unwrap(), &2);
        let conn = Connection::open(&path).unwrap();
        let rows: i64 = conn.query_row("SELECT count(*) FROM passcode_failures", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 2);
        assert_eq!(Failures::load(&conn, 10).unwrap().count(1, 0), 2, "the log replays to the same count");
    }

    #[tokio::test]
    async fn a_start_records_its_run_and_a_clean_stop_removes_it() {
        let (_dir, path, engine) = engine();
        let recorded = || -> Vec<(i64, i64)> {
            let conn = Connection::open(&path).unwrap();
            let mut stmt = conn.prepare("SELECT pid, started_at FROM engine_runs").unwrap();
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<rusqlite::Result<_>>().unwrap()
        };
        assert_eq!(recorded(), vec![(i64::from(std::process::id()), engine.run.1.started_at)]);
        assert_eq!(engine.submit(2, Instant::now() + Duration::from_secs(5)).await.unwrap(), 20);
        engine.release().await.unwrap();
        assert!(recorded().is_empty());
        assert_eq!(stored(&path), vec![2]);
    }

    #[tokio::test]
    async fn a_request_past_its_deadline_is_not_decided() {
        let (_dir, path, engine) = engine();
        let answer = engine.submit(7, Instant::now()).await;
        assert!(matches!(answer, Err(EngineError::Expired)));
        assert!(stored(&path).is_empty());
    }

    #[tokio::test]
    async fn an_engine_with_pauses_does_not_wait_for_a_writers_turn() {
        let (_dir, path) = schema();
        let turns = WriteTurns::default();
        let engine = Engine::start(&path, turns.clone(), insert_or_fail, ends_in_one, one_by_one).unwrap();
        // A writer holds its turn (somewhere between the runtime and sqlx's worker) but not
        // SQLite's lock: an engine that is not saturated decides at once.
        let _held = turns.clone().lock_owned().await;
        assert_eq!(engine.submit(2, Instant::now() + Duration::from_secs(5)).await.unwrap(), 20);
        assert_eq!(stored(&path), vec![2]);
    }

    #[test]
    fn a_saturated_batch_waits_for_a_held_turn_only_until_its_deadline() {
        let (_dir, path) = schema();
        let turns = WriteTurns::default();
        let held = turns.clone().try_lock_owned().unwrap();
        let start = Instant::now();
        LOCK_DEADLINE.set(Some(start + Duration::from_millis(300)));
        let busy = take_turn(&turns).map(|_| ()).unwrap_err();
        assert!(is_busy(&busy), "{busy:#}");
        assert!(start.elapsed() >= Duration::from_millis(300));
        // Released while it waits: the batch gets its turn at once.
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
        });
        LOCK_DEADLINE.set(Some(Instant::now() + Duration::from_secs(5)));
        let waited = Instant::now();
        assert!(take_turn(&turns).is_ok());
        assert!(waited.elapsed() < Duration::from_secs(2), "woken when the turn came, not at the deadline");
        releaser.join().unwrap();
        // And the engine writes with it.
        assert_eq!(decide(&path, &[4]).into_iter().map(Result::unwrap).collect::<Vec<_>>(), vec![40]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pool_writer_gets_its_turn_between_back_to_back_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.db");
        let store = crate::db::Store::open(&format!("sqlite://{}", path.display())).await.unwrap();
        Connection::open(&path).unwrap().execute_batch("CREATE TABLE t (v INTEGER NOT NULL)").unwrap();
        // Each decision takes a while and the queue is kept full, so the engine's batches
        // (each holding SQLite's write lock for milliseconds) follow each other with no pause.
        let slow = |ledger: &mut TxLedger<'_, '_>, v: &i64| {
            std::thread::sleep(Duration::from_micros(20));
            insert_or_fail(ledger, v)
        };
        let engine = Engine::start(&path, store.write_turns().unwrap(), slow, ends_in_one, one_by_one).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let feeder = std::thread::spawn({
            let (engine, stop) = (engine.clone(), stop.clone());
            move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    engine.send(2, Instant::now() + Duration::from_secs(5), Box::new(|_, _| {}));
                }
            }
        });
        // SQLite's busy timeout (5 s) alone failed these writes with "database is locked".
        for i in 0..10 {
            let started = Instant::now();
            let fresh = store.record_nonce("device", &format!("nonce {i}"), i64::MAX).await;
            assert!(fresh.unwrap(), "write {i} after {:?}", started.elapsed());
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        feeder.join().unwrap();
        assert!(stored(&path).len() > 100, "the engine kept writing meanwhile");
    }

    #[tokio::test]
    async fn asked_to_the_engine_restarts_the_log_after_its_next_batch() {
        let (_dir, _path, engine) = engine();
        let insert = |conn: &Connection| conn.execute("INSERT INTO t (v) VALUES (zeroblob(4 * 4000))", []);
        engine.write(false, insert).await.unwrap();
        assert_eq!(engine.log_restarts.by_engine(), 0, "not asked, not restarted");
        // As the checkpoint thread asks once the log is long.
        engine.log_restarts.ask();
        engine.write(false, insert).await.unwrap();
        // The answer goes out inside the batch; the restart follows it.
        let until = Instant::now() + Duration::from_secs(5);
        while engine.log_restarts.by_engine() == 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(engine.log_restarts.by_engine(), 1);
        engine.write(false, insert).await.unwrap();
        assert_eq!(engine.log_restarts.by_engine(), 1, "once per ask");
    }

    #[tokio::test]
    async fn a_write_lock_held_elsewhere_gives_busy_by_the_deadline() {
        let (_dir, path, engine) = engine();
        let holder = Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let start = Instant::now();
        let answer = engine.submit(1, start + Duration::from_millis(600)).await;
        assert!(matches!(answer, Err(EngineError::Busy)), "{answer:?}");
        assert!(start.elapsed() < Duration::from_millis(600), "answered before the deadline");
        holder.execute_batch("ROLLBACK").unwrap();
        assert_eq!(engine.submit(2, Instant::now() + Duration::from_secs(5)).await.unwrap(), 20);
    }

    #[tokio::test]
    async fn a_write_returns_its_result_once_committed_and_an_error_fails_it_alone() {
        let (_dir, path, engine) = engine();
        let insert = |conn: &Connection| {
            conn.execute("INSERT INTO t (v) VALUES (5)", [])?;
            Ok(conn.last_insert_rowid())
        };
        assert_eq!(engine.write(false, insert).await.unwrap(), 1);
        assert_eq!(engine.write(true, insert).await.unwrap(), 2);
        assert_eq!(stored(&path), vec![5, 5]);
        let failed = engine.write(true, |conn| conn.execute("INSERT INTO nowhere (v) VALUES (1)", [])).await;
        assert!(matches!(&failed, Err(EngineError::Failed(e)) if e.contains("nowhere")), "{failed:?}");
        assert_eq!(engine.submit(2, Instant::now() + Duration::from_secs(5)).await.unwrap(), 20);
        assert_eq!(stored(&path), vec![2, 5, 5]);
    }

    #[tokio::test]
    async fn a_synced_write_returns_only_after_a_sync_of_the_log() {
        let (_dir, _path, engine) = engine();
        let insert = |conn: &Connection| conn.execute("INSERT INTO t (v) VALUES (5)", []);
        engine.write(false, insert).await.unwrap();
        assert_eq!(engine.log.syncs(), 0, "a write that is not synced waits for no sync");
        engine.write(true, insert).await.unwrap();
        assert_eq!(engine.log.syncs(), 1);
    }

    #[tokio::test]
    async fn a_synced_write_through_a_symbolic_link_syncs_the_log_beside_its_target() {
        let (dir, path) = schema();
        let link = dir.path().join("elsewhere").join("link.db");
        std::fs::create_dir(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let engine = Engine::start(&link, WriteTurns::default(), insert_or_fail, ends_in_one, one_by_one).unwrap();
        let insert = |conn: &Connection| conn.execute("INSERT INTO t (v) VALUES (5)", []);
        let written = engine.write(true, insert).await;
        assert!(written.is_ok(), "{written:?}");
        assert_eq!(engine.log.syncs(), 1);
        assert_eq!(stored(&path), vec![5]);
    }

    /// A write that inserts `v` and answers the `synchronous` setting its batch runs with
    /// (2 FULL, 1 NORMAL), counting its runs; answered after a sync of the log with `log`.
    fn insert_and_tell(
        log: Option<&LogSync>,
        v: i64,
        runs: &Arc<AtomicUsize>,
    ) -> (Pending<i64, i64>, oneshot::Receiver<Result<i64, EngineError>>) {
        let runs = runs.clone();
        let (tx, rx) = oneshot::channel();
        let write = move |conn: &Connection| {
            runs.fetch_add(1, Ordering::Relaxed);
            conn.execute("INSERT INTO t (v) VALUES (?1)", [v])?;
            conn.pragma_query_value(None, "synchronous", |r| r.get(0))
        };
        let pending = Pending::write(log, write, move |result| {
            let _ = tx.send(result);
        });
        (pending, rx)
    }

    #[test]
    fn a_write_in_a_batch_that_rolls_back_runs_again_alone_and_a_synced_one_waits_for_a_sync() {
        let (_dir, path) = schema();
        let conn = open(&path).unwrap();
        let log = LogSync::start(&path).unwrap();
        let mut stmts = Prepared::new(&conn).unwrap();
        let mut memory = Memory::load(&conn).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let decision = |job| {
            let (reply, answer) = oneshot::channel();
            (Pending::decide(job, deadline, oneshot_reply(reply)), answer)
        };
        let runs = Arc::new(AtomicUsize::new(0));
        // A decision, a synced write, then a decision that fails the batch.
        let ((two, two_answer), (write, written), (bad, bad_answer)) =
            (decision(2), insert_and_tell(Some(&log), 7, &runs), decision(-1));
        let mut batch = vec![two, write, bad];
        decide_batch(&conn, None, &mut stmts, &mut memory, &mut batch, &mut insert_or_fail, ends_in_one);
        // The engine's commit does not sync (NORMAL); the log-sync thread did, before the answer.
        assert_eq!(written.blocking_recv().unwrap().unwrap(), 1, "committed with synchronous = NORMAL");
        assert_eq!(log.syncs(), 1);
        assert_eq!(runs.load(Ordering::Relaxed), 2, "run in the batch, then again alone");
        assert_eq!(two_answer.blocking_recv().unwrap().unwrap(), 20);
        assert!(matches!(bad_answer.blocking_recv().unwrap(), Err(EngineError::Failed(_))));
        assert_eq!(stored(&path), vec![2, 7]);
        // A write that is not synced waits for no sync.
        let (write, written) = insert_and_tell(None, 8, &runs);
        let (three, three_answer) = decision(3);
        let mut batch = vec![write, three];
        decide_batch(&conn, None, &mut stmts, &mut memory, &mut batch, &mut insert_or_fail, ends_in_one);
        assert_eq!(written.blocking_recv().unwrap().unwrap(), 1, "NORMAL");
        assert_eq!(three_answer.blocking_recv().unwrap().unwrap(), 31);
        assert_eq!(stored(&path), vec![2, 3, 7, 8]);
        assert_eq!(log.syncs(), 1);
    }
}
