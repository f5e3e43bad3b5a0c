-- tranche's own tables on MySQL 8.0+ and MariaDB 10.6+, step for step as
-- on PostgreSQL and SQLite. InnoDB for row locks and transactions; utf8mb4
-- with a binary collation, so that names compare as on the other backends
-- (case and accents matter). Times that decide leases are epoch
-- milliseconds from the database clock (NOW(3)), never from an instance.
-- Names that are keys are VARCHARs (an index needs a bounded length): job
-- names are at most 128 characters.

CREATE TABLE tranche_jobs (
    name              VARCHAR(128) NOT NULL PRIMARY KEY,
    schedule          MEDIUMTEXT,
    lease_owner       VARCHAR(255),
    lease_expires_ms  BIGINT,
    created_ms        BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE tranche_runs (
    id                BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    job_name          VARCHAR(128) NOT NULL,
    params            MEDIUMTEXT NOT NULL DEFAULT ('{}'),
    state             VARCHAR(16) NOT NULL,
    high_water_mark   MEDIUMTEXT,
    rows_identified   BIGINT NOT NULL DEFAULT 0,
    rows_done         BIGINT NOT NULL DEFAULT 0,
    partitions        INTEGER NOT NULL DEFAULT 0,
    started_ms        BIGINT NOT NULL,
    planned_ms        BIGINT,
    finished_ms       BIGINT,
    last_error        MEDIUMTEXT,
    KEY tranche_runs_job_state (job_name, state),
    CONSTRAINT tranche_runs_job FOREIGN KEY (job_name) REFERENCES tranche_jobs (name)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE tranche_partitions (
    id                BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    run_id            BIGINT NOT NULL,
    number            INTEGER NOT NULL,
    strategy          MEDIUMTEXT NOT NULL,
    scope             MEDIUMTEXT NOT NULL,
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
    state             VARCHAR(16) NOT NULL DEFAULT 'pending',
    owner             VARCHAR(255),
    epoch             BIGINT NOT NULL DEFAULT 0,
    lease_expires_ms  BIGINT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    takeovers         INTEGER NOT NULL DEFAULT 0,
    last_claim_takeover INTEGER NOT NULL DEFAULT 0,
    last_error        MEDIUMTEXT,
    updated_ms        BIGINT NOT NULL,
    UNIQUE KEY tranche_partitions_number (run_id, number),
    KEY tranche_partitions_claim (run_id, state, number),
    CONSTRAINT tranche_partitions_run FOREIGN KEY (run_id) REFERENCES tranche_runs (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE tranche_dead_letters (
    id                BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    run_id            BIGINT NOT NULL,
    partition_id      BIGINT NOT NULL,
    row_key           BIGINT NOT NULL,
    reason            MEDIUMTEXT NOT NULL,
    created_ms        BIGINT NOT NULL,
    UNIQUE KEY tranche_dead_letters_row (run_id, row_key),
    CONSTRAINT tranche_dead_letters_run FOREIGN KEY (run_id) REFERENCES tranche_runs (id),
    CONSTRAINT tranche_dead_letters_partition
        FOREIGN KEY (partition_id) REFERENCES tranche_partitions (id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
