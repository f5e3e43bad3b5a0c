//! The series a run (and a broker consumer) records through the
//! [`metrics`] facade. The library
//! installs no recorder: a host's own (or the binary's Prometheus exporter,
//! `--metrics-addr`) receives them. Labels are the job, the run id and, for
//! what the sink does, the sink's name; never a row or a partition.

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

/// Every series, with its kind, labels and meaning, as the README lists
/// them.
pub const SERIES: &[(&str, &str, &str, &str)] = &[
    (
        "tranche_consumer_messages_received_total",
        "counter",
        "consumer",
        "messages a consumer received",
    ),
    (
        "tranche_consumer_messages_applied_total",
        "counter",
        "consumer",
        "operations that changed the database",
    ),
    (
        "tranche_consumer_messages_stale_total",
        "counter",
        "consumer",
        "operations that changed nothing (replays, older versions)",
    ),
    (
        "tranche_consumer_messages_dead_lettered_total",
        "counter",
        "consumer",
        "messages written to the consumer's dead letters",
    ),
    (
        "tranche_rows_read_total",
        "counter",
        "job, run",
        "rows read from the source",
    ),
    (
        "tranche_rows_published_total",
        "counter",
        "job, run, sink",
        "messages handed to the sink",
    ),
    (
        "tranche_rows_confirmed_total",
        "counter",
        "job, run, sink",
        "messages the sink confirmed",
    ),
    (
        "tranche_rows_replayed_total",
        "counter",
        "job, run, sink",
        "confirmed messages the sink recognised as replays",
    ),
    (
        "tranche_rows_checkpointed_total",
        "counter",
        "job, run",
        "rows checkpointed",
    ),
    (
        "tranche_dead_letters_total",
        "counter",
        "job, run",
        "rows sent to dead letters while paging",
    ),
    (
        "tranche_partition_retries_total",
        "counter",
        "job, run",
        "partition attempts restarted after a failure",
    ),
    (
        "tranche_takeovers_total",
        "counter",
        "job, run",
        "partitions claimed from a holder whose lease expired",
    ),
    (
        "tranche_leases_lost_total",
        "counter",
        "job, run",
        "partitions this instance lost to another holder",
    ),
    (
        "tranche_steals_total",
        "counter",
        "job, run",
        "ranges split off a busy partition by an idle worker",
    ),
    (
        "tranche_partitions_active",
        "gauge",
        "job, run",
        "partitions this instance works now",
    ),
    (
        "tranche_partitions_pending",
        "gauge",
        "job, run",
        "partitions waiting to be claimed, every instance",
    ),
    (
        "tranche_partitions_failed",
        "gauge",
        "job, run",
        "partitions failed for good until retried, every instance",
    ),
    (
        "tranche_oldest_lease_age_seconds",
        "gauge",
        "job, run",
        "age of the oldest live claim on the run's partitions, every instance (0: none)",
    ),
    (
        "tranche_throttle_rows_per_s",
        "gauge",
        "job, run",
        "the run's rows-per-second cap in force (0: none)",
    ),
    (
        "tranche_throttle_held",
        "gauge",
        "job, run",
        "1 while pages are held back (the run paused, or the health gate closed), else 0",
    ),
    (
        "tranche_messages_in_flight",
        "gauge",
        "job, run, sink",
        "messages handed to this instance's publisher and not yet confirmed",
    ),
    (
        "tranche_publisher_mailbox_depth",
        "gauge",
        "job, run, sink",
        "page batches queued in this instance's publisher lanes, waiting for a delivery",
    ),
    (
        "tranche_rows_remaining",
        "gauge",
        "job, run",
        "rows identified and not yet done, every instance",
    ),
    (
        "tranche_page_read_seconds",
        "histogram",
        "job, run",
        "time to read one page",
    ),
    (
        "tranche_sink_confirm_seconds",
        "histogram",
        "job, run, sink",
        "time from handing a page to the sink to its confirmation",
    ),
    (
        "tranche_checkpoint_seconds",
        "histogram",
        "job, run",
        "time to write one checkpoint",
    ),
];

/// The handles one worker records a partition's pages with.
pub(crate) struct PageMetrics {
    pub(crate) rows_read: Counter,
    pub(crate) published: Counter,
    pub(crate) confirmed: Counter,
    pub(crate) replayed: Counter,
    pub(crate) checkpointed: Counter,
    pub(crate) dead_letters: Counter,
    pub(crate) read_seconds: Histogram,
    pub(crate) confirm_seconds: Histogram,
    pub(crate) checkpoint_seconds: Histogram,
}

impl PageMetrics {
    pub(crate) fn new(job: &str, run_id: i64, sink: &str) -> Self {
        let (job, run, sink) = (job.to_owned(), run_id.to_string(), sink.to_owned());
        let two = || [("job", job.clone()), ("run", run.clone())];
        let three = || {
            [
                ("job", job.clone()),
                ("run", run.clone()),
                ("sink", sink.clone()),
            ]
        };
        Self {
            rows_read: counter!("tranche_rows_read_total", &two()),
            published: counter!("tranche_rows_published_total", &three()),
            confirmed: counter!("tranche_rows_confirmed_total", &three()),
            replayed: counter!("tranche_rows_replayed_total", &three()),
            checkpointed: counter!("tranche_rows_checkpointed_total", &two()),
            dead_letters: counter!("tranche_dead_letters_total", &two()),
            read_seconds: histogram!("tranche_page_read_seconds", &two()),
            confirm_seconds: histogram!("tranche_sink_confirm_seconds", &three()),
            checkpoint_seconds: histogram!("tranche_checkpoint_seconds", &two()),
        }
    }
}

/// Counts one committed batch of the consumer `name`.
pub(crate) fn consumer_batch(name: &str, received: u64, applied: u64, stale: u64, dead: u64) {
    let label = || [("consumer", name.to_owned())];
    counter!("tranche_consumer_messages_received_total", &label()).increment(received);
    counter!("tranche_consumer_messages_applied_total", &label()).increment(applied);
    counter!("tranche_consumer_messages_stale_total", &label()).increment(stale);
    counter!("tranche_consumer_messages_dead_lettered_total", &label()).increment(dead);
}

/// A run-level counter of `name`, for the supervisor's rare events.
pub(crate) fn run_counter(name: &'static str, job: &str, run_id: i64) -> Counter {
    counter!(name, "job" => job.to_owned(), "run" => run_id.to_string())
}

/// A run-level gauge of `name`.
pub(crate) fn run_gauge(name: &'static str, job: &str, run_id: i64) -> Gauge {
    gauge!(name, "job" => job.to_owned(), "run" => run_id.to_string())
}

/// A gauge of `name` about what the run's sink does.
pub(crate) fn sink_gauge(name: &'static str, job: &str, run_id: i64, sink: &str) -> Gauge {
    gauge!(name, "job" => job.to_owned(), "run" => run_id.to_string(), "sink" => sink.to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_series_is_named_once_and_by_convention() {
        let mut names: Vec<&str> = super::SERIES.iter().map(|s| s.0).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), super::SERIES.len());
        for (name, kind, _, _) in super::SERIES {
            assert!(name.starts_with("tranche_"), "{name}");
            match *kind {
                "counter" => assert!(name.ends_with("_total"), "{name}"),
                "histogram" => assert!(name.ends_with("_seconds"), "{name}"),
                _ => assert!(!name.ends_with("_total"), "{name}"),
            }
        }
    }
}
