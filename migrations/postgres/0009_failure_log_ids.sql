-- sqlite/0009_failure_log_ids.sql drops AUTOINCREMENT and the foreign key from SQLite's
-- append-only wrong-passcode log, for its verification engine. PostgreSQL counts failures
-- in SQL over its indexed table, keeps its foreign key and its delete on reset; nothing
-- changes here. This file keeps the two folders' numbering in step.
SELECT 1;
