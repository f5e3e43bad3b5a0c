//! The actor loop end to end, through the public API: plan, claim, page,
//! publish, confirm, checkpoint, with the memory sink (and sinks that fail
//! or stall) on SQLite and PostgreSQL, from tokio and actix hosts.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tranche::sink::MemorySink;
use tranche::store::{Checkpoint, PartitionState, RunState};
use tranche::{
    Delivery, Error, Job, Message, Poison, RunReport, RuntimeConfig, RuntimeHandle, Scope,
    Shutdown, Sink, SinkError, Source, SourceRow, Strategy,
};

const JOB: &str = "resend";

fn config(url: &str) -> RuntimeConfig {
    let mut c = RuntimeConfig::new(url);
    c.page_size = 128;
    c.concurrency = 3;
    c.backoff = Duration::from_millis(10);
    c
}

fn job(sink: Arc<dyn Sink>, partitions: u32, poison_every: Option<i64>) -> Job {
    Job::builder(JOB)
        .source(Source::new("events", "id", "at").unwrap())
        .strategy(Strategy::Range { partitions })
        .processor(move |row: &SourceRow, _: &Scope| {
            if poison_every.is_some_and(|n| row.key % n == 0) {
                return Err(Poison(format!("row {} is poison", row.key)));
            }
            Ok(Some(Message::new(
                JOB,
                row.key,
                1,
                row.key.to_string().into_bytes(),
            )))
        })
        .sink(sink)
        .build()
        .unwrap()
}

/// Counts deliveries per key.
fn counts(messages: &[Message]) -> HashMap<i64, u32> {
    let mut out = HashMap::new();
    for m in messages {
        *out.entry(m.key).or_default() += 1;
    }
    out
}

async fn delivers_every_row_once_with_deterministic_ids(url: String) {
    let runtime = RuntimeHandle::start(config(&url)).await.unwrap();
    common::seed_events(runtime.store(), 5000, 7).await;
    let sink = MemorySink::new();
    let report = runtime
        .run(job(Arc::new(sink.clone()), 5, None))
        .await
        .unwrap();
    assert_eq!(report.state, RunState::Done);
    assert_eq!((report.rows_identified, report.rows_done), (5000, 5000));
    assert_eq!(report.rows_published, 5000);
    assert!(!report.resumed && !report.interrupted);
    // Five planned, plus any range an idle worker split off a busy one.
    assert_eq!(report.partitions.len() as u64, 5 + report.steals);
    assert!(report
        .partitions
        .iter()
        .all(|p| p.state == PartitionState::Done));
    let messages = sink.messages();
    let per_key = counts(&messages);
    assert_eq!(per_key.len(), 5000);
    assert!(
        per_key.values().all(|&n| n == 1),
        "no replays without faults"
    );
    assert!(messages
        .iter()
        .all(|m| m.id == format!("{JOB}:{}:1", m.key)));
    let runs = runtime.store().runs(JOB, 5).await.unwrap();
    assert_eq!(
        (runs.len(), runs[0].state, runs[0].rows_done),
        (1, RunState::Done, 5000)
    );
    runtime.shutdown().await;
}

async fn a_failing_sink_is_retried_without_losing_rows(url: String) {
    let runtime = RuntimeHandle::start(config(&url)).await.unwrap();
    common::seed_events(runtime.store(), 2000, 7).await;
    let sink = MemorySink::new();
    sink.fail_next(3);
    let report = runtime
        .run(job(Arc::new(sink.clone()), 2, None))
        .await
        .unwrap();
    assert_eq!(report.state, RunState::Done);
    let per_key = counts(&sink.messages());
    assert_eq!(per_key.len(), 2000, "nothing lost");
    let replays: u32 = per_key.values().map(|n| n - 1).sum();
    // A failed page is read again from its checkpoint: at most one page per failure.
    assert!(replays <= 3 * 128, "replays {replays}");
    let attempts: i32 = report.partitions.iter().map(|p| p.attempts).sum();
    assert!(attempts >= 1, "failures are recorded on their partitions");
    runtime.shutdown().await;
}

