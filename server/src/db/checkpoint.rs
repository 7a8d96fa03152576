//! WAL checkpoints off the verification engine's thread.
//!
//! SQLite copies the write-ahead log back into the database file at a checkpoint. Left to
//! itself it does so inside the commit that takes the WAL past 1,000 pages, on the
//! committing thread: under load the engine stopped every ~80 ms for a checkpoint of about
//! a thousand pages and two fsyncs, and the requests of that batch and the next waited
//! (RADIUS p99 at 64 in flight 3.0–3.8 ms, BENCHMARKS.md). Letting the WAL grow instead is
//! worse: appending to a growing file makes every commit's fsync slower.
//!
//! This thread, with a connection of its own, copies the log concurrently (`PASSIVE`: it
//! never blocks the engine) every [`POLL`]. A passive checkpoint cannot restart the log
//! while the engine keeps appending (and a log that only grows makes every fsync dearer:
//! 19–21k Accepts/s at 16 in flight instead of 31–34k), so once the log holds
//! [`RESTART_AT`] frames the log is restarted with a `RESTART` checkpoint. That one holds
//! the engine back while it copies what the passive copies left and syncs, and makes the
//! next commit write the log from its start again. A second passive copy right before it
//! leaves only what the engine appended during the first: at [`RESTART_AT`] 2,000, each
//! alternated with the 1,000 of before, RADIUS p99.9 at 64 in flight was 13 % worse with
//! one copy and 5 % worse (within the runs' spread) with two.
//!
//! The engine runs it, between two batches ([`restart_here`]), when this thread asks. This
//! thread ran it itself before, in this process's turn to write ([`WriteTurns`]; with
//! SQLite's busy handler alone it missed the microseconds between back-to-back batches,
//! and the log grew to 9,000 frames in 3 s, each page lookup searching it: `walFindFrame`,
//! 11 % of the engine's time). But a saturated engine then queued behind a thread that had
//! yet to be scheduled, on two cores busy with RADIUS. Restarted by the engine, RADIUS
//! p99.9 at 64 in flight fell from 3.8 to 3.3 ms and from 3.6 to 3.3 ms, and p99 by 4–6 %,
//! in two sets of alternated runs (BENCHMARKS.md). If the engine has not restarted the log
//! one round after being asked (it is idle, or a reader held on), this thread does, in its
//! turn.
//!
//! SQLite syncs the database file after a checkpoint only if the engine appended nothing
//! while it copied, which under load it always has: the pages every round copied stayed
//! dirty in the kernel until the restart's sync, on the engine's thread, wrote them all
//! back, the longest pause of a busy engine (about 2 ms every 60 ms at 16 in flight,
//! BENCHMARKS.md). This thread now syncs the file itself before it asks for a restart
//! ([`DbFile`]), and the restart finds little left to write. (Synced after every round
//! instead, the pause was as short but RADIUS p99 17 % longer: 50 syncs a second that
//! compete with the RADIUS threads, against one per restart.)
//!
//! The engine keeps SQLite's own checkpoint as a fallback at [`ENGINE_FALLBACK`] frames,
//! should this thread fall behind.
//!
//! A round costs a wake-up, two file locks and a `PRAGMA` (about 120 µs of CPU here), so an
//! idle server spent 0.6 % of a core on 50 rounds a second that found nothing to copy. Once
//! two rounds in a row find the same log wholly copied and the engine ran no batch between
//! them, the thread sleeps until the engine's next batch wakes it
//! ([`LogRestarts::after_batch`]), or for [`IDLE_WAIT`]: a write from elsewhere (the pool's
//! or another process's, each of which syncs its own commits) that begins during the sleep
//! is copied at its end. A batch's frames are still copied, and the log synced, within a
//! round of its commit.

use std::fs::File;
use std::mem::ManuallyDrop;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rusqlite::Connection;

use super::{WriteTurns, wait_for_turn};

