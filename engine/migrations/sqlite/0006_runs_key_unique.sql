-- An idempotency key names one run of its owner. Submits with one key take turns in the
-- engine, and this index makes a second run with the same key impossible for the
-- executor that owns it; runs mirrored from other owners keep their own keys, so that
-- replication never refuses a run. Were two runs of one owner ever given the same key
-- before the index existed, the later ones keep theirs with their run id appended, so
-- that no run is lost and the index can be built.

UPDATE runs SET idempotency_key = idempotency_key || '#' || id
WHERE idempotency_key IS NOT NULL
  AND id NOT IN (
    SELECT MIN(id) FROM runs WHERE idempotency_key IS NOT NULL GROUP BY owner, idempotency_key
  );

DROP INDEX runs_by_key;
CREATE UNIQUE INDEX runs_by_key ON runs (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_by_any_key ON runs (idempotency_key) WHERE idempotency_key IS NOT NULL;
