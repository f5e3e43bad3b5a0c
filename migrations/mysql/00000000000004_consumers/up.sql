-- Consumers: the last version each consumer applied per row key (the guard
-- that makes redelivered and stale operations change nothing), and the
-- messages a consumer could not apply, kept whole with their reason.
CREATE TABLE tranche_inbox (
    consumer  VARCHAR(255) NOT NULL,
    row_key   BIGINT NOT NULL,
    version   BIGINT NOT NULL,
    PRIMARY KEY (consumer, row_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
CREATE TABLE tranche_consumer_dead_letters (
    id          BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    consumer    VARCHAR(255) NOT NULL,
    message_id  MEDIUMTEXT NOT NULL,
    row_key     BIGINT,
    reason      MEDIUMTEXT NOT NULL,
    payload     LONGBLOB NOT NULL,
    created_ms  BIGINT NOT NULL,
    KEY tranche_consumer_dead_letters_consumer (consumer, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
