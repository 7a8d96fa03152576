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
//! Under a light but steady load (fewer than [`BUSY_BATCHES`] engine batches a round, as
//! while passcodes are issued) the log is copied only every [`COPY_EVERY`] rounds, and in
//! the rounds between this thread only syncs it (`fdatasync` of the `-wal` file, as the
//! log-sync thread does). Each copy lets the engine's next commit restart the log, and
//! SQLite syncs a restarted log's header on the engine's thread: copying every round took
//! a copy, a sync of the database file and that header sync every 20 ms, for a few frames
//! each (BENCHMARKS.md, Next steps item 24). The log is still synced every round in which
//! the engine committed, so what a power loss can take stays the same. Once the engine
//! pauses, the log is copied at the next round, as before; a busy engine gets a copy every
//! round, as before.
//!
//! The engine keeps SQLite's own checkpoint as a fallback at [`ENGINE_FALLBACK`] frames,
//! should this thread fall behind.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rusqlite::Connection;

use super::log_sync;
use super::{WriteTurns, wait_for_turn};

/// How often the log is synced, and copied unless the load is light.
const POLL: Duration = Duration::from_millis(20);
/// Engine batches in a round from which the log is copied every round.
const BUSY_BATCHES: u64 = 16;
/// Under a lighter load, the log is copied every this many rounds (and synced in between).
const COPY_EVERY: u32 = 5;
/// Frames in the log after which it is restarted. Each restart holds the engine back for a
/// sync, and at SQLite's own threshold, 1,000, those pauses set RADIUS p99 at 64 in flight:
/// 1.72 ms, against 1.27 ms at 2,000 (alternated runs, BENCHMARKS.md). 3,000 gave the same
/// p99 and a 10 % worse p99.9; beyond about 4,000 frames a page lookup searches a second
/// part of the log's index.
pub(super) const RESTART_AT: i64 = 2000;
/// How long a `RESTART` checkpoint waits for its turn to write and then for readers.
const RESTART_PATIENCE: Duration = Duration::from_millis(50);
/// The engine connection's `wal_autocheckpoint`: only reached if this thread falls behind.
pub const ENGINE_FALLBACK: i64 = 10_000;

/// Starts the checkpoint thread for the database file at `path`; it ends when `stop`'s
/// sender is dropped.
pub fn start(path: &Path, turns: WriteTurns, restarts: Arc<LogRestarts>, stop: Receiver<()>) -> anyhow::Result<()> {
    let conn = Connection::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(RESTART_PATIENCE)?;
    // The log beside the file SQLite opened (it resolves symbolic links).
    let log = log_sync::log_path(conn.path().map_or(path, Path::new));
    std::thread::Builder::new()
        .name("tessera-ckpt".into())
        .spawn(move || run(&conn, &log, &turns, &restarts, &stop))
        .context("cannot start the SQLite checkpoint thread")?;
    Ok(())
}

/// Between the checkpoint thread and the engine: whether the log should restart, how often
/// the engine restarted it, and how many batches the engine has committed.
#[derive(Default)]
pub struct LogRestarts {
    wanted: AtomicBool,
    by_engine: AtomicU64,
    batches: AtomicU64,
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

