//! Wrong-passcode counts of the SQLite verification engine, kept in its memory.
//!
//! On PostgreSQL every node counts a user's failures in SQL over `passcode_failures` and
//! its `(user_id, at)` index. On SQLite that index put each Reject's write on a page of its
//! own when users come at random, which made Rejects the slowest answer (BENCHMARKS.md).
//! So on SQLite the table is an append-only log without that index (migration 0007): a row
//! per wrong passcode, and a row with `cleared = 1` where a right passcode or an
//! administrator's unlock resets the count. The engine keeps each user's recent failure
//! times here, appends its own rows, and at the start of every batch reads the rows after
//! the last id it has seen, so that another process's rows (`user unlock` from the CLI, a
//! second server on the same file) count as well. It replays the log at start.
//!
//! Reading "the rows after the last id seen" needs ids that are never handed out twice.
//! Since migration 0009 the table has no `AUTOINCREMENT` (its bookkeeping in every insert
//! took about 15 % of a Reject's CPU, BENCHMARKS.md); rowids come above the largest id
//! present, and the newest row is never deleted: the prune keeps it, and a deleted user's
//! rows stay, followed by a reset a trigger appends.
//!
//! A batch's own rows are written together at its end ([`Failures::flush`]), in as few
//! statements as [`APPEND_CHUNKS`] allows.
//! A batch's own changes are undone if the batch rolls back, as its rows are.

use std::collections::HashMap;

use rusqlite::{Connection, Statement, params};

/// No domain's window is longer (`ThrottlePolicy::validate`): older failures never count.
pub const LONGEST_WINDOW_SECS: i64 = 7 * 24 * 3600;
/// Most failure times kept per user: no domain's limit is higher, and a throttled user's
/// guesses are not recorded.
const MOST_PER_USER: usize = 1000;
/// Failures recorded between two sweeps of users whose failures have all aged out.
const SWEEP_EVERY: u32 = 100_000;

/// Reads the log's rows after an id, oldest first.
pub const ROWS_AFTER: &str = "SELECT id, user_id, at, cleared FROM passcode_failures WHERE id > ?1 ORDER BY id";
/// Appends a failure (`cleared` 0) or a reset (1).
pub const APPEND: &str = "INSERT INTO passcode_failures (user_id, at, cleared) VALUES (?1, ?2, ?3)";
/// The row counts of the engine's appending statements, 1, 2, 4 … 64: a batch's rows go out
/// in at most one statement per bit of their count below 64, and 64 at a time beyond.
pub const APPEND_CHUNKS: usize = 7;

/// A log row to append: user id, time, `cleared`.
pub type LogRow = [i64; 3];

/// [`APPEND`] for `rows` rows at once.
pub fn append_rows_sql(rows: usize) -> String {
    let values = vec!["(?, ?, ?)"; rows].join(", ");
    format!("INSERT INTO passcode_failures (user_id, at, cleared) VALUES {values}")
}