async fn poison_rows_go_to_dead_letters_within_the_skip_limit(url: String) {
    let mut cfg = config(&url);
    cfg.skip_limit = 1000;
    let runtime = RuntimeHandle::start(cfg).await.unwrap();
    common::seed_events(runtime.store(), 1000, 7).await;
    let sink = MemorySink::new();
    let report = runtime
        .run(job(Arc::new(sink.clone()), 2, Some(50)))
        .await
        .unwrap();
    assert_eq!((report.state, report.dead_letters), (RunState::Done, 20));
    assert_eq!(sink.len(), 980);
    let letters = runtime.store().dead_letters(report.run_id).await.unwrap();
    assert_eq!(letters.len(), 20);
    assert!(letters.iter().all(|d| d
        .row_key
        .is_some_and(|k| k % 50 == 0 && d.reason == format!("row {k} is poison"))));
    runtime.shutdown().await;
}

async fn beyond_the_skip_limit_a_partition_fails_and_the_others_finish(url: String) {
    let mut cfg = config(&url);
    cfg.skip_limit = 2;
    let runtime = RuntimeHandle::start(cfg).await.unwrap();
    common::seed_events(runtime.store(), 1000, 7).await;
    runtime
        .store()
        .run(|c| c.batch("UPDATE events SET at = -1 WHERE id IN (10, 20, 30)"))
        .await
        .unwrap();
    // Rows 10, 20, 30 sort first, so they fall in partition 0 only.
    let sink = MemorySink::new();
    let poison_three = Job::builder(JOB)
        .source(Source::new("events", "id", "at").unwrap())
        .strategy(Strategy::Range { partitions: 4 })
        .processor(|row: &SourceRow, _: &Scope| {
            if row.order == -1 {
                return Err(Poison("negative timestamp".into()));
            }
            Ok(Some(Message::new(JOB, row.key, 1, Vec::new())))
        })
        .sink(Arc::new(sink.clone()))
        .build()
        .unwrap();
    let report = runtime.run(poison_three).await.unwrap();
    assert_eq!(report.state, RunState::Failed);
    let failed: Vec<_> = report.failed_partitions().collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].number, 0);
    let error = failed[0].last_error.clone().unwrap();
    assert!(
        error.contains("skip limit of 2") && error.contains("row 30"),
        "{error}"
    );
    // The run's own error says why it failed, for `history` and the report.
    let run_error = report.error.clone().unwrap_or_default();
    assert!(
        run_error.starts_with("1 partition failed (#0: ") && run_error.contains("row 30"),
        "{run_error}"
    );
    let done = report
        .partitions
        .iter()
        .filter(|p| p.state == PartitionState::Done)
        .count();
    assert_eq!(done, 3, "the other partitions finish");
    runtime.shutdown().await;
}

/// A sink that takes its time, so a run is still going when the test acts.
#[derive(Clone, Default)]
struct SlowSink(MemorySink);

#[async_trait]
impl Sink for SlowSink {
    fn name(&self) -> &str {
        "slow"
    }
    async fn deliver(&self, batch: &[Message]) -> Result<Delivery, SinkError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.0.deliver(batch).await
    }
}

