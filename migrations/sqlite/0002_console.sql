-- Admin console: administrators, their sessions, enrollment codes, and the indexes the
-- console's paginated and filtered pages need.

CREATE TABLE admins (
    id            INTEGER PRIMARY KEY,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    created_at    BIGINT  NOT NULL
);

-- The cookie carries a random token; only its SHA-256 is stored, so a database leak does not
-- hand out live sessions.
CREATE TABLE admin_sessions (
    id         INTEGER PRIMARY KEY,
    token_hash BLOB    NOT NULL UNIQUE,
    admin_id   BIGINT  NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
    csrf_token TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    last_seen  BIGINT  NOT NULL,
    flash      TEXT
);
CREATE INDEX admin_sessions_seen ON admin_sessions (last_seen);

-- One-time codes that validate a registration automatically; only a hash is stored.
CREATE TABLE enrollment_codes (
    id         INTEGER PRIMARY KEY,
    domain_id  BIGINT  NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    username   TEXT    NOT NULL,
    code_hash  BLOB    NOT NULL UNIQUE,
    created_by TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    used_at    BIGINT,
    revoked_at BIGINT
);
CREATE INDEX enrollment_codes_domain ON enrollment_codes (domain_id, expires_at);

-- Pending registrations per domain, and the audit log's filters.
CREATE INDEX devices_domain_pending ON devices (domain_id, user_id);
CREATE INDEX audit_log_username ON audit_log (username, id);
CREATE INDEX audit_log_domain ON audit_log (domain_code, id);
CREATE INDEX audit_log_kind ON audit_log (kind, id);
