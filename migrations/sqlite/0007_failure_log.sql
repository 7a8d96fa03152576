-- Wrong passcodes on SQLite become an append-only log (server/src/db/failures.rs). The
-- verification engine counts each user's recent failures in memory, appends one row per
-- failure and one "cleared" row when a right passcode or an administrator's unlock resets
-- the count, and replays the log at start. Without the (user_id, at) index every row lands
-- on the table's last page: with users looked up at random, the index put each Reject's
-- write on a page of its own (BENCHMARKS.md). AUTOINCREMENT so that no id is ever reused:
-- the engine reads the rows after the last id it has seen, and a reused id would hide one.
CREATE TABLE passcode_failure_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    at      BIGINT  NOT NULL,
    cleared BIGINT  NOT NULL DEFAULT 0
);
INSERT INTO passcode_failure_log (id, user_id, at, cleared)
    SELECT id, user_id, at, 0 FROM passcode_failures ORDER BY id;
DROP TABLE passcode_failures;
ALTER TABLE passcode_failure_log RENAME TO passcode_failures;
