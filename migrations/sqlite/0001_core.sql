-- Core schema: domains, network clients, users, devices, passcodes, replay nonces, audit.

CREATE TABLE server_secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);

CREATE TABLE domains (
    id                     INTEGER PRIMARY KEY,
    code                   TEXT    NOT NULL UNIQUE,
    name                   TEXT    NOT NULL UNIQUE,
    device_name            TEXT    NOT NULL,
    passcode_lifetime_secs BIGINT  NOT NULL,
    pin_min_length         BIGINT  NOT NULL,
    passcode_length        BIGINT  NOT NULL,
    max_pin_failures       BIGINT  NOT NULL,
    registration_ttl_secs  BIGINT  NOT NULL,
    public_key             BLOB    NOT NULL,
    private_key            BLOB    NOT NULL,
    created_at             BIGINT  NOT NULL
);

CREATE TABLE network_clients (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL UNIQUE,
    address    TEXT    NOT NULL,
    secret     TEXT    NOT NULL,
    domain_id  BIGINT  NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    ma_mode    TEXT    NOT NULL CHECK (ma_mode IN ('require', 'auto', 'off')),
    ma_seen    BIGINT  NOT NULL DEFAULT 0,
    created_at BIGINT  NOT NULL
);

CREATE TABLE users (
    id         INTEGER PRIMARY KEY,
    domain_id  BIGINT  NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    username   TEXT    NOT NULL,
    disabled   BIGINT  NOT NULL DEFAULT 0,
    created_at BIGINT  NOT NULL,
    UNIQUE (domain_id, username)
);

-- A device with user_id NULL is a pending registration.
CREATE TABLE devices (
    id                      INTEGER PRIMARY KEY,
    domain_id               BIGINT  NOT NULL REFERENCES domains(id) ON DELETE CASCADE,
    device_key_id           TEXT    NOT NULL,
    user_id                 BIGINT  REFERENCES users(id) ON DELETE CASCADE,
    public_key              BLOB    NOT NULL,
    pin_hash                TEXT    NOT NULL,
    registration_code       TEXT,
    registration_expires_at BIGINT,
    wrong_pins              BIGINT  NOT NULL DEFAULT 0,
    disabled                BIGINT  NOT NULL DEFAULT 0,
    created_at              BIGINT  NOT NULL,
    validated_at            BIGINT,
    UNIQUE (domain_id, device_key_id),
    UNIQUE (domain_id, registration_code)
);
CREATE INDEX devices_user ON devices (user_id);

-- Passcodes are stored only as HMAC-SHA-256 under a server secret.
CREATE TABLE passcodes (
    id         INTEGER PRIMARY KEY,
    user_id    BIGINT  NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device_id  BIGINT  NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    hash       BLOB    NOT NULL,
    expires_at BIGINT  NOT NULL,
    used       BIGINT  NOT NULL DEFAULT 0,
    created_at BIGINT  NOT NULL
);
CREATE INDEX passcodes_user ON passcodes (user_id, id);
CREATE INDEX passcodes_device ON passcodes (device_id);
CREATE INDEX passcodes_expiry ON passcodes (expires_at);

-- Nonces of token requests seen recently, per device key: a replay hits the primary key.
CREATE TABLE request_nonces (
    device_key_id TEXT   NOT NULL,
    nonce         TEXT   NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (device_key_id, nonce)
);
CREATE INDEX request_nonces_expiry ON request_nonces (expires_at);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    at          BIGINT  NOT NULL,
    actor       TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    domain_code TEXT,
    username    TEXT,
    source      TEXT,
    detail      TEXT    NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at);
