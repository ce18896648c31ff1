-- The engine's store on PostgreSQL: the final shape of its SQLite schema (0001 to 0011
-- there) in one step, since no PostgreSQL database predates it. Times are milliseconds
-- since the Unix epoch (BIGINT: INTEGER is 4 bytes here); JSON documents are JSONB; run
-- ids are UUIDs. Steps rows are a projection of the events (engine/src/event.rs `apply`).

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE workflow_versions (
    name       TEXT   NOT NULL,
    version    BIGINT NOT NULL,
    -- As registered, byte for byte: a version's text is compared with what another
    -- executor sends under the same number, and JSONB would rewrite it.
    definition TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE runs (
    id              UUID   PRIMARY KEY,
    workflow        TEXT   NOT NULL,
    version         BIGINT NOT NULL,
    owner           TEXT   NOT NULL,
    status          TEXT   NOT NULL,
    input           JSONB,
    targets         JSONB,
    idempotency_key TEXT,
    error           TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    ended_at        BIGINT,
    group_id        UUID
);
CREATE INDEX runs_by_status ON runs (status, id);
CREATE INDEX runs_by_workflow ON runs (workflow, id);
-- A key names one run of its owner; runs mirrored from other owners keep their own keys.
CREATE UNIQUE INDEX runs_by_key ON runs (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_by_any_key ON runs (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_by_group ON runs (group_id, id) WHERE group_id IS NOT NULL;
CREATE INDEX runs_assigned ON runs (owner, id) WHERE status = 'assigned';

-- One row per step (item = -1) and per fan-out item of a step (item >= 0).
CREATE TABLE steps (
    run_id        UUID    NOT NULL,
    step          TEXT    NOT NULL,
    item          BIGINT  NOT NULL,
    status        TEXT    NOT NULL,
    attempt       BIGINT  NOT NULL,
    series_start  BIGINT  NOT NULL,
    interruptions BIGINT  NOT NULL,
    item_value    JSONB,
    input         JSONB,
    output        JSONB,
    error         TEXT,
    -- `window:NAME` or `signal:...`: compared as bytes, so that the range of one kind
    -- (`>= 'window:' AND < 'window;'`) does not depend on the database's collation.
    waiting_for   TEXT COLLATE "C",
    wake_at       BIGINT,
    started_at    BIGINT,
    ended_at      BIGINT,
    compensating  BOOLEAN NOT NULL,
    updated_at    BIGINT  NOT NULL,
    PRIMARY KEY (run_id, step, item)
);
-- The boot service asks which live run has an unfinished item for a host.
CREATE INDEX steps_by_item_value ON steps (item_value) WHERE item >= 0;
CREATE INDEX steps_waiting ON steps (waiting_for, run_id) WHERE status = 'waiting';

-- The run's log: (run_id, seq) has no gaps. (owner, owner_seq) is the replication cursor.
CREATE TABLE events (
    run_id    UUID   NOT NULL,
    seq       BIGINT NOT NULL,
    owner     TEXT   NOT NULL,
    owner_seq BIGINT NOT NULL,
    at        BIGINT NOT NULL,
    kind      TEXT   NOT NULL,
    step      TEXT,
    item      BIGINT,
    attempt   BIGINT,
    error     TEXT,
    data      JSONB,
    PRIMARY KEY (run_id, seq)
);
CREATE UNIQUE INDEX events_by_owner ON events (owner, owner_seq);

-- Durable timers: retry backoffs, signal-wait deadlines, compensation retries.
CREATE TABLE timers (
    run_id  UUID   NOT NULL,
    step    TEXT   NOT NULL,
    item    BIGINT NOT NULL,
    kind    TEXT   NOT NULL,
    fire_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, step, item)
);

-- For a mirror: the highest owner_seq applied from each remote owner.
CREATE TABLE replicas (
    owner       TEXT   PRIMARY KEY,
    applied_seq BIGINT NOT NULL
);