async fn graceful_shutdown_checkpoints_and_the_next_runtime_resumes(url: String) {
    let mut cfg = config(&url);
    cfg.page_size = 50;
    let runtime = RuntimeHandle::start(cfg.clone()).await.unwrap();
    common::seed_events(runtime.store(), 6000, 7).await;
    let first = SlowSink::default();
    let run = runtime
        .start_run(job(Arc::new(first.clone()), 4, None))
        .unwrap();
    let mut progress = run.subscribe();
    progress.wait_for(|p| p.rows_done >= 500).await.unwrap();
    assert_eq!(runtime.shutdown().await, Shutdown::Clean);
    let interrupted: RunReport = run.wait().await.unwrap();
    assert!(interrupted.interrupted);
    assert_eq!(interrupted.state, RunState::Running);
    assert!(interrupted.rows_done < 6000);
    let parts = RuntimeHandle::start(cfg.clone()).await.unwrap();
    let stored = parts.store().partitions(interrupted.run_id).await.unwrap();
    assert!(
        stored.iter().all(|p| p.state != PartitionState::Claimed),
        "every partition handed back on shutdown"
    );
    assert_eq!(
        stored.iter().map(|p| p.rows_done).sum::<i64>(),
        interrupted.rows_done
    );

    let second = MemorySink::new();
    let report = parts
        .run(job(Arc::new(second.clone()), 4, None))
        .await
        .unwrap();
    assert_eq!(report.run_id, interrupted.run_id, "the same run continues");
    assert!(report.resumed);
    assert_eq!(report.rows_done_at_start, interrupted.rows_done);
    assert_eq!((report.state, report.rows_done), (RunState::Done, 6000));
    let mut all = first.0.messages();
    all.extend(second.messages());
    let per_key = counts(&all);
    assert_eq!(per_key.len(), 6000, "nothing lost across the restart");
    assert!(
        per_key.values().all(|&n| n == 1),
        "a graceful stop repeats nothing"
    );
    parts.shutdown().await;
}

/// A sink that never confirms, like a broker that hangs; says when it is
/// first called.
#[derive(Clone, Default)]
struct HangingSink(Arc<tokio::sync::Notify>);

#[async_trait]
impl Sink for HangingSink {
    fn name(&self) -> &str {
        "hanging"
    }
    async fn deliver(&self, _: &[Message]) -> Result<Delivery, SinkError> {
        self.0.notify_one();
        std::future::pending().await
    }
}

async fn a_shutdown_past_its_grace_abandons_what_is_in_flight(url: String) {
    let cfg = config(&url);
    let runtime = RuntimeHandle::start(cfg.clone()).await.unwrap();
    common::seed_events(runtime.store(), 1000, 7).await;
    let sink = HangingSink::default();
    let run = runtime
        .start_run(job(Arc::new(sink.clone()), 2, None))
        .unwrap();
    sink.0.notified().await;
    let owner = runtime.instance_id().to_owned();
    let outcome = runtime.shutdown_within(Duration::from_millis(300)).await;
    assert_eq!(outcome, Shutdown::Abandoned { runs: 1 });
    assert!(
        matches!(run.wait().await, Err(Error::Shutdown)),
        "an abandoned run has no report"
    );
    // What was abandoned keeps its lease, to expire: nothing is released
    // by a runtime that did not finish its page.
    let other = RuntimeHandle::start(cfg).await.unwrap();
    let run_id = other.store().runs(JOB, 1).await.unwrap()[0].id;
    let stored = other.store().partitions(run_id).await.unwrap();
    assert!(
        stored
            .iter()
            .any(|p| p.state == PartitionState::Claimed && p.owner.as_deref() == Some(&owner)),
        "the page in flight's partition is still leased: {stored:?}"
    );
    assert_eq!(stored.iter().map(|p| p.rows_done).sum::<i64>(), 0);
    assert_eq!(other.shutdown().await, Shutdown::Clean);
}

