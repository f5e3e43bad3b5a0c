DROP INDEX tranche_runs_job_key ON tranche_runs;
ALTER TABLE tranche_partitions DROP COLUMN split_from, DROP COLUMN claimed_ms;
ALTER TABLE tranche_runs DROP COLUMN run_key;
