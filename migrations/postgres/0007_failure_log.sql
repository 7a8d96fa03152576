-- The `cleared` column of sqlite/0007_failure_log.sql: on SQLite a row with cleared = 1
-- marks the reset of a user's count in an append-only log. PostgreSQL keeps its
-- (user_id, at) index and counts in SQL, as several nodes share the table; a reset deletes
-- the user's rows and adds such a marker too, which every count skips.
ALTER TABLE passcode_failures ADD COLUMN cleared BIGINT NOT NULL DEFAULT 0;
