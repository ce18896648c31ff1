-- A site agent's side of the link: the design revision the centre sent for its site (so
-- that it restarts cut off with its design), and its cursors over what the centre sends.
CREATE TABLE agent_design (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    commit_id   TEXT,
    files       TEXT    NOT NULL,  -- JSON [{path, content}]
    received_at INTEGER NOT NULL
);

CREATE TABLE agent_link (
    key   TEXT PRIMARY KEY,  -- workflows_since | commands_after
    value INTEGER NOT NULL
) WITHOUT ROWID;
