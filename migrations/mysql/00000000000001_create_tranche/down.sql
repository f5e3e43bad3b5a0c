DROP TABLE tranche_dead_letters;
DROP TABLE tranche_partitions;
DROP TABLE tranche_runs;
DROP TABLE tranche_jobs;