/// How often the log is copied.
const POLL: Duration = Duration::from_millis(20);
/// Frames in the log after which it is restarted. Each restart holds the engine back for a
/// sync, and at SQLite's own threshold, 1,000, those pauses set RADIUS p99 at 64 in flight:
/// 1.72 ms, against 1.27 ms at 2,000 (alternated runs, BENCHMARKS.md). 3,000 gave the same
/// p99 and a 10 % worse p99.9; beyond about 4,000 frames a page lookup searches a second
/// part of the log's index.
pub(super) const RESTART_AT: i64 = 2000;
/// How long the thread sleeps while the engine commits nothing.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How long a `RESTART` checkpoint waits for its turn to write and then for readers.
const RESTART_PATIENCE: Duration = Duration::from_millis(50);
/// The engine connection's `wal_autocheckpoint`: only reached if this thread falls behind.
pub const ENGINE_FALLBACK: i64 = 10_000;

/// Starts the checkpoint thread for the database file at `path`; it ends when `stop`'s
/// sender is dropped, and a message on it wakes the thread from its sleep
/// ([`LogRestarts::after_batch`]).
pub fn start(path: &Path, turns: WriteTurns, restarts: Arc<LogRestarts>, stop: Receiver<()>) -> anyhow::Result<()> {
    let conn = Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(RESTART_PATIENCE)?;
    let db = DbFile::open(path)?;
    std::thread::Builder::new()
        .name("tessera-ckpt".into())
        .spawn(move || run(&conn, db, &turns, &restarts, &stop))
        .context("cannot start the SQLite checkpoint thread")?;
    Ok(())
}

/// The database file, for syncing what a copy of the log wrote into it. Never closed:
/// closing any descriptor of a file drops every POSIX lock this process holds on that
/// file, SQLite's own included. One descriptor stays open per engine started.
struct DbFile {
    file: ManuallyDrop<File>,
    /// The log's frames copied as of the last sync, so that a round that copied nothing
    /// new does not sync again.
    synced: i64,
}

