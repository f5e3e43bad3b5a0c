-- The outbox sink's default table: messages written in the same database as
-- the source, once each (the message id is unique), for a relay to publish.
CREATE TABLE tranche_outbox (
    id            BIGSERIAL PRIMARY KEY,
    message_id    TEXT NOT NULL UNIQUE,
    job_name      TEXT NOT NULL,
    row_key       BIGINT NOT NULL,
    version       BIGINT NOT NULL,
    payload       BYTEA NOT NULL,
    created_ms    BIGINT NOT NULL,
    published_ms  BIGINT
);
CREATE INDEX tranche_outbox_unpublished ON tranche_outbox (id) WHERE published_ms IS NULL;
