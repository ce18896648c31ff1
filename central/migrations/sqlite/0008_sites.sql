-- The site agents the central node knows: which executor owns a site's runs, when it was
-- last seen and what it last reported.
CREATE TABLE sites (
    site           TEXT    PRIMARY KEY,
    executor       TEXT    NOT NULL UNIQUE,
    agent_version  TEXT    NOT NULL,
    registered_at  INTEGER NOT NULL,
    last_seen      INTEGER NOT NULL,
    owner_seq      INTEGER NOT NULL,  -- the highest owner_seq the agent reported
    commands_seen  INTEGER NOT NULL   -- the agent's command cursor at its last sync
) WITHOUT ROWID;

-- One credential per agent: only the SHA-256 of the token is kept.
CREATE TABLE site_tokens (
    hash       TEXT    PRIMARY KEY,
    site       TEXT    NOT NULL,
    name       TEXT    NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Operator commands for runs a site agent owns, one sequence for all sites; each site's
-- agent takes its own in seq order.
CREATE TABLE site_commands (
    seq        INTEGER PRIMARY KEY,
    id         TEXT    NOT NULL UNIQUE,
    site       TEXT    NOT NULL,
    run_id     TEXT    NOT NULL,
    verb       TEXT    NOT NULL,
    args       TEXT    NOT NULL,  -- JSON
    actor      TEXT    NOT NULL,  -- JSON {who, from}
    created_at INTEGER NOT NULL
);
CREATE INDEX site_commands_by_site ON site_commands (site, seq);
