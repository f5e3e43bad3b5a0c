DROP TABLE tranche_outbox;
