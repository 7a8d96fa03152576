-- sqlite/0010_user_index.sql serves the SQLite verification engine's index of users in
-- memory. On PostgreSQL each check reads the user through the pool (USER_FACTS in
-- server/src/db/verify.rs), so nothing is needed; this file keeps the two folders'
-- numbering in step.
SELECT 1;
