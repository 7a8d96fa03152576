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
//! Names of up to [`INLINE`] bytes are kept inside the table's slots, beside their id and a
//! byte of their hash ([`Names`]): a lookup that finds its user where the hash points reads
//! one cache line. With each name in an allocation of its own, the comparison followed a
//! pointer to memory outside the CPU's caches, once per request at a million users; with the
//! standard library's map, whose control bytes lie apart from its slots, a lookup read two
//! lines (BENCHMARKS.md).
//!
//! Memory: 32 bytes a slot, the table a power of two at most three quarters full (1,000,000
//! users: 64 MiB), and 0.4–0.9 s at start to load them (BENCHMARKS.md).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::time::Instant;

use rusqlite::{Connection, Statement, params};

/// The deletions after an id, oldest first.
pub const DELETIONS_AFTER: &str =
    "SELECT id, user_id, domain_id, username FROM user_deletions WHERE id > ?1 ORDER BY id";

/// The longest name kept inside a slot: with the id, the length and the tag, a slot takes
/// 32 bytes, two to a cache line.
const INLINE: usize = 22;
/// `Slot::len` of a free slot.
const FREE: u8 = 0xFE;
/// `Slot::len` of a name longer than [`INLINE`]: `bytes` holds its place in `Names::long`.
const LONG: u8 = 0xFF;

/// One entry of a domain's table: the name (inside the slot when short), a byte of its hash
/// and the user's id, aligned so that no slot spans two cache lines.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Slot {
    id: i64,
    /// [`FREE`], [`LONG`], or the length of the name in `bytes`.
    len: u8,
    /// The hash's top byte: a slot holding another name is passed over without comparing
    /// names, and without following a long name to the heap.
    tag: u8,
    bytes: [u8; INLINE],
}

const _: () = assert!(size_of::<Slot>() == 32 && INLINE < FREE as usize);

impl Slot {
    /// Where a [`LONG`] slot's name is in `Names::long`.
    fn long_at(&self) -> usize {
        u32::from_le_bytes([self.bytes[0], self.bytes[1], self.bytes[2], self.bytes[3]]) as usize
    }
}

const FREE_SLOT: Slot = Slot { id: 0, len: FREE, tag: 0, bytes: [0; INLINE] };

/// One domain's usernames and ids: an open-addressing table with linear probing, at most
/// three quarters full.
///
/// The name, its tag and the id share one slot, so a lookup that finds its user where the
/// hash points reads one cache line; a table that keeps its control bytes apart from its
/// slots (as the standard library's does) reads two, each from memory at a million users
/// (BENCHMARKS.md, item 28). A deletion moves the entries after it back rather than
/// leaving a marker, so no lookup ever walks over dead slots.
struct Names {
    /// A power of two in length, or empty.
    slots: Box<[Slot]>,
    used: usize,
    /// Names longer than [`INLINE`], where their slots point; `None` once removed, and
    /// reused from `spare`.
    long: Vec<Option<Box<[u8]>>>,
    spare: Vec<u32>,
    hasher: RandomState,
}

impl Names {
    fn new() -> Self {
        Self { slots: Box::new([]), used: 0, long: Vec::new(), spare: Vec::new(), hasher: RandomState::new() }
    }

    fn hash(&self, name: &[u8]) -> u64 {
        self.hasher.hash_one(name)
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn name_of<'a>(&'a self, slot: &'a Slot) -> &'a [u8] {
        match slot.len {
            LONG => self.long[slot.long_at()].as_deref().unwrap_or_default(),
            len => &slot.bytes[..usize::from(len)],
        }
    }

    /// Where `name`, whose hash is `hash`, is, if it is here.
    fn find(&self, name: &[u8], hash: u64) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let (mask, tag) = (self.mask(), (hash >> 56) as u8);
        let mut at = hash as usize & mask;
        loop {
            let slot = &self.slots[at];
            if slot.len == FREE {
                return None;
            }
            if slot.tag == tag && self.name_of(slot) == name {
                return Some(at);
            }
            at = (at + 1) & mask;
        }
    }

    fn get(&self, name: &[u8]) -> Option<i64> {
        self.find(name, self.hash(name)).map(|at| self.slots[at].id)
    }

