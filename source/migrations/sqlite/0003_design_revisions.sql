-- Every commit of the design repository that Lariat fetched and validated, with its
-- findings. Only a revision without errors can become active; the active one is the
-- newest accepted revision.

CREATE TABLE design_revisions (
    id          INTEGER PRIMARY KEY,
    commit_id   TEXT    NOT NULL UNIQUE,
    branch      TEXT    NOT NULL,
    trigger     TEXT    NOT NULL,  -- startup | poll | webhook | manual
    fetched_at  INTEGER NOT NULL,
    accepted    INTEGER NOT NULL,  -- 1 when the revision has no error finding
    errors      INTEGER NOT NULL,
    warnings    INTEGER NOT NULL,
    findings    TEXT    NOT NULL,  -- JSON array of findings
    summary     TEXT    NOT NULL,  -- the commit's first message line
    active      INTEGER NOT NULL DEFAULT 0  -- 1 on exactly one row once a revision was accepted
);

-- A site pinned to a revision or a tag keeps that design when newer ones become active.
CREATE TABLE site_pins (
    site       TEXT    PRIMARY KEY,
    rev        TEXT    NOT NULL,  -- as the operator wrote it: a commit id or a tag
    commit_id  TEXT    NOT NULL,  -- what it resolved to
    pinned_at  INTEGER NOT NULL,
    pinned_by  TEXT    NOT NULL
) WITHOUT ROWID;