/// Appends `rows` in order through `statements` (statement `i` appends 2^i rows, from
/// [`append_rows_sql`]) and returns the last row's id.
pub fn append_rows(statements: &mut [Statement<'_>], conn: &Connection, mut rows: &[LogRow]) -> rusqlite::Result<i64> {
    while !rows.is_empty() {
        let i = rows.len().min(1 << (APPEND_CHUNKS - 1)).ilog2() as usize;
        let (chunk, rest) = rows.split_at(1 << i);
        statements[i].execute(rusqlite::params_from_iter(chunk.iter().flatten()))?;
        rows = rest;
    }
    Ok(conn.last_insert_rowid())
}

/// Each user's recent failure times, oldest first, as of the last log row seen.
#[derive(Debug, Default)]
pub struct Failures {
    times: HashMap<i64, Vec<i64>>,
    /// The id of the last log row applied.
    last_seen: i64,
    /// Each user's times before the open batch first changed them, and `last_seen` then.
    undo: HashMap<i64, Option<Vec<i64>>>,
    undo_last_seen: i64,
    /// The open batch's rows, written by [`Failures::flush`].
    pending: Vec<LogRow>,
    since_sweep: u32,
}

impl Failures {
    /// Replays the log: every row of the longest possible window before `now`.
    pub fn load(conn: &Connection, now: i64) -> rusqlite::Result<Self> {
        let mut failures = Self::default();
        let mut stmt = conn.prepare(ROWS_AFTER)?;
        failures.read_new(&mut stmt)?;
        failures.forget_before(now - LONGEST_WINDOW_SECS);
        Ok(failures)
    }

    /// Applies the rows other connections have added since the last call; call it at the
    /// start of a batch, inside its transaction (the write lock held, so the batch's own
    /// rows follow).
    pub fn read_new(&mut self, rows_after: &mut Statement<'_>) -> rusqlite::Result<()> {
        let mut rows = rows_after.query(params![self.last_seen])?;
        while let Some(row) = rows.next()? {
            let (id, user_id, at, cleared): (i64, i64, i64, i64) = (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
            if cleared != 0 {
                self.times.remove(&user_id);
            } else {
                push(self.times.entry(user_id).or_default(), at);
            }
            self.last_seen = id;
        }
        self.undo.clear();
        self.undo_last_seen = self.last_seen;
        Ok(())
    }

    /// The user's failures after `since`.
    pub fn count(&self, user_id: i64, since: i64) -> i64 {
        self.times.get(&user_id).map_or(0, |t| t.iter().filter(|&&at| at > since).count() as i64)
    }

    /// Records a failure at `now` and forgets the user's failures at or before
    /// `forget_before`; its log row is written by [`Failures::flush`].
    pub fn record(&mut self, user_id: i64, now: i64, forget_before: i64) {
        self.save(user_id);
        let times = self.times.entry(user_id).or_default();
        times.retain(|&at| at > forget_before);
        push(times, now);
        self.pending.push([user_id, now, 0]);
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.since_sweep = 0;
            self.forget_before(now - LONGEST_WINDOW_SECS);
        }
    }

    /// Resets the user's count at `now`; its log row is written by [`Failures::flush`].
    pub fn clear(&mut self, user_id: i64, now: i64) {
        self.save(user_id);
        self.times.remove(&user_id);
        self.pending.push([user_id, now, 1]);
    }

    /// Writes the open batch's rows, in the order recorded, before its commit: `append`
    /// writes them and returns the last one's id. If it fails, the batch must roll back.
    pub fn flush(&mut self, append: impl FnOnce(&[LogRow]) -> rusqlite::Result<i64>) -> rusqlite::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.last_seen = append(&self.pending)?;
        self.pending.clear();
        Ok(())
    }

    /// The open batch committed: its changes stay.
    pub fn commit(&mut self) {
        debug_assert!(self.pending.is_empty(), "a batch committed without flushing its failure rows");
        self.undo.clear();
        self.undo_last_seen = self.last_seen;
    }

    /// The open batch rolled back: its changes are undone, as its log rows were (their ids
    /// may be handed out again).
    pub fn rollback(&mut self) {
        self.pending.clear();
        for (user_id, before) in self.undo.drain() {
            match before {
                Some(times) => self.times.insert(user_id, times),
                None => self.times.remove(&user_id),
            };
        }
        self.last_seen = self.undo_last_seen;
    }

    /// Keeps the user's times as they were before the open batch, once.
    fn save(&mut self, user_id: i64) {
        if !self.undo.contains_key(&user_id) {
            self.undo.insert(user_id, self.times.get(&user_id).cloned());
        }
    }

    fn forget_before(&mut self, cutoff: i64) {
        self.times.retain(|_, t| t.last().is_some_and(|&at| at > cutoff));
    }

    #[cfg(test)]
    fn users(&self) -> usize {
        self.times.len()
    }
}

