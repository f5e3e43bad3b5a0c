DROP INDEX tranche_runs_job_key;
ALTER TABLE tranche_partitions DROP COLUMN split_from;
ALTER TABLE tranche_partitions DROP COLUMN claimed_ms;
ALTER TABLE tranche_runs DROP COLUMN run_key;
