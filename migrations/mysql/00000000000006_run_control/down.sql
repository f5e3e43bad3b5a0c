DROP TABLE tranche_audit;
DROP TABLE tranche_run_samples;
ALTER TABLE tranche_runs DROP COLUMN health_ms, DROP COLUMN health, DROP COLUMN rate_tat_us,
    DROP COLUMN max_active_partitions, DROP COLUMN throttle;