impl DbFile {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self { file: ManuallyDrop::new(file), synced: 0 })
    }

    /// Syncs the file after a checkpoint that left `copied` frames of the log copied, unless
    /// no frame was copied since the last sync. SQLite syncs it itself only when the log's
    /// end has not moved during the copy, which under load it always has; what `PRAGMA
    /// wal_checkpoint` answers cannot tell the two apart (its "frames in the log" is the
    /// checkpoint's own view, so a copy reads as complete either way).
    fn sync_copied(&mut self, copied: i64, restarts: &LogRestarts) -> std::io::Result<()> {
        if copied == 0 || copied == self.synced {
            return Ok(());
        }
        self.file.sync_data()?;
        self.synced = copied;
        restarts.db_syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Between the checkpoint thread and the engine: whether the log should restart, and how
/// often the engine restarted it.
#[derive(Default)]
pub struct LogRestarts {
    wanted: AtomicBool,
    by_engine: AtomicU64,
    /// Syncs of the database file before a restart ([`DbFile`]).
    db_syncs: AtomicU64,
    /// The engine's batches so far, and whether the checkpoint thread sleeps until the next.
    batches: AtomicU64,
    sleeping: AtomicBool,
    /// The checkpoint thread's rounds, and its wake-ups by the engine.
    rounds: AtomicU64,
    woken: AtomicU64,
}

impl LogRestarts {
    /// Asks the engine to restart the log, as the checkpoint thread does.
    #[cfg(test)]
    pub(super) fn ask(&self) {
        self.wanted.store(true, Ordering::Release);
    }

    /// Whether the checkpoint thread asked for a restart since the last call.
    pub fn take_request(&self) -> bool {
        self.wanted.load(Ordering::Relaxed) && self.wanted.swap(false, Ordering::AcqRel)
    }

    /// How many times the engine restarted the log.
    pub fn by_engine(&self) -> u64 {
        self.by_engine.load(Ordering::Relaxed)
    }

    /// How many times the checkpoint thread synced the database file before a restart.
    #[cfg(test)]
    pub(super) fn db_syncs(&self) -> u64 {
        self.db_syncs.load(Ordering::Relaxed)
    }

    /// On the engine's thread after each batch: counts it, and wakes the checkpoint thread
    /// through `wake` (its `stop` channel) if it sleeps for want of writes. Sequentially
    /// consistent on both sides: either this sees the thread asleep, or the thread, after
    /// saying it sleeps, sees this batch counted and stays awake.
    pub fn after_batch(&self, wake: &Sender<()>) {
        self.batches.fetch_add(1, Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) && self.sleeping.swap(false, Ordering::SeqCst) {
            // The thread has ended if this fails; nothing to wake.
            let _ = wake.send(());
        }
    }
}

/// The engine's side of the checkpoint thread: what the two share, and the channel that wakes
/// the thread (and ends it, when dropped with the engine).
pub(super) struct Link {
    pub(super) restarts: Arc<LogRestarts>,
    pub(super) wake: Sender<()>,
}

impl Link {
    /// After each of the engine's batches ([`LogRestarts::after_batch`]).
    pub(super) fn after_batch(&self) {
        self.restarts.after_batch(&self.wake);
    }
}

/// On the engine's thread, between two batches, once [`LogRestarts::take_request`] said
/// the checkpoint thread asked: restarts the log, waiting for readers or another writer
/// only as long as the connection's busy handler lets it (the checkpoint thread asks again
/// next round, and restarts it itself).
pub fn restart_here(conn: &Connection, restarts: &LogRestarts) {
    match checkpoint(conn, "RESTART") {
        Ok((0, _, _)) => {
            restarts.by_engine.fetch_add(1, Ordering::Relaxed);
        }
        Ok(_) => tracing::debug!("WAL restart on the engine's thread found the database busy"),
        Err(e) => tracing::debug!(error = %e, "WAL restart on the engine's thread failed"),
    }
}

/// `(busy, frames in the log, frames copied)` after a checkpoint in `mode`.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<(i64, i64, i64)> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
}

fn run(conn: &Connection, mut db: DbFile, turns: &WriteTurns, restarts: &LogRestarts, stop: &Receiver<()>) {
    let mut failing =
        Trouble::new("WAL checkpoint failed; SQLite's own checkpoints take over", "WAL checkpoints work again");
    let mut sync_failing =
        Trouble::new("cannot sync the database file before a restart of the log", "the database file syncs again");
    // Whether the last round asked the engine to restart the log.
    let mut asked = false;
    let (mut wait, mut batches_seen) = (POLL, restarts.batches.load(Ordering::SeqCst));
    // The log's length if the last round left it wholly copied.
    let mut log_seen = None;
    loop {
        match stop.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) => {
                // Woken by a batch: its frames are copied a round from now.
                restarts.woken.fetch_add(1, Ordering::Relaxed);
                wait = POLL;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
        restarts.sleeping.store(false, Ordering::SeqCst);
        restarts.rounds.fetch_add(1, Ordering::Relaxed);
        let batches = restarts.batches.load(Ordering::SeqCst);
        // The log's length if this round left it wholly copied.
        let mut settled = None;
        let result = checkpoint(conn, "PASSIVE").and_then(|(busy, log, copied)| {
            if busy != 0 || log < RESTART_AT {
                asked = false;
                settled = (busy == 0 && copied == log).then_some(log);
                return Ok(());
            }
            // Copy what the engine appended meanwhile, so that its restart has little left,
            // and put what the copies wrote on the disk, so that its sync has little left.
            let (_, _, copied) = checkpoint(conn, "PASSIVE")?;
            sync_failing.report(db.sync_copied(copied, restarts));
            // The engine restarts the log between two batches, once per round asked. Asked
            // a round ago and not done (the engine is idle, or found the database busy):
            // here too.
            restarts.wanted.store(true, Ordering::Release);
            if !asked {
                asked = true;
                return Ok(());
            }
            // Busy (the engine or a reader held on past the patience) is not an error: the
            // next round tries again.
            if let Some(_turn) = wait_for_turn(turns, Instant::now() + RESTART_PATIENCE) {
                restarts.wanted.store(false, Ordering::Release);
                checkpoint(conn, "RESTART")?;
                asked = false;
            }
            Ok(())
        });
        failing.report(result);
        wait = POLL;
        // Asleep only after two rounds found the same log wholly copied and the engine ran
        // no batch between them: another connection's commits (the pool's, another
        // process's) lengthen the log, and keep the thread at its rounds as before.
        if settled.is_some() && settled == log_seen && batches == batches_seen {
            restarts.sleeping.store(true, Ordering::SeqCst);
            if restarts.batches.load(Ordering::SeqCst) == batches {
                wait = IDLE_WAIT;
            } else {
                restarts.sleeping.store(false, Ordering::SeqCst);
            }
        }
        (batches_seen, log_seen) = (batches, settled);
    }
}

