ALTER TABLE tranche_runs DROP COLUMN rows_dead_at_plan;
DELETE FROM tranche_dead_letters WHERE partition_id IS NULL OR row_key IS NULL;
ALTER TABLE tranche_dead_letters MODIFY partition_id BIGINT NOT NULL, MODIFY row_key BIGINT NOT NULL;
