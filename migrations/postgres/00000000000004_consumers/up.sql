-- Consumers: the last version each consumer applied per row key (the guard
-- that makes redelivered and stale operations change nothing; it outlives a
-- deleted row, so a late insert cannot bring the row back), and the messages
-- a consumer could not apply, kept whole with their reason.
CREATE TABLE tranche_inbox (
    consumer  TEXT NOT NULL,
    row_key   BIGINT NOT NULL,
    version   BIGINT NOT NULL,
    PRIMARY KEY (consumer, row_key)
);
CREATE TABLE tranche_consumer_dead_letters (
    id          BIGSERIAL PRIMARY KEY,
    consumer    TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    row_key     BIGINT,
    reason      TEXT NOT NULL,
    payload     BYTEA NOT NULL,
    created_ms  BIGINT NOT NULL
);
CREATE INDEX tranche_consumer_dead_letters_consumer ON tranche_consumer_dead_letters (consumer, id);
