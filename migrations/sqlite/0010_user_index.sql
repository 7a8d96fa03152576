-- For the verification engine's index of users in memory (server/src/db/user_index.rs),
-- which finds a RADIUS request's user without reading the users table: with many users the
-- index entry and the row each lay on a B-tree page outside the CPU's caches (BENCHMARKS.md).

-- The disabled users alone, read per request instead of the user's row: a page or two that
-- stay cached whatever the number of users (as devices_disabled, 0008).
CREATE INDEX users_disabled ON users (id) WHERE disabled != 0;

-- Every deleted user with its name, so that the engine drops that name's entry: a name
-- created again may get another id, and a deleted id may be handed to another user (the
-- users table's ids are plain rowids). The engine reads the rows after the last id it has
-- seen; AUTOINCREMENT never hands one of these ids out twice, and its bookkeeping costs
-- only on a deletion.
CREATE TABLE user_deletions (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id   BIGINT  NOT NULL,
    domain_id BIGINT  NOT NULL,
    username  TEXT    NOT NULL
);

CREATE TRIGGER users_deleted_log AFTER DELETE ON users
BEGIN
    INSERT INTO user_deletions (user_id, domain_id, username) VALUES (OLD.id, OLD.domain_id, OLD.username);
END;
