-- One-time node callback tokens, as on SQLite (0004).
CREATE TABLE node_tokens (
    hash       TEXT   PRIMARY KEY,
    host       TEXT   NOT NULL,
    run_id     TEXT   NOT NULL,
    step       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX node_tokens_by_run ON node_tokens (run_id);
