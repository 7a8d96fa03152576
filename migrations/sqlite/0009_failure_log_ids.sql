-- The wrong-passcode log (0007) without AUTOINCREMENT and without its foreign key.
--
-- The verification engine reads "the rows after the last id it has seen", so an id must
-- never be handed out twice. AUTOINCREMENT guaranteed that by reading and writing
-- sqlite_sequence in every insert, which took about 15 % of a Reject's CPU (BENCHMARKS.md).
-- Plain rowids are handed out above the largest id present, so they are never reused as
-- long as the row with the largest id is never deleted:
-- - the prune (Store::prune) keeps the newest row, whatever its age;
-- - a deleted user's rows are no longer deleted with it (no foreign key); instead the
--   trigger below appends a reset for that user, so its count is gone, in the engine's
--   memory as in a replay, and a user who gets its id later starts from nothing. The
--   rows themselves go with the log's front at a later prune.
-- The largest id AUTOINCREMENT ever handed out is carried over as a reset of user 0 (no
-- such user), so ids stay above every id a running engine may have seen.
CREATE TABLE passcode_failures_0009 (
    id      INTEGER PRIMARY KEY,
    user_id BIGINT  NOT NULL,
    at      BIGINT  NOT NULL,
    cleared BIGINT  NOT NULL DEFAULT 0
);
INSERT INTO passcode_failures_0009 (id, user_id, at, cleared)
    SELECT id, user_id, at, cleared FROM passcode_failures;
INSERT INTO passcode_failures_0009 (id, user_id, at, cleared)
    SELECT seq, 0, 0, 1 FROM sqlite_sequence
    WHERE name = 'passcode_failures' AND seq > (SELECT COALESCE(MAX(id), 0) FROM passcode_failures);
DROP TABLE passcode_failures;
ALTER TABLE passcode_failures_0009 RENAME TO passcode_failures;

CREATE TRIGGER users_deleted_reset_failures AFTER DELETE ON users
BEGIN
    INSERT INTO passcode_failures (user_id, at, cleared)
        VALUES (OLD.id, CAST(strftime('%s', 'now') AS INTEGER), 1);
END;
