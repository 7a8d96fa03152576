-- Nothing queries audit_log by `at`; its index only cost every insert. PostgreSQL keeps the
-- console's username, domain and kind indexes: with the filter's value known, its plans use
-- them for `Store::audit_page`. SQLite, whose plan for that query never does, drops all four
-- (sqlite/0005_audit_indexes.sql).

DROP INDEX audit_log_at;
