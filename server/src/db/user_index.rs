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
//! Usernames never change, so an entry can only go wrong when its user is deleted: the name
//! may be created again with another id, and on SQLite a deleted id may be handed to
//! another user (ids are plain rowids). A trigger logs every deletion with the user's
//! domain and name in `user_deletions`; the engine reads the rows after the last one it has
//! seen at the start of every batch, inside its write transaction, and drops the deleted
//! user's entry, so every entry it uses is current. A name not in the map (a user created
//! since the engine started, or deleted) is looked up in SQLite, and the answer is kept.
//!
//! Names of up to [`INLINE`] bytes are kept inside the table's slots ([`Name`]): a lookup
//! then compares the name where it found the slot. With each name in an allocation of its
//! own, that comparison followed a pointer to memory outside the CPU's caches, once per
//! request at a million users (BENCHMARKS.md).
//!
//! Memory: about 70 bytes per user (the server's anonymous memory after start, 1,000,000
//! users: 69 MB, 84 MB with every name boxed), and 0.4 s at start to load them
//! (BENCHMARKS.md).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Instant;

use rusqlite::{Connection, Statement, params};

/// The deletions after an id, oldest first.
pub const DELETIONS_AFTER: &str =
    "SELECT id, user_id, domain_id, username FROM user_deletions WHERE id > ?1 ORDER BY id";

/// The longest name kept inside a slot: with its length and the variant's tag, a [`Name`]
/// takes 24 bytes, and a slot (a name and its id) 32, two to a cache line.
const INLINE: usize = 22;

/// A username as the index keeps it: inside the slot when short, on the heap otherwise.
/// Hashed and compared as its bytes, so a `&[u8]` finds it.
enum Name {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

const _: () = assert!(size_of::<Name>() == 24);

impl Name {
    fn new(name: &str) -> Self {
        let name = name.as_bytes();
        match u8::try_from(name.len()) {
            Ok(len) if name.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..name.len()].copy_from_slice(name);
                Self::Inline { len, bytes }
            }
            _ => Self::Heap(name.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Heap(name) => name,
        }
    }
}

impl Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

impl Hash for Name {
    /// As `[u8]` hashes, which `Borrow<[u8]>` requires.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

/// Usernames to ids, per domain.
#[derive(Default)]
pub struct UserIndex {
    ids: HashMap<i64, HashMap<Name, i64>>,
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

    /// The id of `username` in the domain, if known.
    pub fn get(&self, domain_id: i64, username: &str) -> Option<i64> {
        self.ids.get(&domain_id)?.get(username.as_bytes()).copied()
    }

    /// What SQLite answered for a name the map did not give: its id, or none.
    pub fn learn(&mut self, domain_id: i64, username: &str, id: Option<i64>) {
        match id {
            Some(id) => self.enter(domain_id, username, id),
            None => {
                if let Some(names) = self.ids.get_mut(&domain_id) {
                    names.remove(username.as_bytes());
                }
            }
        }
    }

    /// Drops the users deleted since the last call (by any connection, committed).
    pub fn read_new(&mut self, deletions_after: &mut Statement<'_>) -> rusqlite::Result<()> {
        let mut rows = deletions_after.query(params![self.last_seen])?;
        while let Some(row) = rows.next()? {
            self.last_seen = row.get(0)?;
            let (id, domain_id): (i64, i64) = (row.get(1)?, row.get(2)?);
            if let Some(names) = self.ids.get_mut(&domain_id) {
                let username = row.get_ref(3)?.as_str()?;
                // Only that user's entry: the name may have been entered since for a user
                // created again.
                if names.get(username.as_bytes()) == Some(&id) {
                    names.remove(username.as_bytes());
                }
            }
        }
        Ok(())
    }

    fn enter(&mut self, domain_id: i64, username: &str, id: i64) {
        self.ids.entry(domain_id).or_default().insert(Name::new(username), id);
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

        // bob deleted (by any connection), and his id, the largest, handed to carol: a
        // plain rowid comes back.
        conn.execute("DELETE FROM users WHERE id = 2", []).unwrap();
        conn.execute("INSERT INTO users (domain_id, username, created_at) VALUES (1, 'carol', 0)", []).unwrap();
        let carol: i64 = conn.query_row("SELECT id FROM users WHERE username = 'carol'", [], |r| r.get(0)).unwrap();
        assert_eq!(carol, 2, "SQLite reuses the id");
        assert_eq!(index.get(1, "bob"), Some(2), "not seen yet");
        index.read_new(&mut deletions).unwrap();
        assert_eq!(index.get(1, "bob"), None, "bob's entry is gone, not pointing at carol");
        assert_eq!(index.get(1, "alice"), Some(1));
        index.learn(1, "carol", Some(2));
        assert_eq!(index.get(1, "carol"), Some(2));

        // carol deleted and created again under a new id, which the engine looked up
        // before it read the deletion: her new entry stays.
        conn.execute("DELETE FROM users WHERE id = 2", []).unwrap();
        conn.execute("INSERT INTO users (id, domain_id, username, created_at) VALUES (7, 1, 'carol', 0)", []).unwrap();
        index.learn(1, "carol", Some(7));
        index.read_new(&mut deletions).unwrap();
        assert_eq!(index.get(1, "carol"), Some(7));

        // alice deleted for good.
        conn.execute("DELETE FROM users WHERE id = 1", []).unwrap();
        index.read_new(&mut deletions).unwrap();
        assert_eq!(index.get(1, "alice"), None);
        index.learn(1, "alice", None);
        assert_eq!(index.get(1, "alice"), None);

        // A fresh load starts after the deletions it has already seen.
        let mut reloaded = UserIndex::load(&conn).unwrap();
        reloaded.read_new(&mut deletions).unwrap();
        assert_eq!((reloaded.get(1, "carol"), reloaded.get(1, "alice"), reloaded.get(1, "bob")), (Some(7), None, None));
    }

    #[test]
    fn names_of_every_length_are_found_whole_and_only_whole() {
        let mut index = UserIndex::default();
        // Kept inside the slot up to INLINE bytes, on the heap beyond; multi-byte
        // characters count in bytes.
        let names =
            ["a", &"b".repeat(INLINE), &"c".repeat(INLINE + 1), &"d".repeat(64), "Ünïcødé-ünïcødé-ü", "éééééééééééé"];
        for (id, name) in (1..).zip(names) {
            index.learn(1, name, Some(id));
        }
        for (id, name) in (1..).zip(names) {
            assert_eq!(index.get(1, name), Some(id), "{name:?}");
            // A prefix or an extension of a known name is another name.
            let last = name.chars().last().unwrap().len_utf8();
            assert_eq!(index.get(1, &name[..name.len() - last]), None, "{name:?} less its last character");
            assert_eq!(index.get(1, &format!("{name}x")), None, "{name:?} and one more");
        }
        index.learn(1, &"c".repeat(INLINE + 1), None);
        assert_eq!((index.get(1, &"c".repeat(INLINE + 1)), index.get(1, &"b".repeat(INLINE))), (None, Some(2)));
    }
}
