-- The outbox sink's default table: messages written in the same database as
-- the source, once each (the message id is unique), for a relay to publish.
-- MySQL has no partial index: the unpublished are found by (published_ms, id).
CREATE TABLE tranche_outbox (
    id            BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    message_id    VARCHAR(700) NOT NULL,
    job_name      VARCHAR(128) NOT NULL,
    row_key       BIGINT NOT NULL,
    version       BIGINT NOT NULL,
    payload       LONGBLOB NOT NULL,
    created_ms    BIGINT NOT NULL,
    published_ms  BIGINT,
    UNIQUE KEY tranche_outbox_message (message_id),
    KEY tranche_outbox_unpublished (published_ms, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
