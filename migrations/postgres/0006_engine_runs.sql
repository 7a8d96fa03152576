-- The servers running the SQLite verification engine on a database file (see
-- sqlite/0006_engine_runs.sql). Unused on PostgreSQL, where every commit is durable before
-- it returns; kept so that both dialects have the same tables.
CREATE TABLE engine_runs (
    boot_id    TEXT   NOT NULL,
    pid        BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    PRIMARY KEY (boot_id, pid, started_at)
);
