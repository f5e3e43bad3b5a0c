-- Run keys: instances started with the same key join the same run whatever
-- its state. claimed_ms records when the latest claim happened (database
-- clock), for takeover timing; split_from records which partition a
-- work-stealing split came from.
ALTER TABLE tranche_runs ADD COLUMN run_key VARCHAR(512);
CREATE UNIQUE INDEX tranche_runs_job_key ON tranche_runs (job_name, run_key);
ALTER TABLE tranche_partitions ADD COLUMN claimed_ms BIGINT, ADD COLUMN split_from BIGINT;
