-- Passcode ids that are never handed out twice, for the SQLite verification engine's copy
-- of the live passcodes (server/src/db/live_passcodes.rs), which reads "the rows after the
-- largest id it has seen". Without AUTOINCREMENT a plain rowid goes to the next row above
-- the largest present, so once the newest passcodes were pruned or deleted with their
-- device, new ones took ids the engine had already seen and it would never copy them.
-- Passcodes are inserted at the rate they are issued (each after an argon2id PIN check),
-- so the read and write of sqlite_sequence per insert costs nothing measurable.
-- The table is rebuilt as it was, with AUTOINCREMENT; sqlite_sequence then holds its
-- largest id.
CREATE TABLE passcodes_0011 (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device_id  BIGINT  NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    hash       BLOB    NOT NULL,
    expires_at BIGINT  NOT NULL,
    used       BIGINT  NOT NULL DEFAULT 0,
    created_at BIGINT  NOT NULL
);
INSERT INTO passcodes_0011 (id, user_id, device_id, hash, expires_at, used, created_at)
    SELECT id, user_id, device_id, hash, expires_at, used, created_at FROM passcodes;
DROP TABLE passcodes;
ALTER TABLE passcodes_0011 RENAME TO passcodes;
CREATE INDEX passcodes_user ON passcodes (user_id, id);
CREATE INDEX passcodes_device ON passcodes (device_id);
CREATE INDEX passcodes_expiry ON passcodes (expires_at);
