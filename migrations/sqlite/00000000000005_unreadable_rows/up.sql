-- Rows that cannot be read as the source is typed (a NULL key, an order
-- value of another storage class) are dead-lettered while the run is
-- planned: before any partition exists, and with no key when the key itself
-- is what cannot be read. The run counts them, so that identified = read +
-- dead-lettered at planning. SQLite cannot drop NOT NULL: the table is
-- rebuilt.
CREATE TABLE tranche_dead_letters_new (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id            BIGINT NOT NULL REFERENCES tranche_runs (id),
    partition_id      BIGINT REFERENCES tranche_partitions (id),
    row_key           BIGINT,
    reason            TEXT NOT NULL,
    created_ms        BIGINT NOT NULL,
    UNIQUE (run_id, row_key)
);
INSERT INTO tranche_dead_letters_new (id, run_id, partition_id, row_key, reason, created_ms)
    SELECT id, run_id, partition_id, row_key, reason, created_ms FROM tranche_dead_letters;
DROP TABLE tranche_dead_letters;
ALTER TABLE tranche_dead_letters_new RENAME TO tranche_dead_letters;
ALTER TABLE tranche_runs ADD COLUMN rows_dead_at_plan BIGINT NOT NULL DEFAULT 0;