async fn dropping_the_last_handle_shuts_down_gracefully(url: String) {
    let mut cfg = config(&url);
    cfg.page_size = 50;
    let runtime = RuntimeHandle::start(cfg.clone()).await.unwrap();
    common::seed_events(runtime.store(), 6000, 7).await;
    let run = runtime
        .start_run(job(Arc::new(SlowSink::default()), 4, None))
        .unwrap();
    run.subscribe()
        .wait_for(|p| p.rows_done >= 500)
        .await
        .unwrap();
    drop(runtime);
    let report = tokio::time::timeout(Duration::from_secs(60), run.wait())
        .await
        .expect("the run ends once the last handle is dropped")
        .unwrap();
    assert!(report.interrupted);
    assert!(report.rows_done < 6000);
    let other = RuntimeHandle::start(cfg).await.unwrap();
    let stored = other.store().partitions(report.run_id).await.unwrap();
    assert!(
        stored.iter().all(|p| p.state != PartitionState::Claimed),
        "every partition handed back: {stored:?}"
    );
    assert_eq!(
        stored.iter().map(|p| p.rows_done).sum::<i64>(),
        report.rows_done
    );
    assert_eq!(other.shutdown().await, Shutdown::Clean);
}

async fn a_second_start_in_one_process_returns_the_running_run(url: String) {
    let mut cfg = config(&url);
    cfg.page_size = 50;
    let runtime = RuntimeHandle::start(cfg).await.unwrap();
    common::seed_events(runtime.store(), 3000, 7).await;
    let sink = SlowSink::default();
    let ignored = MemorySink::new();
    let first = runtime
        .start_run(job(Arc::new(sink.clone()), 4, None))
        .unwrap();
    let second = runtime
        .start_run(job(Arc::new(ignored.clone()), 4, None))
        .unwrap();
    let looked_up = runtime.active_run(JOB).expect("the job runs here");
    assert!(runtime.active_run("no-such-job").is_none());
    first.subscribe().wait_for(|p| p.planned).await.unwrap();
    assert_eq!(second.progress().run_id, first.progress().run_id);
    assert!(!first.is_finished() && first.report().is_none());

    let keep = first.clone();
    let (a, b, c) = futures::join!(first.wait(), second.wait(), looked_up.wait());
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!((a.state, a.rows_done), (RunState::Done, 3000));
    assert_eq!((a.run_id, a.rows_done), (b.run_id, b.rows_done));
    assert_eq!((a.run_id, a.rows_done), (c.run_id, c.rows_done));
    assert!(
        ignored.messages().is_empty(),
        "the second start started nothing"
    );
    assert_eq!(counts(&sink.0.messages()).len(), 3000);
    // The ended run's report stays with every handle; it is no longer active.
    assert!(keep.is_finished());
    assert!(keep.progress().is_finished());
    assert_eq!(keep.report().map(|r| r.run_id), Some(a.run_id));
    assert!(runtime.active_run(JOB).is_none());
    // A start after the end opens the job's next run.
    let next = runtime
        .start_run(job(Arc::new(MemorySink::new()), 4, None))
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_ne!(next.run_id, a.run_id);
    runtime.shutdown().await;
}

/// Fails every delivery that contains one of the first 100 keys.
#[derive(Clone, Default)]
struct RejectsLowKeys(MemorySink);

#[async_trait]
impl Sink for RejectsLowKeys {
    fn name(&self) -> &str {
        "rejects-low-keys"
    }
    async fn deliver(&self, batch: &[Message]) -> Result<Delivery, SinkError> {
        if batch.iter().any(|m| m.key <= 100) {
            return Err(SinkError::retryable(
                "rejects-low-keys",
                "broker refused the batch",
            ));
        }
        self.0.deliver(batch).await
    }
}