    /// On the engine's thread, after each batch has committed (or rolled back): its frames
    /// are in the log file, for this thread to sync.
    pub fn batch_done(&self) {
        self.batches.fetch_add(1, Ordering::Release);
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

/// Whether a round copies the log or only syncs it, counted in the engine's batches.
struct Rounds {
    /// Batches when the last round began, when the log was last copied, and last synced.
    seen: u64,
    copied: u64,
    synced: u64,
    /// Rounds since the last copy.
    since_copy: u32,
}

impl Rounds {
    fn new(batches: u64) -> Self {
        Self { seen: batches, copied: batches, synced: batches, since_copy: 0 }
    }

    /// Whether this round, with `batches` committed so far, only syncs the log (if the
    /// engine committed since the last sync). `restarting`: a restart of the log is due.
    fn sync_only(&mut self, batches: u64, restarting: bool) -> bool {
        let new = batches - self.seen;
        self.seen = batches;
        self.since_copy += 1;
        let paused = new == 0 && batches != self.copied;
        let light = new < BUSY_BATCHES && !restarting;
        if light && !paused && self.since_copy < COPY_EVERY {
            return true;
        }
        self.since_copy = 0;
        self.copied = batches;
        false
    }

    /// Whether the engine committed since the log was last synced or copied.
    fn unsynced(&self) -> bool {
        self.synced != self.seen && self.copied != self.seen
    }
}

fn run(conn: &Connection, wal: &Path, turns: &WriteTurns, restarts: &LogRestarts, stop: &Receiver<()>) {
    let mut failing = false;
    // Whether the last round asked the engine to restart the log.
    let mut asked = false;
    let mut rounds = Rounds::new(restarts.batches.load(Ordering::Acquire));
    loop {
        match stop.recv_timeout(POLL) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        // Every commit counted here is in the log file: a sync from now on covers it.
        if rounds.sync_only(restarts.batches.load(Ordering::Acquire), asked) {
            if rounds.unsynced() {
                match log_sync::sync(wal) {
                    Ok(()) => rounds.synced = rounds.seen,
                    // Copied next round instead, which syncs the log through SQLite.
                    Err(e) => {
                        tracing::warn!(error = e, "cannot sync the SQLite log; copying it next round");
                        rounds.since_copy = COPY_EVERY;
                    }
                }
            }
            continue;
        }
        let result = checkpoint(conn, "PASSIVE").and_then(|(busy, log, _)| {
            if busy != 0 || log < RESTART_AT {
                asked = false;
                return Ok(());
            }
            // Copy what the engine appended meanwhile, so that its restart has little left.
            checkpoint(conn, "PASSIVE")?;
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
        match result {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("WAL checkpoints work again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "WAL checkpoint failed; SQLite's own checkpoints take over");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh WAL database with a table `t`, a writer on it set up as the engine is, and
    /// the checkpoint thread running with `turns` (it stops when the sender is dropped).
    /// The writer's commits count as the engine's batches.
    fn writer_with_checkpoints(turns: &WriteTurns) -> (tempfile::TempDir, Writer, std::sync::mpsc::Sender<()>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.db");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        // As on the engine: SQLite's own checkpoint out of the way.
        writer.pragma_update(None, "wal_autocheckpoint", ENGINE_FALLBACK).unwrap();
        writer.execute_batch("CREATE TABLE t (v BLOB NOT NULL)").unwrap();
        let (keep, stop) = std::sync::mpsc::channel();
        let restarts = Arc::new(LogRestarts::default());
        start(&path, turns.clone(), restarts.clone(), stop).unwrap();
        (dir, Writer { conn: writer, restarts }, keep)
    }

    /// A writer that tells the checkpoint thread of each commit, as the engine does.
    struct Writer {
        conn: Connection,
        restarts: Arc<LogRestarts>,
    }

    impl Writer {
        fn insert(&self, bytes: i64) {
            self.conn.execute("INSERT INTO t (v) VALUES (zeroblob(?1))", [bytes]).unwrap();
            self.restarts.batch_done();
        }
    }

    /// The furthest the log reached, in frames: the WAL file's size.
    fn log_frames(dir: &tempfile::TempDir) -> u64 {
        std::fs::metadata(dir.path().join("c.db-wal")).unwrap().len() / (4096 + 24)
    }

    #[test]
    fn the_log_restarts_while_a_writer_keeps_committing() {
        let (dir, writer, _keep) = writer_with_checkpoints(&WriteTurns::default());
        // Four pages a commit, 3,000 commits: 12,000 frames (49 MB) without checkpoints. A
        // restarted log is written from its start again, so the file stops growing.
        for _ in 0..3000 {
            writer.insert(4 * 4000);
            std::thread::sleep(Duration::from_micros(200));
        }
        let frames = log_frames(&dir);
        assert!(frames < 3 * RESTART_AT as u64, "the log grew to {frames} frames");
    }

    #[test]
    fn the_log_restarts_while_a_writer_of_this_process_commits_back_to_back() {
        let turns = WriteTurns::default();
        let (dir, writer, _keep) = writer_with_checkpoints(&turns);
        // As the engine under a load of Rejects: each commit in its turn, the next at once.
        // SQLite's busy handler alone let the checkpoint miss every gap between them.
        let until = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < until {
            let _turn = wait_for_turn(&turns, until + Duration::from_secs(1)).unwrap();
            writer.insert(4 * 4000);
        }
        // 3,300–4,900 frames here with the checkpoint taking its turn (RESTART_AT 2,000),
        // over 14,000 (and growing) without.
        let frames = log_frames(&dir);
        assert!(frames < 4 * RESTART_AT as u64, "the log grew to {frames} frames");
    }

    #[test]
    fn rounds_copy_a_busy_or_paused_log_and_only_sync_a_lightly_loaded_one() {
        let mut rounds = Rounds::new(0);
        // Light: 4 batches a round; synced 4 rounds of 5, copied the fifth.
        let mut copies = Vec::new();
        for round in 1..=10u64 {
            let sync_only = rounds.sync_only(4 * round, false);
            assert_eq!(rounds.unsynced(), sync_only, "round {round}: every sync-only round has commits to sync");
            if sync_only {
                rounds.synced = rounds.seen;
            } else {
                copies.push(round);
            }
        }
        assert_eq!(copies, [5, 10]);
        assert!(rounds.sync_only(42, false) && rounds.unsynced());
        rounds.synced = rounds.seen;
        // Paused: copied at the first round without a batch, then neither copied nor synced.
        assert!(!rounds.sync_only(42, false));
        assert!(rounds.sync_only(42, false) && !rounds.unsynced());
        assert!(rounds.sync_only(42, false) && !rounds.unsynced());
        // Busy: copied every round.
        assert!((1..=5).all(|round| !rounds.sync_only(42 + BUSY_BATCHES * round, false)));
        // A restart due: copied, whatever the load.
        assert!(!rounds.sync_only(42 + BUSY_BATCHES * 5 + 1, true));
    }

    #[test]
    fn a_lightly_loaded_log_waits_for_its_round_and_is_copied_once_the_writer_pauses() {
        let (dir, writer, _keep) = writer_with_checkpoints(&WriteTurns::default());
        // The database file grows only when the log is copied into it.
        let copied = || std::fs::metadata(dir.path().join("c.db")).unwrap().len();
        let before = copied();
        // One commit every 10 ms, 3 rounds' worth: synced, not copied.
        let started = Instant::now();
        for _ in 0..6 {
            writer.insert(8000);
            std::thread::sleep(Duration::from_millis(10));
        }
        if started.elapsed() < POLL * (COPY_EVERY - 1) {
            assert_eq!(copied(), before, "copied under a light load before its round");
        }
        // Paused: copied within a round or two.
        let until = Instant::now() + Duration::from_secs(5);
        while copied() == before && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(copied() > before, "not copied after the writer paused");
    }
}
