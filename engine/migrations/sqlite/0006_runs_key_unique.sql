-- An idempotency key names one run. Submits with one key take turns in the engine, and
-- this index makes a second run with the same key impossible. Were two runs ever given
-- the same key before it existed, the later ones keep theirs with their run id appended,
-- so that no run is lost and the index can be built.

UPDATE runs SET idempotency_key = idempotency_key || '#' || id
WHERE idempotency_key IS NOT NULL
  AND id NOT IN (
    SELECT MIN(id) FROM runs WHERE idempotency_key IS NOT NULL GROUP BY idempotency_key
  );

DROP INDEX runs_by_key;
CREATE UNIQUE INDEX runs_by_key ON runs (idempotency_key) WHERE idempotency_key IS NOT NULL;
