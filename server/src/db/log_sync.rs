//! Syncs the write-ahead log to the disk for the engine's synced writes, on a thread of its
//! own, so that the engine's thread never waits for the disk.
//!
//! One write of every passcode request must be on the disk before the request is answered:
//! the PIN attempt, so that a power loss cannot give a guesser attempts back
//! ([`Engine::write`](super::engine::Engine::write)). Its batch used to commit with
//! `synchronous = FULL`, and the engine's thread sat in `fdatasync` while RADIUS requests
//! queued behind it: on a machine with slower syncs RADIUS p99 under full issuance load rose
//! to 2.0-3.4x idle, against 1.4-1.8x with no sync at all (BENCHMARKS.md, Next steps item
//! 22).
//!
//! Now the batch commits as every other (`synchronous = NORMAL`: SQLite has written the
//! commit's frames to the log file, not synced them) and hands the write's answer to this
//! thread, which syncs the log file and only then gives it out. A sync that starts after a
//! commit has returned puts that commit on the disk: the frames are in the file, and SQLite
//! syncs a restarted log's header itself, in either mode, before writing frames after it. If
//! a checkpoint has copied the commit into the database file in the meantime, it synced that
//! file first. Answers waiting together share one sync.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};

use anyhow::Context as _;

/// Called once the log has been synced (`Ok`), or with why it could not be.
pub type Waiter = Box<dyn FnOnce(Result<(), String>) + Send>;

/// The handle of the log-sync thread; cheap to clone. The thread ends when every handle is
/// gone, after answering what was handed to it.
#[derive(Clone)]
pub struct LogSync {
    waiters: Sender<Waiter>,
    syncs: Arc<AtomicU64>,
}

impl LogSync {
    /// Starts the thread that syncs the log of the SQLite database at `database`.
    pub fn start(database: &Path) -> anyhow::Result<Self> {
        let mut log = database.as_os_str().to_owned();
        log.push("-wal");
        let log = PathBuf::from(log);
        let (waiters, rx) = mpsc::channel();
        let syncs = Arc::new(AtomicU64::new(0));
        let counted = syncs.clone();
        std::thread::Builder::new()
            .name("tessera-logsync".into())
            .spawn(move || run(&log, &rx, &counted))
            .context("cannot start the thread that syncs the SQLite log")?;
        Ok(Self { waiters, syncs })
    }

    /// Calls `waiter` once a sync of the log that started after this call has ended.
    pub fn after_sync(&self, waiter: Waiter) {
        if let Err(refused) = self.waiters.send(waiter) {
            (refused.0)(Err("the thread that syncs the SQLite log has stopped".into()));
        }
    }

    /// How many syncs of the log have succeeded.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

fn run(log: &Path, waiters: &Receiver<Waiter>, syncs: &AtomicU64) {
    while let Ok(first) = waiters.recv() {
        // Every answer handed over before the sync starts is covered by it.
        let mut waiting = vec![first];
        waiting.extend(waiters.try_iter());
        let outcome = sync(log);
        match &outcome {
            Ok(()) => {
                syncs.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = e, "cannot sync the SQLite log; the writes waiting for it fail"),
        }
        for waiter in waiting {
            waiter(outcome.clone());
        }
    }
}

/// `fdatasync` of the log file, opened afresh each time: whichever file is at the path now
/// is the one SQLite writes. Closing it releases no lock of SQLite's (closing any descriptor
/// of a file drops the process's POSIX locks on that file): SQLite locks the database file
/// and the `-shm` file, never the log.
fn sync(log: &Path) -> Result<(), String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    file.sync_data().map_err(|e| format!("cannot sync {}: {e}", log.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter() -> (Waiter, Receiver<Result<(), String>>) {
        let (tx, rx) = mpsc::channel();
        (
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
            rx,
        )
    }

    #[test]
    fn a_waiter_is_answered_after_a_sync_of_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("t.db");
        std::fs::write(dir.path().join("t.db-wal"), b"frames").unwrap();
        let log = LogSync::start(&database).unwrap();
        let (first, first_answer) = waiter();
        let (second, second_answer) = waiter();
        log.after_sync(first);
        log.after_sync(second);
        assert_eq!(first_answer.recv().unwrap(), Ok(()));
        assert_eq!(second_answer.recv().unwrap(), Ok(()));
        assert!((1..=2).contains(&log.syncs()), "{} syncs", log.syncs());
    }

    #[test]
    fn a_log_that_cannot_be_synced_fails_its_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogSync::start(&dir.path().join("missing.db")).unwrap();
        let (only, answer) = waiter();
        log.after_sync(only);
        let outcome = answer.recv().unwrap();
        assert!(matches!(&outcome, Err(e) if e.contains("missing.db-wal")), "{outcome:?}");
        assert_eq!(log.syncs(), 0);
    }
}
