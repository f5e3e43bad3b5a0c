DROP TABLE tranche_audit;
DROP TABLE tranche_run_samples;
ALTER TABLE tranche_runs DROP COLUMN health_ms;
ALTER TABLE tranche_runs DROP COLUMN health;
ALTER TABLE tranche_runs DROP COLUMN rate_tat_us;
ALTER TABLE tranche_runs DROP COLUMN max_active_partitions;
ALTER TABLE tranche_runs DROP COLUMN throttle;
