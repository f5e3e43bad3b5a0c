-- tranche's own tables. Times that decide leases are epoch milliseconds taken
-- from the database clock (clock_timestamp()), never from an instance.

CREATE TABLE tranche_jobs (
    name              TEXT PRIMARY KEY,
    schedule          TEXT,
    lease_owner       TEXT,
    lease_expires_ms  BIGINT,
    created_ms        BIGINT NOT NULL
);

CREATE TABLE tranche_runs (
    id                BIGSERIAL PRIMARY KEY,
    job_name          TEXT NOT NULL REFERENCES tranche_jobs (name),
    params            TEXT NOT NULL DEFAULT '{}',
    state             TEXT NOT NULL,
    high_water_mark   TEXT,
    rows_identified   BIGINT NOT NULL DEFAULT 0,
    rows_done         BIGINT NOT NULL DEFAULT 0,
    partitions        INTEGER NOT NULL DEFAULT 0,
    started_ms        BIGINT NOT NULL,
    planned_ms        BIGINT,
    finished_ms       BIGINT,
    last_error        TEXT
);
CREATE INDEX tranche_runs_job_state ON tranche_runs (job_name, state);

CREATE TABLE tranche_partitions (
    id                BIGSERIAL PRIMARY KEY,
    run_id            BIGINT NOT NULL REFERENCES tranche_runs (id),
    number            INTEGER NOT NULL,
    strategy          TEXT NOT NULL,
    scope             TEXT NOT NULL,
    lower_order       BIGINT,
    lower_key         BIGINT,
    upper_order       BIGINT,
    upper_key         BIGINT,
    hwm_order         BIGINT NOT NULL,
    hwm_key           BIGINT NOT NULL,
    modulus           BIGINT,
    remainder         BIGINT,
    cursor_order      BIGINT,
    cursor_key        BIGINT,
    rows_planned      BIGINT NOT NULL DEFAULT 0,
    rows_done         BIGINT NOT NULL DEFAULT 0,
    state             TEXT NOT NULL DEFAULT 'pending',
    owner             TEXT,
    epoch             BIGINT NOT NULL DEFAULT 0,
    lease_expires_ms  BIGINT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    takeovers         INTEGER NOT NULL DEFAULT 0,
    last_claim_takeover INTEGER NOT NULL DEFAULT 0,
    last_error        TEXT,
    updated_ms        BIGINT NOT NULL,
    UNIQUE (run_id, number)
);
CREATE INDEX tranche_partitions_claim ON tranche_partitions (run_id, state, number);

CREATE TABLE tranche_dead_letters (
    id                BIGSERIAL PRIMARY KEY,
    run_id            BIGINT NOT NULL REFERENCES tranche_runs (id),
    partition_id      BIGINT NOT NULL REFERENCES tranche_partitions (id),
    row_key           BIGINT NOT NULL,
    reason            TEXT NOT NULL,
    created_ms        BIGINT NOT NULL,
    UNIQUE (run_id, row_key)
);