async fn a_partition_that_keeps_failing_is_failed_after_its_attempts(url: String) {
    let mut cfg = config(&url);
    cfg.max_attempts = 3;
    let runtime = RuntimeHandle::start(cfg).await.unwrap();
    common::seed_events(runtime.store(), 2000, 7).await;
    let sink = RejectsLowKeys::default();
    let report = runtime
        .run(job(Arc::new(sink.clone()), 4, None))
        .await
        .unwrap();
    assert_eq!(report.state, RunState::Failed);
    let failed: Vec<_> = report.failed_partitions().collect();
    assert_eq!(
        failed.len(),
        1,
        "only the partition holding keys 1..=100 fails"
    );
    assert_eq!(failed[0].number, 0);
    assert_eq!(failed[0].attempts, 3);
    assert!(failed[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("broker refused the batch"));
    let stored = runtime.store().partitions(report.run_id).await.unwrap();
    assert_eq!(stored[0].state, PartitionState::Failed);
    assert_eq!(stored[0].attempts, 3);
    assert!(stored[1..].iter().all(|p| p.state == PartitionState::Done));
    let delivered = counts(&sink.0.messages());
    assert_eq!(
        delivered.len() as i64,
        2000 - stored[0].rows_planned,
        "the others delivered everything"
    );
    runtime.shutdown().await;
}

async fn a_worker_whose_lease_was_taken_over_stops_without_writing(url: String) {
    let mut cfg = config(&url);
    cfg.concurrency = 1;
    cfg.page_size = 50;
    cfg.lease = Duration::from_secs(5);
    cfg.heartbeat = Duration::from_millis(100);
    let runtime = RuntimeHandle::start(cfg).await.unwrap();
    common::seed_events(runtime.store(), 3000, 7).await;
    let sink = SlowSink::default();
    let run = runtime
        .start_run(job(Arc::new(sink.clone()), 1, None))
        .unwrap();
    let mut progress = run.subscribe();
    progress.wait_for(|p| p.rows_done >= 200).await.unwrap();
    let run_id = progress.borrow().run_id;
    let store = runtime.store().clone();

    // As if this instance had been paused past its lease: it expires, and
    // another instance takes the partition over. The live worker renews its
    // lease at every checkpoint, so expire-then-claim may lose that race;
    // try again until the claim wins.
    let mut heir = None;
    for _ in 0..200 {
        store
            .run(|c| c.batch("UPDATE tranche_partitions SET lease_expires_ms = 0"))
            .await
            .unwrap();
        heir = store
            .claim(run_id, "thief", Duration::from_secs(30))
            .await
            .unwrap();
        if heir.is_some() {
            break;
        }
    }
    let heir = heir.expect("the expired partition is claimable");
    assert!(heir.taken_over);
    let hwm = heir.hwm;
    // The lease keeper notices within a heartbeat; the worker stops.
    progress
        .wait_for(|p| p.partitions.iter().all(|pp| !pp.active))
        .await
        .unwrap();
    let after_stop = store.partition(heir.id).await.unwrap();
    assert_eq!(
        (
            after_stop.owner.as_deref(),
            after_stop.epoch,
            after_stop.rows_done,
            after_stop.cursor
        ),
        (Some("thief"), heir.epoch, heir.rows_done, heir.cursor),
        "the zombie wrote nothing after the takeover"
    );
    // The thief finishes the partition; the original run then closes.
    let rest = (heir.rows_planned - heir.rows_done) as u64;
    store
        .checkpoint(Checkpoint {
            partition_id: heir.id,
            owner: "thief".into(),
            epoch: heir.epoch,
            cursor: hwm,
            rows: rest,
            done: true,
            dead_letters: vec![],
            lease: Duration::from_secs(30),
        })
        .await
        .unwrap();
    let report = run.wait().await.unwrap();
    assert_eq!(report.state, RunState::Done);
    assert_eq!(
        store.partition(heir.id).await.unwrap().rows_done,
        heir.rows_planned
    );
    runtime.shutdown().await;
}

async fn two_instances_share_one_run_without_overlap(url: String) {
    let mut cfg = config(&url);
    cfg.concurrency = 2;
    cfg.page_size = 50;
    // B looks for A's plan every 10 ms, well within the run's length.
    cfg.poll_interval = Duration::from_millis(10);
    cfg.instance_id = Some("instance-a".into());
    let a = RuntimeHandle::start(cfg.clone()).await.unwrap();
    cfg.instance_id = Some("instance-b".into());
    let b = RuntimeHandle::start(cfg).await.unwrap();
    common::seed_events(a.store(), 8000, 7).await;
    let (sink_a, sink_b) = (SlowSink::default(), SlowSink::default());
    let (ra, rb) = futures::join!(
        a.run(job(Arc::new(sink_a.clone()), 8, None)),
        b.run(job(Arc::new(sink_b.clone()), 8, None))
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(ra.run_id, rb.run_id, "both joined the same run");
    assert_eq!((ra.state, rb.state), (RunState::Done, RunState::Done));
    assert!(
        ra.rows_published > 0 && rb.rows_published > 0,
        "both did work: {} / {}",
        ra.rows_published,
        rb.rows_published
    );
    let mut all = sink_a.0.messages();
    all.extend(sink_b.0.messages());
    let per_key = counts(&all);
    assert_eq!(per_key.len(), 8000);
    assert!(
        per_key.values().all(|&n| n == 1),
        "no partition was worked twice"
    );
    let runs = a.store().runs(JOB, 10).await.unwrap();
    assert_eq!(runs.len(), 1, "planned once");
    // Eight planned, plus one per range an idle worker split off.
    assert_eq!(runs[0].partitions as u64, 8 + ra.steals + rb.steals);
    a.shutdown().await;
    b.shutdown().await;
}

/// A sink that panics on one key.
#[derive(Clone, Default)]
struct PanicsOnKey7(MemorySink);

#[async_trait]
impl Sink for PanicsOnKey7 {
    fn name(&self) -> &str {
        "panics"
    }
    async fn deliver(&self, batch: &[Message]) -> Result<Delivery, SinkError> {
        assert!(batch.iter().all(|m| m.key != 7), "sink bug on key 7");
        self.0.deliver(batch).await
    }
}

async fn panics_in_user_code_end_runs_with_errors_not_hangs(url: String) {
    let runtime = RuntimeHandle::start(config(&url)).await.unwrap();
    common::seed_events(runtime.store(), 1000, 7).await;
    // A panicking processor makes its row poison.
    let sink = MemorySink::new();
    let panicky = Job::builder(JOB)
        .source(Source::new("events", "id", "at").unwrap())
        .strategy(Strategy::Range { partitions: 2 })
        .processor(|row: &SourceRow, _: &Scope| {
            assert!(row.key != 500, "processor bug on row 500");
            Ok(Some(Message::new(JOB, row.key, 1, Vec::new())))
        })
        .sink(Arc::new(sink.clone()))
        .build()
        .unwrap();
    let report = runtime.run(panicky).await.unwrap();
    assert_eq!(
        (report.state, report.dead_letters, sink.len()),
        (RunState::Done, 1, 999)
    );
    let letters = runtime.store().dead_letters(report.run_id).await.unwrap();
    assert_eq!(letters[0].row_key, Some(500));
    assert!(
        letters[0]
            .reason
            .contains("processor panicked: processor bug on row 500"),
        "{}",
        letters[0].reason
    );

    // A panicking sink fails its partition; the others finish.
    let report = runtime
        .run(job(Arc::new(PanicsOnKey7::default()), 4, None))
        .await
        .unwrap();
    assert_eq!(report.state, RunState::Failed);
    let failed: Vec<_> = report.failed_partitions().collect();
    assert_eq!(failed.len(), 1);
    assert!(failed[0]
        .last_error
        .as_deref()
        .unwrap()
        .contains("sink panicked: sink bug on key 7"));

    // A panicking identification query fails the run with its message.
    let identify_panics = Job::builder("identify-panics")
        .source(Source::new("events", "id", "at").unwrap())
        .scopes(tranche::job::Scopes::Identify(Arc::new(|_| {
            panic!("identify bug")
        })))
        .processor(|_: &SourceRow, _: &Scope| Ok(None))
        .sink(Arc::new(MemorySink::new()))
        .build()
        .unwrap();
    let err = runtime.run(identify_panics).await.unwrap_err();
    assert!(common::chain(&err).contains("identify bug"), "{err}");
    // The executor still serves queries afterwards.
    assert!(runtime.store().now_ms().await.unwrap() > 0);
    runtime.shutdown().await;
}

/// A sink that holds every delivery until the active run of [`JOB`] has
/// more than one partition, that is until an idle worker has split a busy
/// range (or 30 s have passed, when the test's assertion fails). Without it
/// a fast machine may finish the lone partition before anyone steals.
#[derive(Clone)]
struct HoldsUntilSplit {
    inner: MemorySink,
    store: tranche::store::Store,
}

#[async_trait]
impl Sink for HoldsUntilSplit {
    fn name(&self) -> &str {
        "holds-until-split"
    }
    async fn deliver(&self, batch: &[Message]) -> Result<Delivery, SinkError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(run)) = self.store.active_run(JOB).await {
                if self.store.partitions(run.id).await.map_or(0, |p| p.len()) > 1 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.deliver(batch).await
    }
}

/// Runs [`JOB`] over one partition into a memory sink behind
/// [`HoldsUntilSplit`]; the report and what the sink received.
async fn run_held_until_split(runtime: &RuntimeHandle) -> (RunReport, MemorySink) {
    let sink = MemorySink::new();
    let held = HoldsUntilSplit {
        inner: sink.clone(),
        store: runtime.store().clone(),
    };
    let report = runtime.run(job(Arc::new(held), 1, None)).await.unwrap();
    (report, sink)
}

/// One partition and three workers: the idle two split the busy one's
/// range (and each other's) instead of waiting, and every row still
/// arrives exactly once.
async fn idle_workers_split_a_busy_range_and_every_row_arrives_once(url: String) {
    let runtime = RuntimeHandle::start(config(&url)).await.unwrap();
    common::seed_events(runtime.store(), 20_000, 7).await;
    let (report, sink) = run_held_until_split(&runtime).await;
    assert_eq!(report.state, RunState::Done);
    assert!(report.steals >= 1, "idle workers split the lone partition");
    assert_eq!(report.partitions.len() as u64, 1 + report.steals);
    assert_eq!(report.rows_done, 20_000);
    let per_key = counts(&sink.messages());
    assert_eq!(per_key.len(), 20_000);
    assert!(per_key.values().all(|&n| n == 1), "a split replays nothing");
    let stored = runtime.store().partitions(report.run_id).await.unwrap();
    assert!(stored.iter().all(|p| p.state == PartitionState::Done));
    assert_eq!(stored.iter().map(|p| p.rows_done).sum::<i64>(), 20_000);
    assert!(stored.iter().skip(1).all(|p| p.split_from.is_some()));
    runtime.shutdown().await;
}

/// A split close behind pages the holder read ahead: five pages in one
/// partition, the first delivery held until the idle worker took the second
/// half, as near the holder as the steal margin lets it (two and a half
/// pages in). By then the holder's prefetcher has read page two under the
/// old bound; nothing the holder read ahead or reads after learning the cut
/// is published twice, and each half counts only its own rows.
async fn rows_read_ahead_beyond_a_split_are_not_published(url: String) {
    let mut cfg = config(&url);
    cfg.concurrency = 2;
    let rows = 5 * cfg.page_size as i64;
    let runtime = RuntimeHandle::start(cfg).await.unwrap();
    common::seed_events(runtime.store(), rows, 7).await;
    let (report, sink) = run_held_until_split(&runtime).await;
    assert_eq!(report.state, RunState::Done);
    assert_eq!(report.steals, 1, "the idle worker split the lone partition");
    assert_eq!(report.rows_done, rows);
    let per_key = counts(&sink.messages());
    assert_eq!(per_key.len() as i64, rows);
    assert!(
        per_key.values().all(|&n| n == 1),
        "rows read ahead beyond the cut were published by the holder too"
    );
    let stored = runtime.store().partitions(report.run_id).await.unwrap();
    let done: Vec<i64> = stored.iter().map(|p| p.rows_done).collect();
    assert_eq!(done.iter().sum::<i64>(), rows, "{done:?}");
    assert!(done.iter().all(|&n| n > 0 && n < rows), "{done:?}");
    runtime.shutdown().await;
}

on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    idle_workers_split_a_busy_range_and_every_row_arrives_once,
    rows_read_ahead_beyond_a_split_are_not_published,
    delivers_every_row_once_with_deterministic_ids,
    a_failing_sink_is_retried_without_losing_rows,
    poison_rows_go_to_dead_letters_within_the_skip_limit,
    beyond_the_skip_limit_a_partition_fails_and_the_others_finish,
    graceful_shutdown_checkpoints_and_the_next_runtime_resumes,
    a_shutdown_past_its_grace_abandons_what_is_in_flight,
    dropping_the_last_handle_shuts_down_gracefully,
    a_second_start_in_one_process_returns_the_running_run,
    a_partition_that_keeps_failing_is_failed_after_its_attempts,
    a_worker_whose_lease_was_taken_over_stops_without_writing,
    two_instances_share_one_run_without_overlap,
    panics_in_user_code_end_runs_with_errors_not_hangs,
);

