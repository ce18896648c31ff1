-- The engine's store. Timestamps are milliseconds since the Unix epoch; JSON columns hold
-- JSON text. Steps rows are a projection of the events (see engine/src/event.rs `apply`).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE workflow_versions (
    name       TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    definition TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (name, version)
) WITHOUT ROWID;

CREATE TABLE runs (
    id              TEXT    PRIMARY KEY,
    workflow        TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    owner           TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    input           TEXT,
    targets         TEXT,
    idempotency_key TEXT,
    error           TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    ended_at        INTEGER
) WITHOUT ROWID;
CREATE INDEX runs_by_status ON runs (status, id);
CREATE INDEX runs_by_workflow ON runs (workflow, id);
CREATE INDEX runs_by_key ON runs (idempotency_key) WHERE idempotency_key IS NOT NULL;

-- One row per step (item = -1) and per fan-out item of a step (item >= 0).
CREATE TABLE steps (
    run_id        TEXT    NOT NULL,
    step          TEXT    NOT NULL,
    item          INTEGER NOT NULL,
    status        TEXT    NOT NULL,
    attempt       INTEGER NOT NULL,
    series_start  INTEGER NOT NULL,
    interruptions INTEGER NOT NULL,
    item_value    TEXT,
    input         TEXT,
    output        TEXT,
    error         TEXT,
    waiting_for   TEXT,
    wake_at       INTEGER,
    started_at    INTEGER,
    ended_at      INTEGER,
    compensating  INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (run_id, step, item)
) WITHOUT ROWID;

-- The run's log: (run_id, seq) has no gaps. (owner, owner_seq) is the replication cursor.
CREATE TABLE events (
    run_id    TEXT    NOT NULL,
    seq       INTEGER NOT NULL,
    owner     TEXT    NOT NULL,
    owner_seq INTEGER NOT NULL,
    at        INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    step      TEXT,
    item      INTEGER,
    attempt   INTEGER,
    error     TEXT,
    data      TEXT,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX events_by_owner ON events (owner, owner_seq);

-- Durable timers: retry backoffs, signal-wait deadlines, compensation retries.
CREATE TABLE timers (
    run_id  TEXT    NOT NULL,
    step    TEXT    NOT NULL,
    item    INTEGER NOT NULL,
    kind    TEXT    NOT NULL,
    fire_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, step, item)
) WITHOUT ROWID;

-- For a mirror: the highest owner_seq applied from each remote owner.
CREATE TABLE replicas (
    owner       TEXT    PRIMARY KEY,
    applied_seq INTEGER NOT NULL
) WITHOUT ROWID;
