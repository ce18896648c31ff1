-- The REST API's bearer tokens. Only the SHA-256 of a token is kept: the token itself is
-- shown once, when it is created, and cannot be recovered from this table.

CREATE TABLE api_tokens (
    name       TEXT    PRIMARY KEY,
    role       TEXT    NOT NULL,
    hash       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
