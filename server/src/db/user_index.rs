//! The SQLite verification engine's index of users: each domain's usernames and their ids,
//! in memory.
//!
//! A RADIUS request names its user. Looking the name up in SQLite took two B-tree descents,
//! the `(domain_id, username)` index and then the user's row, and with many users both
//! leaves lie outside the CPU's caches: at 1,000,000 users in random order that was the
//! largest part of an Accept's cost (BENCHMARKS.md). Here the name gives the id from a hash
//! map, and the engine reads only what can change and stays cached: the domain's guessing
//! limits and the index of disabled users (migration 0010, `ENGINE_USER_BY_ID` in
//! `db::verify`).
//!
//! Usernames never change and ids are never reused, so an entry can only become wrong when
//! its user is deleted (a user created again under the same name gets a new id). A trigger
//! logs every deletion in `user_deletions`; the engine reads the rows after the last one it
//! has seen at the start of every batch, and a deleted user's entry is not used again. A
//! name not in the map (a user created since the engine started, or deleted) is looked up
//! in SQLite, and the answer is kept.
//!
//! Memory: about 85 bytes per user (85 MB at 1,000,000 users), and 0.4 s at start to load
//! them (BENCHMARKS.md).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use rusqlite::{Connection, Statement, params};

/// The deletions after an id, oldest first.
pub const DELETIONS_AFTER: &str = "SELECT id, user_id FROM user_deletions WHERE id > ?1 ORDER BY id";

/// Usernames to ids, per domain.
#[derive(Default)]
pub struct UserIndex {
    ids: HashMap<i64, HashMap<Box<str>, i64>>,
    /// Users deleted since they were entered: their entries are not used, and go at the
    /// next lookup of their name.
    deleted: HashSet<i64>,
    /// The last `user_deletions` row read.
    last_seen: i64,
}

impl UserIndex {
    /// Every user, with the deletions log's position, from one read snapshot.
    pub fn load(conn: &Connection) -> rusqlite::Result<Self> {
        let started = Instant::now();
        let tx = conn.unchecked_transaction()?;
        let last_seen = tx.query_row("SELECT COALESCE(MAX(id), 0) FROM user_deletions", [], |r| r.get(0))?;
        let mut index = Self { last_seen, ..Self::default() };
        let mut users = 0usize;
        let mut stmt = tx.prepare("SELECT domain_id, username, id FROM users")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            index.enter(row.get(0)?, row.get_ref(1)?.as_str()?, row.get(2)?);
            users += 1;
        }
        drop(rows);
        drop(stmt);
        tx.commit()?;
        tracing::info!(users, millis = started.elapsed().as_millis() as u64, "users indexed for RADIUS lookups");
        Ok(index)
    }

    /// The id of `username` in the domain, unless unknown or deleted since.
    pub fn get(&self, domain_id: i64, username: &str) -> Option<i64> {
        let id = *self.ids.get(&domain_id)?.get(username)?;
        (self.deleted.is_empty() || !self.deleted.contains(&id)).then_some(id)
    }

    /// What SQLite answered for a name the map did not give: its id, or none.
    pub fn learn(&mut self, domain_id: i64, username: &str, id: Option<i64>) {
        let names = self.ids.entry(domain_id).or_default();
        let old = match id {
            Some(id) => names.insert(username.into(), id),
            None => names.remove(username),
        };
        if let Some(old) = old.filter(|&old| Some(old) != id) {
            self.deleted.remove(&old);
        }
    }

    /// Reads the deletions logged since the last call (by any connection, committed).
    pub fn read_new(&mut self, deletions_after: &mut Statement<'_>) -> rusqlite::Result<()> {
        let mut rows = deletions_after.query(params![self.last_seen])?;
        while let Some(row) = rows.next()? {
            self.last_seen = row.get(0)?;
            self.deleted.insert(row.get(1)?);
        }
        Ok(())
    }

    fn enter(&mut self, domain_id: i64, username: &str, id: i64) {
        self.ids.entry(domain_id).or_default().insert(username.into(), id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::test_db::{DOMAIN_AND_ALICE, migrated};

    #[test]
    fn names_map_to_ids_until_their_user_is_deleted() {
        let (_dir, conn) = migrated();
        conn.execute_batch(DOMAIN_AND_ALICE).unwrap();
        conn.execute("INSERT INTO users (id, domain_id, username, created_at) VALUES (2, 1, 'bob', 0)", []).unwrap();
        let mut index = UserIndex::load(&conn).unwrap();
        let mut deletions = conn.prepare(DELETIONS_AFTER).unwrap();
        assert_eq!((index.get(1, "alice"), index.get(1, "bob")), (Some(1), Some(2)));
        assert_eq!((index.get(1, "carol"), index.get(2, "alice")), (None, None), "another name, another domain");

        // Deleted (by any connection) and created again under the same name: a new id.
        conn.execute("DELETE FROM users WHERE id = 2", []).unwrap();
        conn.execute("INSERT INTO users (id, domain_id, username, created_at) VALUES (3, 1, 'bob', 0)", []).unwrap();
        assert_eq!(index.get(1, "bob"), Some(2), "not seen yet");
        index.read_new(&mut deletions).unwrap();
        assert_eq!(index.get(1, "bob"), None, "the deleted id is not used");
        assert_eq!(index.get(1, "alice"), Some(1));
        index.learn(1, "bob", Some(3));
        assert_eq!(index.get(1, "bob"), Some(3));
        assert!(index.deleted.is_empty(), "the deleted id went with its entry");

        // Deleted for good.
        conn.execute("DELETE FROM users WHERE id = 1", []).unwrap();
        index.read_new(&mut deletions).unwrap();
        assert_eq!(index.get(1, "alice"), None);
        index.learn(1, "alice", None);
        assert!(index.deleted.is_empty() && index.get(1, "alice").is_none());

        // A fresh load starts after the deletions it has already seen.
        let mut reloaded = UserIndex::load(&conn).unwrap();
        reloaded.read_new(&mut deletions).unwrap();
        assert_eq!((reloaded.get(1, "bob"), reloaded.get(1, "alice")), (Some(3), None));
        assert!(reloaded.deleted.is_empty());
    }
}
