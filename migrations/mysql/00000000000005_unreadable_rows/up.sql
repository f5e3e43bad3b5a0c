-- Rows that cannot be read as the source is typed (a NULL key or order
-- value) are dead-lettered while the run is planned: before any partition
-- exists, and with no key when the key itself is what is missing. The run
-- counts them, so that identified = read + dead-lettered at planning.
ALTER TABLE tranche_dead_letters MODIFY partition_id BIGINT NULL, MODIFY row_key BIGINT NULL;
ALTER TABLE tranche_runs ADD COLUMN rows_dead_at_plan BIGINT NOT NULL DEFAULT 0;
