//! Point reads of a SQLite file on the calling thread, for the token API's two lookups per
//! request (the domain, the device).
//!
//! Through the pool each read crossed to sqlx's worker thread and back: about six thread
//! wake-ups and 0.14 ms of that thread's CPU per passcode, and on two cores busy with
//! argon2id each wake-up could pre-empt an argon2id thread (BENCHMARKS.md, Next steps item
//! 19). Read here, a lookup by a unique key takes some microseconds of the runtime's thread.
//! (A read that must go to the disk holds that thread as long; the domains and the pages of
//! the devices that ask for passcodes are few and stay in the page cache. RADIUS has
//! threads of its own.)
//!
//! A read never waits: the connections have no busy handler, and a read that finds the
//! file busy (SQLite's WAL-index being rebuilt, say) is reported as [`Busy`], for the
//! caller to read through the pool instead. The connections refuse writes (`query_only`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context as _;
use rusqlite::{Connection, ErrorCode, OpenFlags};

/// Connections kept for reuse; more are opened when more reads run at once, and closed after.
const KEPT: usize = 4;

/// The file was busy; read it another way.
#[derive(Debug, thiserror::Error)]
#[error("the database file is busy")]
pub struct Busy;

/// Read-only connections to one SQLite file.
#[derive(Debug)]
pub struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub fn new(path: &Path) -> Self {
        Self { path: path.to_owned(), idle: Mutex::new(Vec::new()) }
    }

    /// Runs `read` on one of the connections; [`Busy`] when SQLite found the file busy or
    /// locked.
    pub fn read<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> anyhow::Result<T> {
        let taken = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match taken {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = read(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < KEPT {
            idle.push(conn);
        }
        drop(idle);
        result.map_err(|e| match e.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => anyhow::Error::new(Busy),
            _ => anyhow::Error::new(e).context(format!("reading {}", self.path.display())),
        })
    }

    fn open(&self) -> anyhow::Result<Connection> {
        // A plain path, as the engine's: no `file:` URI interpretation.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        conn.pragma_update(None, "query_only", true)?;
        // rusqlite sets a 5 s busy timeout on every connection it opens.
        conn.busy_timeout(std::time::Duration::ZERO)?;
        Ok(conn)
    }
}

/// True when `e` is [`Busy`].
pub fn is_busy(e: &anyhow::Error) -> bool {
    e.is::<Busy>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with_rows() -> (tempfile::TempDir, PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER); INSERT INTO t VALUES ('a', 1);").unwrap();
        (dir, path, conn)
    }

    fn value_of(conn: &Connection, key: &str) -> rusqlite::Result<i64> {
        conn.prepare_cached("SELECT v FROM t WHERE k = ?1")?.query_row([key], |r| r.get(0))
    }

    #[test]
    fn reads_what_another_connection_committed_and_refuses_writes() {
        let (_dir, path, writer) = file_with_rows();
        let readers = Readers::new(&path);
        assert_eq!(readers.read(|c| value_of(c, "a")).unwrap(), 1);
        writer.execute("UPDATE t SET v = 2 WHERE k = 'a'", []).unwrap();
        assert_eq!(readers.read(|c| value_of(c, "a")).unwrap(), 2, "a kept connection sees the new commit");
        let write = readers.read(|c| c.execute("UPDATE t SET v = 3", [])).unwrap_err();
        assert!(!is_busy(&write), "{write:#}");
        assert_eq!(value_of(&writer, "a").unwrap(), 2);
    }

    #[test]
    fn a_kept_connection_holds_no_snapshot_that_would_stop_the_log_restarting() {
        let (_dir, path, writer) = file_with_rows();
        let readers = Readers::new(&path);
        readers.read(|c| value_of(c, "a")).unwrap();
        writer.execute("UPDATE t SET v = 2 WHERE k = 'a'", []).unwrap();
        readers.read(|c| value_of(c, "a")).unwrap();
        writer.execute("UPDATE t SET v = 3 WHERE k = 'a'", []).unwrap();
        // (busy, log frames, frames copied): busy when a reader still used the log.
        let (busy, _, _): (i64, i64, i64) =
            writer.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap();
        assert_eq!(busy, 0);
        assert_eq!(readers.idle.lock().unwrap().len(), 1, "the connection was kept");
    }

    #[test]
    fn a_file_held_by_another_connection_is_reported_busy_at_once() {
        let (_dir, path, holder) = file_with_rows();
        holder.pragma_update(None, "locking_mode", "EXCLUSIVE").unwrap();
        holder.execute("UPDATE t SET v = 2 WHERE k = 'a'", []).unwrap();
        let readers = Readers::new(&path);
        let started = std::time::Instant::now();
        let e = readers.read(|c| value_of(c, "a")).unwrap_err();
        assert!(is_busy(&e), "{e:#}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "no busy handler waited");
    }
}