    fn insert(&mut self, name: &[u8], id: i64) {
        let hash = self.hash(name);
        if let Some(at) = self.find(name, hash) {
            self.slots[at].id = id;
            return;
        }
        if (self.used + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let mut slot = Slot { id, ..FREE_SLOT };
        if name.len() <= INLINE {
            slot.len = name.len() as u8;
            slot.bytes[..name.len()].copy_from_slice(name);
        } else {
            let at = match self.spare.pop() {
                Some(at) => {
                    self.long[at as usize] = Some(name.into());
                    at
                }
                None => {
                    self.long.push(Some(name.into()));
                    u32::try_from(self.long.len() - 1).expect("fewer than 2^32 long usernames")
                }
            };
            slot.len = LONG;
            slot.bytes[..4].copy_from_slice(&at.to_le_bytes());
        }
        slot.tag = (hash >> 56) as u8;
        self.place(slot, hash);
        self.used += 1;
    }

    /// Puts `slot` in the first free slot from its hash's.
    fn place(&mut self, slot: Slot, hash: u64) {
        let mask = self.mask();
        let mut at = hash as usize & mask;
        while self.slots[at].len != FREE {
            at = (at + 1) & mask;
        }
        self.slots[at] = slot;
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, vec![FREE_SLOT; size].into_boxed_slice());
        for slot in old.iter().filter(|s| s.len != FREE) {
            let hash = self.hash(self.name_of(slot));
            self.place(*slot, hash);
        }
    }

    /// Removes `name`, if `id` is none or its id.
    fn remove(&mut self, name: &[u8], id: Option<i64>) {
        let Some(mut hole) = self.find(name, self.hash(name)) else { return };
        if id.is_some_and(|id| self.slots[hole].id != id) {
            return;
        }
        if self.slots[hole].len == LONG {
            let at = self.slots[hole].long_at();
            self.long[at] = None;
            self.spare.push(at as u32);
        }
        self.used -= 1;
        // Move back each following entry that the hole now separates from its home slot,
        // until a free slot ends the run.
        let mask = self.mask();
        let mut next = (hole + 1) & mask;
        loop {
            let slot = self.slots[next];
            if slot.len == FREE {
                break;
            }
            let home = self.hash(self.name_of(&slot)) as usize & mask;
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(hole) & mask) {
                self.slots[hole] = slot;
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.slots[hole] = FREE_SLOT;
    }
}

/// Usernames to ids, per domain.
#[derive(Default)]
pub struct UserIndex {
    ids: HashMap<i64, Names>,
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
        self.ids.get(&domain_id)?.get(username.as_bytes())
    }

    /// What SQLite answered for a name the map did not give: its id, or none.
    pub fn learn(&mut self, domain_id: i64, username: &str, id: Option<i64>) {
        match id {
            Some(id) => self.enter(domain_id, username, id),
            None => {
                if let Some(names) = self.ids.get_mut(&domain_id) {
                    names.remove(username.as_bytes(), None);
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
                names.remove(username.as_bytes(), Some(id));
            }
        }
        Ok(())
    }

    fn enter(&mut self, domain_id: i64, username: &str, id: i64) {
        self.ids.entry(domain_id).or_insert_with(Names::new).insert(username.as_bytes(), id);
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

    #[test]
    fn the_table_agrees_with_a_map_through_inserts_updates_and_removals() {
        use rand::{RngExt, SeedableRng, rngs::StdRng};
        // A small name space so that names come back after removal, runs of occupied slots
        // grow long and wrap around the table's end, and long names share slots' runs.
        let mut rng = StdRng::seed_from_u64(6);
        let mut names = Names::new();
        let mut model = std::collections::HashMap::new();
        let name_of = |n: u32| if n.is_multiple_of(5) { format!("{n:0>30}") } else { format!("u{n}") };
        for step in 0..200_000 {
            let name = name_of(rng.random_range(0..3_000));
            match rng.random_range(0..10) {
                0..5 => {
                    let id = rng.random_range(1..1_000_000);
                    names.insert(name.as_bytes(), id);
                    model.insert(name.clone(), id);
                }
                5..7 => {
                    names.remove(name.as_bytes(), None);
                    model.remove(&name);
                }
                7 => {
                    // Removed only when the id matches.
                    let id = if rng.random_bool(0.5) { model.get(&name).copied().unwrap_or(7) } else { 7 };
                    names.remove(name.as_bytes(), Some(id));
                    if model.get(&name) == Some(&id) {
                        model.remove(&name);
                    }
                }
                _ => {}
            }
            assert_eq!(names.get(name.as_bytes()), model.get(&name).copied(), "step {step}, {name:?}");
            assert_eq!(names.used, model.len(), "step {step}");
        }
        for n in 0..3_000 {
            let name = name_of(n);
            assert_eq!(names.get(name.as_bytes()), model.get(&name).copied(), "{name:?}");
        }
        assert!(names.used * 4 <= names.slots.len() * 3, "at most three quarters full");
        let long = names.long.iter().filter(|n| n.is_some()).count();
        assert_eq!(long, model.keys().filter(|n| n.len() > INLINE).count(), "removed long names are freed");
    }
}
