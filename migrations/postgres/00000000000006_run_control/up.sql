-- Steering a live run. A run may now also be 'paused' (no page starts, no
-- partition is claimed) or 'cancelled' (ended; never resumed). Its
-- throttles are stored on it, so that `tranche throttle` changes them for
-- every instance while it runs: `throttle` holds them as JSON, and the one
-- a claim must read in SQL, max_active_partitions, has a column of its
-- own. rate_tat_us is the shared rate limiter's state (the time, database
-- clock in microseconds, at which the next row may be delivered); health
-- says why an instance found the database unhealthy, NULL when it is not.
ALTER TABLE tranche_runs ADD COLUMN throttle TEXT NOT NULL DEFAULT '{}';
ALTER TABLE tranche_runs ADD COLUMN max_active_partitions INTEGER;
ALTER TABLE tranche_runs ADD COLUMN rate_tat_us BIGINT;
ALTER TABLE tranche_runs ADD COLUMN health TEXT;
ALTER TABLE tranche_runs ADD COLUMN health_ms BIGINT;
-- Rows done over time, one sample per run and 5 s, for rates and ETAs.
CREATE TABLE tranche_run_samples (
    run_id     BIGINT NOT NULL REFERENCES tranche_runs (id),
    at_ms      BIGINT NOT NULL,
    rows_done  BIGINT NOT NULL,
    PRIMARY KEY (run_id, at_ms)
);
-- Every operation on a run: what, when, by whom.
CREATE TABLE tranche_audit (
    id                BIGSERIAL PRIMARY KEY,
    at_ms             BIGINT NOT NULL,
    job_name          TEXT NOT NULL,
    run_id            BIGINT,
    partition_number  INTEGER,
    action            TEXT NOT NULL,
    detail            TEXT NOT NULL,
    actor             TEXT NOT NULL
);
CREATE INDEX tranche_audit_job ON tranche_audit (job_name, id);
