-- The runs one submit made, one per site, share a group id.
ALTER TABLE runs ADD COLUMN group_id TEXT;
CREATE INDEX runs_by_group ON runs (group_id, id) WHERE group_id IS NOT NULL;
-- Runs assigned to a site's agent, not started there yet, by the agent that will own them.
CREATE INDEX runs_assigned ON runs (owner, id) WHERE status = 'assigned';
