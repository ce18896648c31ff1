-- Tokens get an end, can be revoked, and remember their last use. A revoked token's row
-- stays: its name keeps meaning one credential in the audit trail, and a request with it
-- is told it was revoked rather than that it is unknown.
ALTER TABLE api_tokens ADD COLUMN created_by TEXT NOT NULL DEFAULT '';
ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER;
ALTER TABLE api_tokens ADD COLUMN revoked_at INTEGER;
ALTER TABLE api_tokens ADD COLUMN revoked_by TEXT;
ALTER TABLE api_tokens ADD COLUMN last_used_at INTEGER;
ALTER TABLE api_tokens ADD COLUMN last_used_from TEXT;

-- What every credential did that changes what Lariat does or who may use it. Rows are
-- only ever appended.
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    who       TEXT    NOT NULL,
    role      TEXT,
    from_addr TEXT,
    action    TEXT    NOT NULL,
    target    TEXT    NOT NULL,
    detail    TEXT    NOT NULL
);
CREATE INDEX audit_log_by_who ON audit_log (who, seq);
CREATE INDEX audit_log_by_action ON audit_log (action, seq);
CREATE INDEX audit_log_by_target ON audit_log (target, seq);

-- Bumped by every create and revoke, in the same transaction: a server polls this one
-- row to drop the tokens it remembers as soon as another process (the CLI on this file)
-- revokes one.
CREATE TABLE api_tokens_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO api_tokens_version (id, version) VALUES (1, 0);