/// A failure that may last: warned of once, and told once more when it is over, rather
/// than every round.
struct Trouble {
    failing: bool,
    warning: &'static str,
    over: &'static str,
}

impl Trouble {
    fn new(warning: &'static str, over: &'static str) -> Self {
        Self { failing: false, warning, over }
    }

    fn report<E: std::fmt::Display>(&mut self, result: Result<(), E>) {
        match result {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!("{}", self.over);
            }
            Ok(()) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                tracing::warn!(error = %e, "{}", self.warning);
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh WAL database `c.db` with a table `t`, a writer on it set up as the engine
    /// is, and the checkpoint thread running with `turns` and `restarts` (it stops when the
    /// sender is dropped).
    fn writer_with_checkpoints(
        turns: &WriteTurns,
        restarts: Arc<LogRestarts>,
    ) -> (tempfile::TempDir, Connection, std::sync::mpsc::Sender<()>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        // As on the engine: SQLite's own checkpoint out of the way.
        writer.pragma_update(None, "wal_autocheckpoint", ENGINE_FALLBACK).unwrap();
        writer.execute_batch("CREATE TABLE t (v BLOB NOT NULL)").unwrap();
        let (keep, stop) = std::sync::mpsc::channel();
        start(&path, turns.clone(), restarts, stop).unwrap();
        (dir, writer, keep)
    }

    /// The furthest the log reached, in frames: the WAL file's size.
    fn log_frames(dir: &tempfile::TempDir) -> u64 {
        std::fs::metadata(dir.path().join("c.db-wal")).unwrap().len() / (4096 + 24)
    }

    /// Whether this process holds a POSIX lock on the file at `path` (`/proc/locks`). The
    /// kernel writes that file in pages, one `read` each, and a line can be skipped when
    /// locks listed before it go away between two reads (other tests' SQLite connections
    /// lock and unlock all the time): once, with the whole suite running, a lock held
    /// throughout went unseen. So a lock counts as held if any of five reads lists it; one
    /// that is gone is missing from all of them.
    fn locked_by_this_process(path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        let inode = std::fs::metadata(path).unwrap().ino();
        let pid = std::process::id().to_string();
        (0..5).any(|_| {
            std::fs::read_to_string("/proc/locks").unwrap().lines().any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(1) == Some(&"POSIX")
                    && fields.get(4) == Some(&pid.as_str())
                    && fields.get(5).is_some_and(|dev_inode| dev_inode.ends_with(&format!(":{inode}")))
            })
        })
    }

    #[test]
    fn an_idle_thread_sleeps_until_the_engines_next_batch() {
        let restarts = Arc::new(LogRestarts::default());
        let (_dir, writer, keep) = writer_with_checkpoints(&WriteTurns::default(), restarts.clone());
        writer.execute("INSERT INTO t (v) VALUES (zeroblob(10))", []).unwrap();
        restarts.after_batch(&keep);
        // A round copies the write, the next finds nothing new, and the thread sleeps.
        let until = Instant::now() + Duration::from_secs(5);
        while !restarts.sleeping.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(POLL / 4);
        }
        let asleep = restarts.rounds.load(Ordering::Relaxed);
        std::thread::sleep(IDLE_WAIT / 2);
        let idle_rounds = restarts.rounds.load(Ordering::Relaxed) - asleep;
        assert!(idle_rounds <= 1, "{idle_rounds} rounds in {:?} with nothing written", IDLE_WAIT / 2);
        assert_eq!(restarts.woken.load(Ordering::Relaxed), 0);
        // The engine's next batch wakes it, and a round follows.
        writer.execute("INSERT INTO t (v) VALUES (zeroblob(10))", []).unwrap();
        restarts.after_batch(&keep);
        let until = Instant::now() + Duration::from_secs(5);
        while restarts.rounds.load(Ordering::Relaxed) == asleep + idle_rounds && Instant::now() < until {
            std::thread::sleep(POLL / 4);
        }
        assert_eq!(restarts.woken.load(Ordering::Relaxed), 1, "the batch did not wake the thread");
        assert!(restarts.rounds.load(Ordering::Relaxed) > asleep + idle_rounds);
    }

    #[test]
    fn the_database_file_is_synced_before_a_restart_through_a_descriptor_never_closed() {
        let restarts = Arc::new(LogRestarts::default());
        let (dir, writer, keep) = writer_with_checkpoints(&WriteTurns::default(), restarts.clone());
        let path = dir.path().join("c.db");
        for _ in 0..3000 {
            writer.execute("INSERT INTO t (v) VALUES (zeroblob(4 * 4000))", []).unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
        assert!(restarts.db_syncs() > 0, "the log passed {RESTART_AT} frames and the file was never synced");
        // In WAL mode the writer's connection holds a shared lock on the file while open.
        assert!(locked_by_this_process(&path), "the writer holds no lock to lose");
        drop(keep);
        std::thread::sleep(POLL * 5);
        assert!(locked_by_this_process(&path), "the checkpoint thread's end dropped the writer's lock on the file");
        writer.execute("INSERT INTO t (v) VALUES (zeroblob(10))", []).unwrap();
    }

    #[test]
    fn the_log_restarts_while_a_writer_keeps_committing() {
        let (dir, writer, _keep) = writer_with_checkpoints(&WriteTurns::default(), Arc::default());
        // Four pages a commit, 3,000 commits: 12,000 frames (49 MB) without checkpoints. A
        // restarted log is written from its start again, so the file stops growing.
        for _ in 0..3000 {
            writer.execute("INSERT INTO t (v) VALUES (zeroblob(4 * 4000))", []).unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
        let frames = log_frames(&dir);
        assert!(frames < 3 * RESTART_AT as u64, "the log grew to {frames} frames");
    }

    #[test]
    fn the_log_restarts_while_a_writer_of_this_process_commits_back_to_back() {
        let turns = WriteTurns::default();
        let (dir, writer, _keep) = writer_with_checkpoints(&turns, Arc::default());
        // As the engine under a load of Rejects: each commit in its turn, the next at once.
        // SQLite's busy handler alone let the checkpoint miss every gap between them.
        let until = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < until {
            let _turn = wait_for_turn(&turns, until + Duration::from_secs(1)).unwrap();
            writer.execute("INSERT INTO t (v) VALUES (zeroblob(4 * 4000))", []).unwrap();
        }
        // 3,300–4,900 frames here with the checkpoint taking its turn (RESTART_AT 2,000),
        // over 14,000 (and growing) without.
        let frames = log_frames(&dir);
        assert!(frames < 4 * RESTART_AT as u64, "the log grew to {frames} frames");
    }
}
