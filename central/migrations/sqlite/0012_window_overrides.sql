-- Operators' overrides of maintenance windows. Rows are never deleted: they are the
-- audit of who opened or closed which window, from where, when and why.
CREATE TABLE window_overrides (
    -- The change this override was made in; later ones win over earlier ones.
    seq         INTEGER PRIMARY KEY,
    id          TEXT    NOT NULL UNIQUE,
    window      TEXT    NOT NULL,
    action      TEXT    NOT NULL CHECK (action IN ('open', 'close')),
    site        TEXT,
    starts_at   INTEGER NOT NULL,
    ends_at     INTEGER NOT NULL,
    reason      TEXT    NOT NULL,
    who         TEXT    NOT NULL,
    from_addr   TEXT,
    ended_at    INTEGER,
    ended_by    TEXT,
    -- The last change to this row: its making, or its ending.
    version     INTEGER NOT NULL
);
CREATE INDEX window_overrides_by_window ON window_overrides (window, seq);

-- How far each agent holds the overrides (the version of the set it last took).
ALTER TABLE sites ADD COLUMN overrides_seen INTEGER NOT NULL DEFAULT 0;
