-- The boot service asks, for every iPXE script and every node callback, which live run has
-- an unfinished step for this host. Fan-out item rows are found by their item value
-- (the host name as JSON text) without scanning runs.
CREATE INDEX steps_by_item_value ON steps (item_value) WHERE item >= 0;
