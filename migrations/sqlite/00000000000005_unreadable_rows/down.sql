ALTER TABLE tranche_runs DROP COLUMN rows_dead_at_plan;
CREATE TABLE tranche_dead_letters_old (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id            BIGINT NOT NULL REFERENCES tranche_runs (id),
    partition_id      BIGINT NOT NULL REFERENCES tranche_partitions (id),
    row_key           BIGINT NOT NULL,
    reason            TEXT NOT NULL,
    created_ms        BIGINT NOT NULL,
    UNIQUE (run_id, row_key)
);
INSERT INTO tranche_dead_letters_old (id, run_id, partition_id, row_key, reason, created_ms)
    SELECT id, run_id, partition_id, row_key, reason, created_ms FROM tranche_dead_letters
    WHERE partition_id IS NOT NULL AND row_key IS NOT NULL;
DROP TABLE tranche_dead_letters;
ALTER TABLE tranche_dead_letters_old RENAME TO tranche_dead_letters;