/// The handle also starts cleanly inside an actix `System` (an actix-web
/// host), and from a current-thread tokio runtime.
#[actix::test]
async fn starts_inside_an_actix_system() {
    let (_dir, url) = common::sqlite_database();
    let runtime = RuntimeHandle::start(config(&url)).await.unwrap();
    common::seed_events(runtime.store(), 300, 7).await;
    let sink = MemorySink::new();
    let report = runtime
        .run(job(Arc::new(sink.clone()), 2, None))
        .await
        .unwrap();
    assert_eq!((report.state, sink.len()), (RunState::Done, 300));
    runtime.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn starts_from_a_current_thread_tokio_host() {
    let (_dir, url) = common::sqlite_database();
    let runtime = RuntimeHandle::start(config(&url)).await.unwrap();
    let handle = runtime.clone();
    // The handle is Send: drive it from a spawned task.
    let report = tokio::spawn(async move {
        common::seed_events(handle.store(), 300, 7).await;
        handle.run(job(Arc::new(MemorySink::new()), 3, None)).await
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.rows_done, 300);
    runtime.shutdown().await;
    assert!(matches!(
        runtime.start_run(job(Arc::new(MemorySink::new()), 1, None)),
        Err(Error::Shutdown)
    ));
}

#[tokio::test]
async fn bad_configuration_fails_before_anything_starts_and_names_the_field() {
    let (_dir, url) = common::sqlite_database();
    let mut cfg = config(&url);
    cfg.page_size = 0;
    match RuntimeHandle::start(cfg).await {
        Err(Error::Config(e)) => assert_eq!(e.field, "page_size"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    let mut cfg = config(&url);
    cfg.heartbeat = cfg.lease;
    match RuntimeHandle::start(cfg).await {
        Err(Error::Config(e)) => assert_eq!(e.field, "heartbeat"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    let err = Source::new("events", "id", "at; DROP TABLE events").unwrap_err();
    assert_eq!(err.field, "source.order_column");
    let err = Job::builder("x")
        .source(Source::new("events", "id", "at").unwrap())
        .strategy(Strategy::Modulo { modulus: 0 })
        .processor(|_: &SourceRow, _: &Scope| Ok(None))
        .sink(Arc::new(MemorySink::new()))
        .build()
        .unwrap_err();
    assert_eq!(err.field, "strategy.modulus");
    match RuntimeHandle::start(config("postgres://app:hunter2@127.0.0.1:1/nowhere")).await {
        Err(e) => {
            let shown = common::chain(&e);
            assert!(!shown.contains("hunter2"), "credentials leaked: {shown}");
            assert!(shown.contains("127.0.0.1:1"), "{shown}");
        }
        Ok(_) => panic!("no database listens on port 1"),
    }
}
