-- The audit log's secondary indexes on SQLite: none of them is read. The console's filtered
-- page (`Store::audit_page`: `($2 = '' OR username = $2) AND …`) is planned by SQLite as a
-- backward walk of the primary key for every filter (EXPLAIN QUERY PLAN), and nothing
-- queries `at`. Yet every RADIUS decision and token request paid for four more B-tree
-- inserts, one of them (username) on a random page: under callgrind about a fifth of the
-- instructions of a RADIUS Accept on the verification engine (BENCHMARKS.md).
-- PostgreSQL keeps the three console indexes: its custom plans use them for that query.

DROP INDEX audit_log_at;
DROP INDEX audit_log_username;
DROP INDEX audit_log_domain;
DROP INDEX audit_log_kind;
