-- Steering a live run. A run may now also be 'paused' or 'cancelled'. Its
-- throttles are stored on it as JSON, and the one a claim must read in SQL,
-- max_active_partitions, has a column of its own. rate_tat_us is the shared
-- rate limiter's state (database clock, microseconds); health says why an
-- instance found the database unhealthy, NULL when it is not.
ALTER TABLE tranche_runs
    ADD COLUMN throttle MEDIUMTEXT NOT NULL DEFAULT ('{}'),
    ADD COLUMN max_active_partitions INTEGER,
    ADD COLUMN rate_tat_us BIGINT,
    ADD COLUMN health MEDIUMTEXT,
    ADD COLUMN health_ms BIGINT;
-- Rows done over time, one sample per run and 5 s, for rates and ETAs.
CREATE TABLE tranche_run_samples (
    run_id     BIGINT NOT NULL,
    at_ms      BIGINT NOT NULL,
    rows_done  BIGINT NOT NULL,
    PRIMARY KEY (run_id, at_ms),
    CONSTRAINT tranche_run_samples_run FOREIGN KEY (run_id) REFERENCES tranche_runs (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
-- Every operation on a run: what, when, by whom.
CREATE TABLE tranche_audit (
    id                BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    at_ms             BIGINT NOT NULL,
    job_name          VARCHAR(128) NOT NULL,
    run_id            BIGINT,
    partition_number  INTEGER,
    action            VARCHAR(64) NOT NULL,
    detail            MEDIUMTEXT NOT NULL,
    actor             MEDIUMTEXT NOT NULL,
    KEY tranche_audit_job (job_name, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