/// Adds a time, dropping the oldest beyond [`MOST_PER_USER`].
fn push(times: &mut Vec<i64>, at: i64) {
    times.push(at);
    if times.len() > MOST_PER_USER {
        times.remove(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_db::{DOMAIN_AND_ALICE, migrate};

    /// A migrated database with users 1 and 2.
    fn database() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("f.db")).unwrap();
        migrate(&conn);
        conn.execute_batch(DOMAIN_AND_ALICE).unwrap();
        conn.execute_batch("INSERT INTO users (id, domain_id, username, created_at) VALUES (2, 1, 'bob', 0)").unwrap();
        (dir, conn)
    }

    fn append(conn: &Connection, user_id: i64, at: i64, cleared: i64) -> rusqlite::Result<i64> {
        conn.execute(APPEND, params![user_id, at, cleared])?;
        Ok(conn.last_insert_rowid())
    }

    /// Writes `f`'s open batch through the engine's statements ([`append_rows`]).
    fn flush(f: &mut Failures, conn: &Connection) {
        let mut stmts: Vec<_> = (0..APPEND_CHUNKS).map(|i| conn.prepare(&append_rows_sql(1 << i)).unwrap()).collect();
        f.flush(|rows| append_rows(&mut stmts, conn, rows)).unwrap();
    }

    #[test]
    fn failures_count_inside_the_window_and_a_clear_resets_them() {
        let (_dir, conn) = database();
        let mut f = Failures::load(&conn, 1000).unwrap();
        for at in [900, 950, 1000] {
            f.record(1, at, 0);
        }
        flush(&mut f, &conn);
        f.commit();
        assert_eq!(f.count(1, 940), 2);
        assert_eq!(f.count(1, 0), 3);
        assert_eq!(f.count(2, 0), 0);
        // Recording forgets what is at or before `forget_before`.
        f.record(1, 1010, 900);
        assert_eq!(f.count(1, 0), 3);
        f.clear(1, 1020);
        flush(&mut f, &conn);
        f.commit();
        assert_eq!(f.count(1, 0), 0);
    }

    #[test]
    fn the_log_replayed_at_start_gives_the_same_counts() {
        let (_dir, conn) = database();
        let mut f = Failures::load(&conn, 1000).unwrap();
        for (user, at) in [(1, 900), (2, 910), (1, 920)] {
            f.record(user, at, 0);
        }
        f.clear(2, 930);
        f.record(2, 940, 0);
        flush(&mut f, &conn);
        f.commit();
        let replayed = Failures::load(&conn, 1000).unwrap();
        assert_eq!((replayed.count(1, 0), replayed.count(2, 0)), (2, 1));
        assert_eq!(replayed.last_seen, f.last_seen);
        // A week later nothing is left to count.
        let later = Failures::load(&conn, 1000 + LONGEST_WINDOW_SECS).unwrap();
        assert_eq!(later.users(), 0);
    }

    #[test]
    fn rows_another_connection_added_are_read_at_the_next_batch() {
        let (dir, conn) = database();
        let mut f = Failures::load(&conn, 1000).unwrap();
        f.record(1, 900, 0);
        flush(&mut f, &conn);
        f.commit();
        // Another process: a failure of bob, then an unlock of alice.
        let other = Connection::open(dir.path().join("f.db")).unwrap();
        append(&other, 2, 905, 0).unwrap();
        append(&other, 1, 906, 1).unwrap();
        let mut stmt = conn.prepare(ROWS_AFTER).unwrap();
        f.read_new(&mut stmt).unwrap();
        assert_eq!((f.count(1, 0), f.count(2, 0)), (0, 1));
        // Read once only.
        f.read_new(&mut stmt).unwrap();
        assert_eq!(f.count(2, 0), 1);
    }

    #[test]
    fn a_rolled_back_batch_leaves_no_trace() {
        let (_dir, conn) = database();
        let mut f = Failures::load(&conn, 1000).unwrap();
        f.record(1, 900, 0);
        flush(&mut f, &conn);
        f.commit();
        let mut stmt = conn.prepare(ROWS_AFTER).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        f.read_new(&mut stmt).unwrap();
        f.record(1, 910, 0);
        f.record(2, 910, 0);
        f.clear(1, 920);
        flush(&mut f, &conn);
        conn.execute_batch("ROLLBACK").unwrap();
        f.rollback();
        assert_eq!((f.count(1, 0), f.count(2, 0)), (1, 0));
        // The ids the rolled-back rows had are handed out again and read as new.
        let other = append(&conn, 2, 930, 0).unwrap();
        f.read_new(&mut stmt).unwrap();
        assert_eq!(f.count(2, 0), 1);
        assert_eq!(f.last_seen, other);
    }

    #[test]
    fn a_failed_flush_leaves_nothing_once_the_batch_rolls_back() {
        let (_dir, conn) = database();
        let mut f = Failures::load(&conn, 1000).unwrap();
        f.record(1, 900, 0);
        assert!(f.flush(|_| Err(rusqlite::Error::QueryReturnedNoRows)).is_err());
        f.rollback();
        assert_eq!((f.count(1, 0), f.last_seen), (0, 0));
        // Nothing of it is written with the next batch.
        f.record(2, 910, 0);
        flush(&mut f, &conn);
        f.commit();
        let users: Vec<i64> = conn
            .prepare("SELECT user_id FROM passcode_failures")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(users, [2]);
    }

    /// A batch's rows go out in chunks of 64, 32 … 1, in the order recorded, and the log
    /// reads back what was recorded whatever the count.
    #[test]
    fn a_batchs_rows_are_appended_in_order_in_chunks() {
        let (_dir, conn) = database();
        let mut f = Failures::load(&conn, 1000).unwrap();
        let mut expected = Vec::new();
        for count in [1, 2, 3, 13, 64, 70, 127] {
            for k in 0..count {
                let (user, at) = (1 + k % 2, 100 + expected.len() as i64);
                if k % 5 == 4 {
                    f.clear(user, at);
                    expected.push([user, at, 1]);
                } else {
                    f.record(user, at, 0);
                    expected.push([user, at, 0]);
                }
            }
            flush(&mut f, &conn);
            f.commit();
            let max: i64 = conn.query_row("SELECT max(id) FROM passcode_failures", [], |r| r.get(0)).unwrap();
            assert_eq!(f.last_seen, max, "after {count} rows");
        }
        let mut stmt = conn.prepare("SELECT user_id, at, cleared FROM passcode_failures ORDER BY id").unwrap();
        let rows: Vec<LogRow> = stmt
            .query_map([], |r| Ok([r.get(0)?, r.get(1)?, r.get(2)?]))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(rows, expected);
        let replayed = Failures::load(&conn, 1000).unwrap();
        assert_eq!((replayed.count(1, 0), replayed.count(2, 0)), (f.count(1, 0), f.count(2, 0)));
    }

    /// A store on a fresh SQLite file holding alice, and a connection of its own to it.
    async fn store_with_alice() -> (tempfile::TempDir, super::super::Store, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.db");
        let store = super::super::Store::open(&format!("sqlite://{}", path.display())).await.unwrap();
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(DOMAIN_AND_ALICE).unwrap();
        (dir, store, conn)
    }

    #[tokio::test]
    async fn pruning_deletes_the_logs_front_older_than_every_window() {
        let (_dir, store, conn) = store_with_alice().await;
        let now = 10_000;
        // Old rows, a reset, then the first row inside the window; after it one stamped
        // early (a clock step) stays, as everything after the first recent row does.
        for (at, cleared) in [(now - 1000, 0), (now - 900, 1), (now - 100, 0), (now - 1000, 0), (now - 50, 0)] {
            append(&conn, 1, at, cleared).unwrap();
        }
        store.prune(now).await.unwrap();
        let mut stmt = conn.prepare("SELECT id FROM passcode_failures ORDER BY id").unwrap();
        let ids: Vec<i64> = stmt.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap();
        assert_eq!(ids, vec![3, 4, 5]);
        // All of it old: all but the newest row goes, so new ids still come after the old
        // ones (the table has no AUTOINCREMENT since migration 0009).
        store.prune(now + 1000).await.unwrap();
        assert_eq!(append(&conn, 1, now + 1000, 0).unwrap(), 6);
        let ids: Vec<i64> = stmt.query_map([], |r| r.get(0)).unwrap().collect::<rusqlite::Result<_>>().unwrap();
        assert_eq!(ids, vec![5, 6]);
    }

    /// A deleted user's rows stay (no foreign key since migration 0009) and a reset
    /// follows them, so the log's ids keep growing and the engine forgets the user.
    #[test]
    fn a_deleted_user_leaves_its_rows_and_a_reset() {
        let (dir, conn) = database();
        let mut f = Failures::load(&conn, 1000).unwrap();
        f.record(1, 900, 0);
        f.record(2, 910, 0);
        f.record(2, 920, 0);
        flush(&mut f, &conn);
        f.commit();
        let seen = f.last_seen;
        // Another process deletes bob, whose rows are the newest, then unlocks alice.
        let other = Connection::open(dir.path().join("f.db")).unwrap();
        other.execute("DELETE FROM users WHERE id = 2", []).unwrap();
        let unlock = append(&other, 1, 930, 1).unwrap();
        assert!(unlock > seen + 1, "the unlock's id {unlock} comes after bob's reset, above {seen}");
        let mut stmt = conn.prepare(ROWS_AFTER).unwrap();
        f.read_new(&mut stmt).unwrap();
        assert_eq!((f.count(1, 0), f.count(2, 0)), (0, 0));
        assert_eq!(f.last_seen, unlock);
        let bobs: i64 =
            conn.query_row("SELECT count(*) FROM passcode_failures WHERE user_id = 2", [], |r| r.get(0)).unwrap();
        assert_eq!(bobs, 3, "two failures and the reset");
        let replayed = Failures::load(&conn, 1000).unwrap();
        assert_eq!((replayed.count(1, 0), replayed.count(2, 0)), (0, 0));
    }

    /// Migration 0009 carries AUTOINCREMENT's largest id over: rows deleted from the top
    /// before it do not let their ids be handed out again.
    #[test]
    fn ids_stay_above_the_largest_ever_handed_out_across_migration_0009() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("m.db")).unwrap();
        let (before, after): (Vec<_>, Vec<_>) = super::super::SQLITE_MIGRATIONS.iter().partition(|m| m.version < 9);
        for m in before {
            conn.execute_batch(m.sql.as_ref()).unwrap();
        }
        conn.execute_batch(DOMAIN_AND_ALICE).unwrap();
        for at in [1, 2, 3] {
            append(&conn, 1, at, 0).unwrap();
        }
        conn.execute("DELETE FROM passcode_failures WHERE id > 1", []).unwrap();
        for m in after {
            conn.execute_batch(m.sql.as_ref()).unwrap();
        }
        assert_eq!(append(&conn, 1, 4, 0).unwrap(), 4);
        let replayed = Failures::load(&conn, 10).unwrap();
        assert_eq!(replayed.count(1, 0), 2, "the carried-over id is a reset of nobody");
    }

    #[tokio::test]
    async fn a_reset_on_a_sqlite_file_appends_its_marker_and_leaves_the_rows_to_the_prune() {
        let (_dir, store, conn) = store_with_alice().await;
        let mut f = Failures::load(&conn, 100).unwrap();
        let mut rows_after = conn.prepare(ROWS_AFTER).unwrap();
        for at in [90, 95] {
            append(&conn, 1, at, 0).unwrap();
        }
        f.read_new(&mut rows_after).unwrap();
        assert_eq!(f.count(1, 0), 2);
        // The administrator's unlock, from another connection (the CLI or the console).
        store.clear_passcode_failures(1).await.unwrap();
        let rows: Vec<(i64, i64)> = conn
            .prepare("SELECT at, cleared FROM passcode_failures ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(rows.iter().map(|r| r.1).collect::<Vec<_>>(), vec![0, 0, 1], "the rows stay, the marker follows");
        f.read_new(&mut rows_after).unwrap();
        assert_eq!(f.count(1, 0), 0, "the engine's count is reset");
        assert_eq!(store.passcode_failures_since(1, 0).await.unwrap(), 0, "and so is the SQL count");
    }

    #[test]
    fn a_user_keeps_at_most_the_highest_limit_of_times() {
        let mut times = Vec::new();
        for at in 0..(MOST_PER_USER as i64 + 5) {
            push(&mut times, at);
        }
        assert_eq!(times.len(), MOST_PER_USER);
        assert_eq!(times[0], 5);
    }
}
