-- One-time tokens handed to nodes in their boot script. A token is scoped to one host and
-- the run step that waits for it; it is used up by the node's state callback. Only the
-- SHA-256 of a token is kept.

CREATE TABLE node_tokens (
    hash       TEXT    PRIMARY KEY,
    host       TEXT    NOT NULL,
    run_id     TEXT    NOT NULL,
    step       TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    used_at    INTEGER
) WITHOUT ROWID;

CREATE INDEX node_tokens_by_run ON node_tokens (run_id);
