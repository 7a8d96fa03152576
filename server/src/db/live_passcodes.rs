//! The SQLite engine's copy of the unused, unexpired passcodes, by user: an Accept finds its
//! passcode here instead of in the `passcodes_user` index and the table's row, two pages
//! that at a million users are read from memory at random for every Accept (BENCHMARKS.md,
//! Next steps).
//!
//! The copy only says which row to try. The consumption stays the one conditional `UPDATE`
//! ([`CONSUME_LIVE`]), which also checks that the row still holds what the copy holds (the
//! user, the device, the passcode's hash), so a copy that went stale (a row deleted, a
//! passcode used through another connection) can refuse an Accept but never grant one. When
//! the copy has nothing (a wrong passcode, a row it has not seen) or the update changes
//! nothing, the check reads the stored rows as before.
//!
//! It follows the table as [`failures`](super::failures) follows its log: at the start of
//! each batch it reads the rows after the largest id it has seen, its own issues and other
//! connections' alike. Migration 0011 gave the table `AUTOINCREMENT`, so an id is never
//! handed out twice and no row is missed that way.

use std::collections::HashMap;

use rusqlite::{Statement, params};

use crate::domain::passcode::hashes_equal;

/// The rows after an id, oldest first; used and expired rows too, so the largest id seen
/// moves past them and they are not read again.
pub const ROWS_AFTER: &str =
    "SELECT id, user_id, device_id, hash, expires_at, used FROM passcodes WHERE id > ?1 ORDER BY id";

/// The single-use step for a passcode found in the copy: changes the row only while it is
/// the copy's passcode (same user, device and hash), unused and unexpired.
pub const CONSUME_LIVE: &str = "UPDATE passcodes SET used = 1 \
     WHERE id = ?1 AND user_id = ?2 AND device_id = ?3 AND hash = ?4 AND used = 0 AND expires_at > ?5";

/// How long between two sweeps of expired passcodes, unless the copy doubles first.
const SWEEP_EVERY_SECS: i64 = 600;

/// A live passcode in the copy: which row, whose device, until when, and the first 8 bytes
/// of its hash (enough to pick the row; the update compares the whole hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LivePasscode {
    pub id: i64,
    pub device_id: i64,
    expires_at: i64,
    tag: [u8; 8],
}

fn tag(hash: &[u8]) -> Option<[u8; 8]> {
    hash.get(..8)?.try_into().ok()
}

/// The copy. Most users hold one live passcode, kept in `newest`; the older ones of users
/// who hold several wait in `older`, oldest first.
#[derive(Debug, Default)]
pub struct LivePasscodes {
    newest: HashMap<i64, LivePasscode>,
    older: HashMap<i64, Vec<LivePasscode>>,
    /// Passcodes in `newest` and `older`.
    len: usize,
    last_seen: i64,
    swept_at: i64,
    len_after_sweep: usize,
}

impl LivePasscodes {
    /// Reads every live passcode (at the engine's start, after a lost run's were voided).
    pub fn load(rows_after: &mut Statement<'_>, now: i64) -> rusqlite::Result<Self> {
        let mut live = Self { swept_at: now, ..Self::default() };
        live.read_new(rows_after, now)?;
        live.len_after_sweep = live.len();
        Ok(live)
    }

