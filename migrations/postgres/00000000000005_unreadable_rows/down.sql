ALTER TABLE tranche_runs DROP COLUMN rows_dead_at_plan;
DELETE FROM tranche_dead_letters WHERE partition_id IS NULL OR row_key IS NULL;
ALTER TABLE tranche_dead_letters ALTER COLUMN row_key SET NOT NULL;
ALTER TABLE tranche_dead_letters ALTER COLUMN partition_id SET NOT NULL;
