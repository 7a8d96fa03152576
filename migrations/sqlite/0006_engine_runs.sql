-- The servers running the SQLite verification engine on this file: one row each, written
-- with a synced commit at start and removed with one at a clean stop (server/src/db/runs.rs).
-- The engine commits without syncing the write-ahead log, so a power loss can undo the last
-- moments of consumptions; a start that finds a row of an earlier boot of the machine voids
-- every unused passcode (used = 2) so that none of those can be accepted again.
CREATE TABLE engine_runs (
    boot_id    TEXT   NOT NULL,
    pid        BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    PRIMARY KEY (boot_id, pid, started_at)
);