    /// Passcodes in the copy.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the copy holds no passcode.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds the rows stored since the last call; call it at the start of a batch.
    pub fn read_new(&mut self, rows_after: &mut Statement<'_>, now: i64) -> rusqlite::Result<()> {
        let mut rows = rows_after.query(params![self.last_seen])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            self.last_seen = id;
            let (used, expires_at): (i64, i64) = (row.get(5)?, row.get(4)?);
            if used != 0 || expires_at <= now {
                continue;
            }
            let hash = row.get_ref(3)?.as_blob()?;
            // A hash of another length is not one this server wrote: left to the stored rows.
            let Some(tag) = tag(hash) else { continue };
            let passcode = LivePasscode { id, device_id: row.get(2)?, expires_at, tag };
            self.insert(row.get(1)?, passcode);
        }
        Ok(())
    }

    fn insert(&mut self, user_id: i64, passcode: LivePasscode) {
        self.len += 1;
        if let Some(previous) = self.newest.insert(user_id, passcode) {
            self.older.entry(user_id).or_default().push(previous);
        }
    }

    /// The user's newest live passcode whose hash starts as `hash` does, if the copy has one.
    pub fn find(&self, user_id: i64, hash: &[u8], now: i64) -> Option<LivePasscode> {
        let tag = tag(hash)?;
        let newest = self.newest.get(&user_id)?;
        let older = self.older.get(&user_id).into_iter().flatten().rev();
        std::iter::once(newest).chain(older).find(|p| p.expires_at > now && hashes_equal(&p.tag, &tag)).copied()
    }

    /// Drops a passcode from the copy: consumed, or no longer what the row holds.
    pub fn remove(&mut self, user_id: i64, id: i64) {
        if let Some(older) = self.older.get_mut(&user_id)
            && let Some(at) = older.iter().position(|p| p.id == id)
        {
            older.remove(at);
            self.len -= 1;
            if older.is_empty() {
                self.older.remove(&user_id);
            }
            return;
        }
        if self.newest.get(&user_id).is_some_and(|p| p.id == id) {
            self.len -= 1;
            match self.older.get_mut(&user_id).and_then(Vec::pop) {
                Some(next) => {
                    self.newest.insert(user_id, next);
                    if self.older.get(&user_id).is_some_and(Vec::is_empty) {
                        self.older.remove(&user_id);
                    }
                }
                None => {
                    self.newest.remove(&user_id);
                }
            }
        }
    }

    /// Forgets expired passcodes every [`SWEEP_EVERY_SECS`], or sooner once the copy has
    /// doubled since the last sweep, so that passcodes fetched and never used do not pile
    /// up. A sweep of a million entries takes milliseconds; consumed ones leave at once.
    pub fn sweep_if_due(&mut self, now: i64) {
        let len = self.len();
        if now - self.swept_at < SWEEP_EVERY_SECS && len < 2 * self.len_after_sweep + 1024 {
            return;
        }
        self.older.retain(|_, older| {
            older.retain(|p| p.expires_at > now);
            !older.is_empty()
        });
        let older = &mut self.older;
        self.newest.retain(|user_id, newest| {
            if newest.expires_at > now {
                return true;
            }
            // Expired: the user's next newest takes its place, if any.
            match older.get_mut(user_id).and_then(Vec::pop) {
                Some(next) => {
                    *newest = next;
                    true
                }
                None => false,
            }
        });
        self.older.retain(|_, older| !older.is_empty());
        self.len = self.newest.len() + self.older.values().map(Vec::len).sum::<usize>();
        self.swept_at = now;
        self.len_after_sweep = self.len();
    }
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    fn database() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE passcodes (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id BIGINT NOT NULL, \
             device_id BIGINT NOT NULL, hash BLOB NOT NULL, expires_at BIGINT NOT NULL, \
             used BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL DEFAULT 0)",
        )
        .unwrap();
        conn
    }

    fn hash(n: u8) -> [u8; 32] {
        [n; 32]
    }

    fn issue(conn: &Connection, user: i64, device: i64, h: u8, expires_at: i64) -> i64 {
        conn.execute(
            "INSERT INTO passcodes (user_id, device_id, hash, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![user, device, &hash(h)[..], expires_at],
        )
        .unwrap();
        conn.last_insert_rowid()
    }

    fn consume(conn: &Connection, user: i64, p: LivePasscode, h: u8, now: i64) -> bool {
        conn.execute(CONSUME_LIVE, params![p.id, user, p.device_id, &hash(h)[..], now]).unwrap() == 1
    }

    #[test]
    fn finds_live_passcodes_by_user_and_hash_newest_first() {
        let conn = database();
        let a = issue(&conn, 1, 10, 7, 100);
        let used = issue(&conn, 1, 10, 8, 100);
        conn.execute("UPDATE passcodes SET used = 1 WHERE id = ?1", [used]).unwrap();
        let expired = issue(&conn, 2, 20, 7, 40);
        let mut stmt = conn.prepare(ROWS_AFTER).unwrap();
        let mut live = LivePasscodes::load(&mut stmt, 50).unwrap();
        assert_eq!(live.len(), 1, "used and expired rows are not copied (expired: {expired})");
        assert_eq!(live.find(1, &hash(7), 50).map(|p| p.id), Some(a));
        assert_eq!(live.find(1, &hash(8), 50), None, "used");
        assert_eq!(live.find(2, &hash(7), 50), None, "another user's, expired");
        assert_eq!(live.find(1, &hash(7), 100), None, "expired since");

        // Rows stored later, by any connection, are read at the next call, once.
        let b = issue(&conn, 1, 11, 7, 200);
        let c = issue(&conn, 1, 10, 9, 200);
        live.read_new(&mut stmt, 60).unwrap();
        live.read_new(&mut stmt, 60).unwrap();
        assert_eq!(live.len(), 3);
        assert_eq!(live.find(1, &hash(7), 60).map(|p| p.id), Some(b), "the newest of two equal hashes");
        live.remove(1, b);
        assert_eq!(live.find(1, &hash(7), 60).map(|p| p.id), Some(a));
        live.remove(1, c);
        live.remove(1, a);
        assert_eq!((live.len(), live.find(1, &hash(7), 60)), (0, None));
        live.remove(1, a);
        assert_eq!(live.len(), 0, "removing twice counts once");
        assert!(live.newest.is_empty() && live.older.is_empty());
    }

    #[test]
    fn a_stale_copy_never_consumes_what_the_row_no_longer_holds() {
        let conn = database();
        let first = issue(&conn, 1, 10, 7, 100);
        let mut stmt = conn.prepare(ROWS_AFTER).unwrap();
        let live = LivePasscodes::load(&mut stmt, 50).unwrap();
        let copy = live.find(1, &hash(7), 50).unwrap();
        // Used through another connection: the update changes nothing.
        conn.execute("UPDATE passcodes SET used = 1 WHERE id = ?1", [first]).unwrap();
        assert!(!consume(&conn, 1, copy, 7, 50));
        // The row deleted and its id handed to another passcode of another user (possible
        // only without AUTOINCREMENT): the update checks user, device and hash.
        conn.execute("DELETE FROM passcodes", []).unwrap();
        conn.execute(
            "INSERT INTO passcodes (id, user_id, device_id, hash, expires_at) VALUES (?1, 2, 10, ?2, 100)",
            params![first, &hash(7)[..]],
        )
        .unwrap();
        assert!(!consume(&conn, 1, copy, 7, 50), "another user's row");
        conn.execute("UPDATE passcodes SET user_id = 1, device_id = 11 WHERE id = ?1", [first]).unwrap();
        assert!(!consume(&conn, 1, copy, 7, 50), "another device's row");
        conn.execute("UPDATE passcodes SET device_id = 10, hash = ?2 WHERE id = ?1", params![first, &hash(6)[..]])
            .unwrap();
        assert!(!consume(&conn, 1, copy, 7, 50), "another passcode");
        conn.execute("UPDATE passcodes SET hash = ?2 WHERE id = ?1", params![first, &hash(7)[..]]).unwrap();
        assert!(!consume(&conn, 1, copy, 7, 100), "expired");
        assert!(consume(&conn, 1, copy, 7, 50), "the same row, live");
        assert!(!consume(&conn, 1, copy, 7, 50), "once");
    }

    #[test]
    fn expired_passcodes_are_swept_and_a_users_next_takes_the_place() {
        let conn = database();
        let mut stmt = conn.prepare(ROWS_AFTER).unwrap();
        issue(&conn, 1, 10, 1, 100);
        let later = issue(&conn, 1, 10, 2, 1000);
        issue(&conn, 1, 10, 3, 100);
        issue(&conn, 2, 20, 4, 100);
        let mut live = LivePasscodes::load(&mut stmt, 0).unwrap();
        assert_eq!(live.len(), 4);
        live.sweep_if_due(SWEEP_EVERY_SECS - 1);
        assert_eq!(live.len(), 4, "not due");
        live.sweep_if_due(SWEEP_EVERY_SECS);
        assert_eq!(live.len(), 1);
        assert_eq!(live.find(1, &hash(2), SWEEP_EVERY_SECS).map(|p| p.id), Some(later));
        assert!(live.older.is_empty());

        // Doubling makes a sweep due at once.
        for n in 0..1030 {
            issue(&conn, 100 + n, 30, 5, 700);
        }
        live.read_new(&mut stmt, SWEEP_EVERY_SECS).unwrap();
        assert_eq!(live.len(), 1031);
        live.sweep_if_due(SWEEP_EVERY_SECS + 100);
        assert_eq!(live.len(), 1, "all 1,030 expired at 700");
    }
}
