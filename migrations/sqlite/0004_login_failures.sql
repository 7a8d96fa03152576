-- Failed console sign-ins, in the database so that every node sharing it counts the same
-- failures (an attacker gets no extra guesses by spreading them over nodes).
CREATE TABLE console_login_failures (
    id     INTEGER PRIMARY KEY,
    at     BIGINT  NOT NULL,
    name   TEXT    NOT NULL,
    source TEXT    NOT NULL
);
CREATE INDEX console_login_failures_name ON console_login_failures (name, at);
CREATE INDEX console_login_failures_source ON console_login_failures (source, at);
