-- Steps waiting (for a window or a signal), for the windows' views of what waits on them.
CREATE INDEX steps_waiting ON steps (waiting_for, run_id) WHERE status = 'waiting';
