-- Guessing limits: each domain says how many wrong passcodes a user may send in a window
-- before RADIUS rejects that user without checking; every failure is one row, so the count
-- is shared by every node on the same database.

ALTER TABLE domains ADD COLUMN max_passcode_failures BIGINT NOT NULL DEFAULT 10;
ALTER TABLE domains ADD COLUMN passcode_failure_window_secs BIGINT NOT NULL DEFAULT 600;

CREATE TABLE passcode_failures (
    id      INTEGER PRIMARY KEY,
    user_id BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    at      BIGINT  NOT NULL
);
CREATE INDEX passcode_failures_user ON passcode_failures (user_id, at);
