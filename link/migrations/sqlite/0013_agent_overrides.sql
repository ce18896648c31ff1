-- The operators' window overrides the centre last sent for this agent's site, kept so
-- that a restart cut off from the centre goes on honouring them until they expire.
CREATE TABLE agent_overrides (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    version     INTEGER NOT NULL,
    overrides   TEXT    NOT NULL,  -- JSON [WindowOverride]
    received_at INTEGER NOT NULL
);
