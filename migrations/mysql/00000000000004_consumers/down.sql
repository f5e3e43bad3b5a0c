DROP TABLE tranche_consumer_dead_letters;
DROP TABLE tranche_inbox;
