-- The API's tables on PostgreSQL: SQLite's 0002 and 0014 in one.
CREATE TABLE api_tokens (
    name           TEXT   PRIMARY KEY,
    role           TEXT   NOT NULL,
    hash           TEXT   NOT NULL UNIQUE,
    created_at     BIGINT NOT NULL,
    created_by     TEXT   NOT NULL DEFAULT '',
    expires_at     BIGINT,
    revoked_at     BIGINT,
    revoked_by     TEXT,
    last_used_at   BIGINT,
    last_used_from TEXT
);

CREATE TABLE api_tokens_version (
    id      BIGINT PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO api_tokens_version (id, version) VALUES (1, 0);

CREATE TABLE audit_log (
    seq       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        BIGINT NOT NULL,
    who       TEXT   NOT NULL,
    role      TEXT,
    from_addr TEXT,
    action    TEXT   NOT NULL,
    target    TEXT   NOT NULL,
    detail    TEXT   NOT NULL
);
CREATE INDEX audit_log_by_who ON audit_log (who, seq);
CREATE INDEX audit_log_by_action ON audit_log (action, seq);
CREATE INDEX audit_log_by_target ON audit_log (target, seq);
