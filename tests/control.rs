//! Steering live runs through the database, on SQLite and PostgreSQL:
//! pause and resume across two instances, cancel, retry of failed
//! partitions, a cap on active partitions across three instances, the
//! health gate and the shared rate cap; and the commands' exit statuses.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tranche::control::ControlError;
use tranche::job::Throttle;
use tranche::sink::MemorySink;
use tranche::store::{Bind, PartitionState, RunState, Sql, Store};
use tranche::{Delivery, Message, RunHandle, RuntimeConfig, RuntimeHandle, Sink, SinkError};

const POLL: Duration = Duration::from_millis(20);

fn config(url: &str, instance: &str) -> RuntimeConfig {
    let mut c = RuntimeConfig::new(url);
    c.page_size = 50;
    c.concurrency = 2;
    c.poll_interval = POLL;
    c.backoff = Duration::from_millis(10);
    c.instance_id = Some(instance.into());
    c
}

/// A sink that takes its time per batch, so a run is still going when the
/// test acts, and counts what it was handed.
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

fn counts(messages: &[Message]) -> HashMap<i64, u32> {
    let mut out = HashMap::new();
    for m in messages {
        *out.entry(m.key).or_default() += 1;
    }
    out
}

/// Partitions of the run claimed under a live lease, read from the store.
async fn live_claims(store: &Store, run_id: i64) -> usize {
    let now = store.now_ms().await.unwrap();
    store
        .partitions(run_id)
        .await
        .unwrap()
        .iter()
        .filter(|p| {
            p.state == PartitionState::Claimed && p.lease_expires_ms.is_some_and(|e| e >= now)
        })
        .count()
}

/// Waits until `handle`'s progress satisfies `cond` (progress is published
/// at every checkpoint and every poll interval).
async fn wait_progress(
    what: &str,
    handle: &RunHandle,
    mut cond: impl FnMut(&tranche::runtime::RunProgress) -> bool,
) {
    let mut rx = handle.subscribe();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if cond(&rx.borrow_and_update()) {
                return;
            }
            rx.changed().await.expect("run still going");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// Waits until every handle has seen at least `polls` more poll intervals
/// (their progress' elapsed time moves at each poll).
async fn wait_polls(handles: &[&RunHandle], polls: u32) {
    for h in handles {
        let from = h.progress().elapsed;
        wait_progress("polls", h, |p| p.elapsed >= from + POLL * polls).await;
    }
}

async fn pause_hands_partitions_back_and_resume_finishes(url: String) {
    let a = RuntimeHandle::start(config(&url, "instance-a"))
        .await
        .unwrap();
    let b = RuntimeHandle::start(config(&url, "instance-b"))
        .await
        .unwrap();
    common::seed_events(a.store(), 4000, 7).await;
    let (sink_a, sink_b) = (SlowSink::default(), SlowSink::default());
    let ha = a
        .start_run(common::events_job("pausable", Arc::new(sink_a.clone()), 6))
        .unwrap();
    let hb = b
        .start_run(common::events_job("pausable", Arc::new(sink_b.clone()), 6))
        .unwrap();
    wait_progress("work on both", &ha, |p| p.rows_done > 200).await;
    let op = a.operator();
    let t = op.pause("pausable", None).await.unwrap();
    assert_eq!((t.from, t.to), (RunState::Running, RunState::Paused));
    let again = op.pause("pausable", None).await.unwrap();
    assert!(!again.changed(), "pausing a paused run changes nothing");

    // Both acknowledged, and every partition was handed back.
    for h in [&ha, &hb] {
        wait_progress("paused", h, |p| {
            p.state == RunState::Paused && p.partitions.iter().all(|pp| !pp.active)
        })
        .await;
    }
    let run_id = ha.progress().run_id;
    assert_eq!(live_claims(a.store(), run_id).await, 0, "no lease is held");
    let delivered = sink_a.0.len() + sink_b.0.len();
    wait_polls(&[&ha, &hb], 5).await;
    assert_eq!(
        sink_a.0.len() + sink_b.0.len(),
        delivered,
        "nothing is delivered while paused"
    );
    assert_eq!(live_claims(a.store(), run_id).await, 0);
    let status = op.status("pausable", None).await.unwrap();
    assert_eq!(status.run.state, RunState::Paused);
    assert!(status.rows_done > 0 && status.rows_done < 4000);
    assert!(status.audit.iter().any(|e| e.action == "pause"));

    let t = op.resume("pausable", None).await.unwrap();
    assert_eq!((t.from, t.to), (RunState::Paused, RunState::Running));
    let (ra, rb) = futures::join!(ha.wait(), hb.wait());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!((ra.state, rb.state), (RunState::Done, RunState::Done));
    let mut all = sink_a.0.messages();
    all.extend(sink_b.0.messages());
    let per_key = counts(&all);
    let lost = (1..=4000).filter(|k| !per_key.contains_key(k)).count();
    let unexpected = per_key.keys().filter(|k| !(1..=4000).contains(*k)).count();
    assert_eq!((lost, unexpected), (0, 0));
    assert!(
        per_key.values().all(|&n| n == 1),
        "a pause repeats nothing: pages in flight were checkpointed before the hand-back"
    );
    a.shutdown().await;
    b.shutdown().await;
}

async fn cancel_ends_the_run_for_good(url: String) {
    let runtime = RuntimeHandle::start(config(&url, "only")).await.unwrap();
    common::seed_events(runtime.store(), 4000, 7).await;
    let sink = SlowSink::default();
    let handle = runtime
        .start_run(common::events_job("doomed", Arc::new(sink.clone()), 4))
        .unwrap();
    wait_progress("some work", &handle, |p| p.rows_done > 100).await;
    let op = runtime.operator();
    let t = op.cancel("doomed", None).await.unwrap();
    assert_eq!((t.from, t.to), (RunState::Running, RunState::Cancelled));
    let report = handle.wait().await.unwrap();
    assert_eq!(report.state, RunState::Cancelled);
    assert!(!report.interrupted);
    let at_end = sink.0.len();
    assert!(at_end < 4000, "cancelled before the end ({at_end})");
    let stored = runtime.store().run_record(report.run_id).await.unwrap();
    assert_eq!(stored.state, RunState::Cancelled);
    assert!(stored.finished_ms.is_some());
    assert_eq!(live_claims(runtime.store(), report.run_id).await, 0);

    // Idempotent; and what a cancelled run forbids says so.
    assert!(!op
        .cancel("doomed", Some(report.run_id))
        .await
        .unwrap()
        .changed());
    match op.resume("doomed", Some(report.run_id)).await {
        Err(e @ ControlError::Forbidden { .. }) => {
            assert!(e.to_string().contains("cancelled"), "{e}");
            assert_eq!(e.exit_code(), 4);
        }
        other => panic!("resuming a cancelled run: {other:?}"),
    }
    assert!(matches!(
        op.pause("doomed", None).await,
        Err(ControlError::NoActiveRun(_))
    ));
    assert!(matches!(
        op.status("nosuchjob", None).await,
        Err(ControlError::UnknownJob(_))
    ));
    assert!(matches!(
        op.status("doomed", Some(report.run_id + 100)).await,
        Err(ControlError::UnknownRun { .. })
    ));
    assert_eq!(sink.0.len(), at_end, "nothing delivered after the end");

    // The next run is a new one, and it does the whole job.
    let fresh = SlowSink::default();
    let next = runtime
        .run(common::events_job("doomed", Arc::new(fresh.clone()), 4))
        .await
        .unwrap();
    assert_ne!(next.run_id, report.run_id);
    assert_eq!(next.state, RunState::Done);
    assert_eq!(counts(&fresh.0.messages()).len(), 4000);
    runtime.shutdown().await;
}

/// Refuses keys up to 100 (fatally) until told otherwise.
#[derive(Clone, Default)]
struct RefusesLowKeys {
    inner: MemorySink,
    fixed: Arc<AtomicBool>,
}

#[async_trait]
impl Sink for RefusesLowKeys {
    fn name(&self) -> &str {
        "refuses"
    }
    async fn deliver(&self, batch: &[Message]) -> Result<Delivery, SinkError> {
        if !self.fixed.load(Ordering::SeqCst) && batch.iter().any(|m| m.key <= 100) {
            return Err(SinkError::fatal("refuses", "downstream rejects these keys"));
        }
        self.inner.deliver(batch).await
    }
}

async fn retry_runs_failed_partitions_again(url: String) {
    let mut cfg = config(&url, "only");
    cfg.max_attempts = 1;
    let runtime = RuntimeHandle::start(cfg).await.unwrap();
    common::seed_events(runtime.store(), 1000, 7).await;
    let sink = RefusesLowKeys::default();
    let failed = runtime
        .run(common::events_job("flaky", Arc::new(sink.clone()), 4))
        .await
        .unwrap();
    assert_eq!(failed.state, RunState::Failed);
    let op = runtime.operator();
    assert!(matches!(
        op.retry("flaky", None, Some(99)).await,
        Err(ControlError::UnknownPartition { number: 99, .. })
    ));
    sink.fixed.store(true, Ordering::SeqCst);
    assert_eq!(op.retry("flaky", None, None).await.unwrap(), 1);
    let stored = runtime.store().run_record(failed.run_id).await.unwrap();
    assert_eq!(stored.state, RunState::Running);
    let report = runtime
        .run(common::events_job("flaky", Arc::new(sink.clone()), 4))
        .await
        .unwrap();
    assert_eq!(report.run_id, failed.run_id, "the retried run is joined");
    assert_eq!(report.state, RunState::Done);
    assert_eq!(counts(&sink.inner.messages()).len(), 1000);
    let parts = runtime.store().partitions(report.run_id).await.unwrap();
    assert!(parts.iter().all(|p| p.state == PartitionState::Done));
    // A done run has nothing to retry, and says so.
    assert!(matches!(
        op.retry("flaky", Some(report.run_id), None).await,
        Err(ControlError::Forbidden { .. })
    ));
    runtime.shutdown().await;
}

async fn a_cap_on_active_partitions_holds_across_instances(url: String) {
    let mut runtimes = Vec::new();
    for name in ["one", "two", "three"] {
        runtimes.push(RuntimeHandle::start(config(&url, name)).await.unwrap());
    }
    common::seed_events(runtimes[0].store(), 3000, 7).await;
    let throttle = Throttle::default().with_max_active_partitions(1);
    let sinks: Vec<SlowSink> = (0..3).map(|_| SlowSink::default()).collect();
    let handles: Vec<RunHandle> = runtimes
        .iter()
        .zip(&sinks)
        .map(|(rt, sink)| {
            let job = tranche::Job::builder("capped")
                .source(tranche::Source::new("events", "id", "at").unwrap())
                .strategy(tranche::Strategy::Range { partitions: 6 })
                .processor(|row: &tranche::SourceRow, _: &tranche::Scope| {
                    Ok(Some(Message::new("capped", row.key, 1, Vec::new())))
                })
                .sink(Arc::new(sink.clone()))
                .throttle(throttle.clone())
                .build()
                .unwrap();
            rt.start_run(job).unwrap()
        })
        .collect();
    wait_progress("planned", &handles[0], |p| p.planned).await;
    let run_id = handles[0].progress().run_id;
    // Sample the store throughout the run.
    let store = runtimes[0].store().clone();
    let most = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let most = Arc::clone(&most);
        tokio::spawn(async move {
            loop {
                let n = live_claims(&store, run_id).await;
                most.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut states = Vec::new();
    for h in handles {
        states.push(h.wait().await.unwrap().state);
    }
    sampler.abort();
    assert!(states.iter().all(|s| *s == RunState::Done), "{states:?}");
    assert_eq!(most.load(Ordering::SeqCst), 1, "never two claimed at once");
    let all: Vec<Message> = sinks.iter().flat_map(|s| s.0.messages()).collect();
    assert_eq!(counts(&all).len(), 3000);
    for rt in runtimes {
        rt.shutdown().await;
    }
}

async fn the_health_gate_holds_pages_back_until_healthy(url: String) {
    let runtime = RuntimeHandle::start(config(&url, "only")).await.unwrap();
    common::seed_events(runtime.store(), 1000, 7).await;
    let set_load = |v: i64| {
        let store = runtime.store().clone();
        async move {
            store
                .run(move |c| {
                    c.batch("CREATE TABLE IF NOT EXISTS db_load (v BIGINT NOT NULL)")?;
                    c.batch("DELETE FROM db_load")?;
                    c.execute(&Sql::new("INSERT INTO db_load (v) VALUES (?)").bind(Bind::Int(v)))
                })
                .await
                .unwrap()
        }
    };
    set_load(9).await;
    let sink = SlowSink::default();
    let job = tranche::Job::builder("gated")
        .source(tranche::Source::new("events", "id", "at").unwrap())
        .strategy(tranche::Strategy::Range { partitions: 2 })
        .processor(|row: &tranche::SourceRow, _: &tranche::Scope| {
            Ok(Some(Message::new("gated", row.key, 1, Vec::new())))
        })
        .sink(Arc::new(sink.clone()))
        .throttle(Throttle::default().with_health_query(
            "SELECT MAX(v) FROM db_load",
            5.0,
            Duration::from_millis(20),
        ))
        .build()
        .unwrap();
    let handle = runtime.start_run(job).unwrap();
    wait_progress("unhealthy", &handle, |p| {
        p.health
            .as_deref()
            .is_some_and(|h| h.contains("returned 9"))
    })
    .await;
    wait_polls(&[&handle], 5).await;
    assert_eq!(sink.0.len(), 0, "no page starts while unhealthy");
    let status = runtime.operator().status("gated", None).await.unwrap();
    assert!(
        status
            .run
            .health
            .as_deref()
            .unwrap_or("")
            .contains("above health_max 5"),
        "status shows why: {:?}",
        status.run.health
    );
    set_load(1).await;
    let report = handle.wait().await.unwrap();
    assert_eq!(report.state, RunState::Done);
    assert_eq!(counts(&sink.0.messages()).len(), 1000);
    runtime.shutdown().await;
}

async fn a_rate_cap_bounds_the_whole_run(url: String) {
    let runtime = RuntimeHandle::start(config(&url, "only")).await.unwrap();
    common::seed_events(runtime.store(), 1500, 7).await;
    let sink = MemorySink::new();
    let job = tranche::Job::builder("capped-rate")
        .source(tranche::Source::new("events", "id", "at").unwrap())
        .strategy(tranche::Strategy::Range { partitions: 3 })
        .processor(|row: &tranche::SourceRow, _: &tranche::Scope| {
            Ok(Some(Message::new("capped-rate", row.key, 1, Vec::new())))
        })
        .sink(Arc::new(sink.clone()))
        .throttle(Throttle::default().with_max_rows_per_s(1000))
        .build()
        .unwrap();
    let handle = runtime.start_run(job).unwrap();
    let report = handle.wait().await.unwrap();
    assert_eq!(report.state, RunState::Done);
    assert_eq!(sink.len(), 1500);
    // 1500 rows at 1000 rows/s: the last page (50 rows per worker, two
    // workers) may start at once, the rest waits its turn.
    assert!(
        report.elapsed >= Duration::from_millis(1400),
        "took {:?}",
        report.elapsed
    );
    runtime.shutdown().await;
}

async fn a_dry_plan_writes_nothing_and_is_the_plan_the_run_gets(url: String) {
    // No splits, so the run's partitions stay as planned.
    let mut cfg = config(&url, "planner");
    cfg.work_stealing = false;
    let runtime = RuntimeHandle::start(cfg).await.unwrap();
    common::seed_events(runtime.store(), 3000, 7).await;
    let sink = MemorySink::new();
    let plan = runtime
        .plan(common::events_job("planned", Arc::new(sink.clone()), 5))
        .await
        .unwrap();
    assert_eq!((plan.strategy, plan.rows_identified), ("range", 3000));
    assert_eq!(plan.partitions.len(), 5);
    assert_eq!(
        plan.partitions.iter().map(|p| p.rows_planned).sum::<i64>(),
        3000
    );
    assert!((1.0..1.05).contains(&plan.skew), "even cuts: {}", plan.skew);
    let sample = plan.sample.expect("a sampled read");
    assert_eq!(sample.rows, 50, "one page of page_size rows");
    assert!(plan.estimated_read(2).is_some());
    assert!(
        runtime
            .store()
            .runs("planned", 10)
            .await
            .unwrap()
            .is_empty(),
        "no run opened"
    );
    assert!(sink.messages().is_empty(), "nothing delivered");

    // The run then plans the very same partitions.
    let report = runtime
        .run(common::events_job("planned", Arc::new(sink.clone()), 5))
        .await
        .unwrap();
    assert_eq!(report.state, RunState::Done);
    let stored = runtime.store().partitions(report.run_id).await.unwrap();
    let shape = |p: &tranche::store::PartitionRecord| (p.number, p.range, p.rows_planned, p.hwm);
    assert_eq!(
        stored.iter().map(shape).collect::<Vec<_>>(),
        plan.partitions.iter().map(shape).collect::<Vec<_>>()
    );

    // A source a run would refuse is refused the same way.
    let bad = tranche::Job::builder("planned")
        .source(tranche::Source::new("no_such_table", "id", "at").unwrap())
        .strategy(tranche::Strategy::Range { partitions: 2 })
        .processor(|_: &tranche::SourceRow, _: &tranche::Scope| Ok(None))
        .sink(Arc::new(MemorySink::new()))
        .build()
        .unwrap();
    match runtime.plan(bad).await {
        Err(tranche::Error::Config(e)) => assert_eq!(e.field, "source.table"),
        other => panic!("refused naming source.table, got {other:?}"),
    }
    runtime.shutdown().await;
}

async fn an_unreadable_order_is_counted_by_the_plan_and_dead_lettered_by_the_run(url: String) {
    let runtime = RuntimeHandle::start(config(&url, "unreadable"))
        .await
        .unwrap();
    common::seed_events(runtime.store(), 1000, 7).await;
    // Row 10's order value cannot be read: a text on SQLite, NULL on
    // PostgreSQL and MySQL.
    let dialect = runtime.store().dialect();
    runtime
        .store()
        .run(move |c| match dialect {
            tranche::store::Dialect::Sqlite => {
                c.batch("UPDATE events SET at = 'soon' WHERE id = 10")
            }
            tranche::store::Dialect::Mysql => c.batch(
                "ALTER TABLE events MODIFY at BIGINT NULL; \
                 UPDATE events SET at = NULL WHERE id = 10",
            ),
            _ => c.batch(
                "ALTER TABLE events ALTER COLUMN at DROP NOT NULL; \
                 UPDATE events SET at = NULL WHERE id = 10",
            ),
        })
        .await
        .unwrap();
    let sink = MemorySink::new();
    let plan = runtime
        .plan(common::events_job("unreadable", Arc::new(sink.clone()), 3))
        .await
        .unwrap();
    assert_eq!((plan.rows_identified, plan.rows_unreadable), (1000, 1));
    assert_eq!(
        plan.partitions.iter().map(|p| p.rows_planned).sum::<i64>(),
        999
    );

    let report = runtime
        .run(common::events_job("unreadable", Arc::new(sink.clone()), 3))
        .await
        .unwrap();
    assert_eq!(report.state, RunState::Done);
    let delivered = counts(&sink.messages());
    assert_eq!(delivered.len(), 999);
    assert!(!delivered.contains_key(&10));
    let (_, letters) = runtime
        .operator()
        .dead_letters("unreadable", None)
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].row_key, Some(10));
    assert!(letters[0].reason.contains("at"), "{}", letters[0].reason);

    // Still unreadable: a requeue finds no row to read and keeps it.
    let requeued = runtime
        .requeue_dead_letters(
            common::events_job("unreadable", Arc::new(sink.clone()), 3),
            None,
        )
        .await
        .unwrap();
    assert_eq!((requeued.delivered, requeued.not_found), (0, 1));
    runtime.shutdown().await;
}

/// A job over `events` whose processor rejects every hundredth key while
/// `strict`, always rejects key 300, and skips key 700 once lenient.
fn picky_job(name: &str, sink: Arc<dyn Sink>, strict: Arc<AtomicBool>) -> tranche::Job {
    let job = name.to_owned();
    tranche::Job::builder(name)
        .source(tranche::Source::new("events", "id", "at").unwrap())
        .strategy(tranche::Strategy::Range { partitions: 3 })
        .processor(move |row: &tranche::SourceRow, _: &tranche::Scope| {
            let strict = strict.load(Ordering::SeqCst);
            match row.key {
                300 => Err(tranche::Poison("300 is still bad".into())),
                k if strict && k % 100 == 0 => Err(tranche::Poison(format!("{k} is bad"))),
                700 => Ok(None),
                k => Ok(Some(Message::new(
                    &job,
                    k,
                    1,
                    format!("{{\"id\":{k}}}").into_bytes(),
                ))),
            }
        })
        .sink(sink)
        .build()
        .unwrap()
}

async fn requeue_reads_dead_letters_again_and_records_each_outcome(url: String) {
    let runtime = RuntimeHandle::start(config(&url, "requeuer"))
        .await
        .unwrap();
    common::seed_events(runtime.store(), 1000, 7).await;
    let strict = Arc::new(AtomicBool::new(true));
    let sink = MemorySink::new();
    let report = runtime
        .run(picky_job("picky", Arc::new(sink.clone()), strict.clone()))
        .await
        .unwrap();
    assert_eq!(report.state, RunState::Done);
    assert_eq!(report.dead_letters, 10);
    assert_eq!(sink.messages().len(), 990);
    // One row disappears from the source before the requeue.
    runtime
        .store()
        .run(|c| c.execute(&Sql::new("DELETE FROM events WHERE id = 500")))
        .await
        .unwrap();

    strict.store(false, Ordering::SeqCst);
    let again = MemorySink::new();
    let requeued = runtime
        .requeue_dead_letters(
            picky_job("picky", Arc::new(again.clone()), strict.clone()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(requeued.run_id, report.run_id);
    assert_eq!(
        (
            requeued.delivered,
            requeued.skipped,
            requeued.still_failing,
            requeued.not_found,
            requeued.without_key
        ),
        (7, 1, 1, 1, 0),
        "{requeued}"
    );
    let mut keys: Vec<i64> = again.messages().iter().map(|m| m.key).collect();
    keys.sort();
    assert_eq!(keys, [100, 200, 400, 600, 800, 900, 1000]);
    let ids: Vec<String> = again.messages().iter().map(|m| m.id.to_string()).collect();
    assert!(
        ids.contains(&"picky:100:1".to_owned()),
        "the same ids: {ids:?}"
    );

    let op = runtime.operator();
    let (_, left) = op.dead_letters("picky", None).await.unwrap();
    let mut left: Vec<(Option<i64>, String)> =
        left.into_iter().map(|d| (d.row_key, d.reason)).collect();
    left.sort();
    assert_eq!(left.len(), 2, "{left:?}");
    assert_eq!(left[0], (Some(300), "300 is still bad".to_owned()));
    assert_eq!(left[1].0, Some(500));
    assert!(left[1].1.contains("500 is bad"), "kept as it was: {left:?}");
    let audit = op.audit_log("picky", 5).await.unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "requeue-dead-letters" && a.detail.contains("7 delivered")),
        "{audit:?}"
    );

    // Again: nothing more to deliver, and an unknown run is an error.
    let twice = runtime
        .requeue_dead_letters(
            picky_job("picky", Arc::new(again.clone()), strict.clone()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (twice.delivered, twice.still_failing, twice.not_found),
        (0, 1, 1)
    );
    assert!(matches!(
        runtime
            .requeue_dead_letters(
                picky_job("picky", Arc::new(again.clone()), strict),
                Some(999)
            )
            .await,
        Err(ControlError::UnknownRun { run_id: 999, .. })
    ));
    runtime.shutdown().await;
}

on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    pause_hands_partitions_back_and_resume_finishes,
    a_dry_plan_writes_nothing_and_is_the_plan_the_run_gets,
    requeue_reads_dead_letters_again_and_records_each_outcome,
    an_unreadable_order_is_counted_by_the_plan_and_dead_lettered_by_the_run,
    cancel_ends_the_run_for_good,
    retry_runs_failed_partitions_again,
    a_cap_on_active_partitions_holds_across_instances,
    the_health_gate_holds_pages_back_until_healthy,
    a_rate_cap_bounds_the_whole_run,
);

/// The README's table of metrics names every series the library records.
#[test]
fn the_readme_lists_every_metric() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (name, kind, labels, _) in tranche::runtime::metrics::SERIES {
        assert!(
            readme.contains(&format!("| `{name}` | {kind} | {labels} |")),
            "README lists {name}"
        );
    }
}

/// The commands against a real `tranche run` process on SQLite: what each
/// prints and the exit statuses the README documents.
mod commands {
    use std::process::{Output, Stdio};

    use diesel::connection::SimpleConnection;
    use diesel::{Connection, RunQueryDsl, SqliteConnection};

    use super::common::{tranche_command, wait_until};

    #[derive(diesel::QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }

    fn tranche(args: &[&str]) -> Output {
        tranche_command().args(args).output().expect("run tranche")
    }

    fn text(out: &Output) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// The JSON progress lines a command printed on stderr.
    fn progress_lines(out: &Output) -> Vec<serde_json::Value> {
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "progress")
            .collect()
    }

    fn status_json(config: &str) -> Option<serde_json::Value> {
        let out = tranche(&["status", "--config", config, "--json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("status --json is JSON"))
    }

    /// A SQLite database of `rows` events and a job file over it into the
    /// null sink, each batch taking `delay_ms`: the database's path, its
    /// URL and the job file's path.
    fn steered_job(
        dir: &std::path::Path,
        rows: i64,
        delay_ms: u64,
    ) -> (std::path::PathBuf, String, String) {
        let db = dir.join("app.db");
        let mut c = SqliteConnection::establish(db.to_str().unwrap()).unwrap();
        let values: Vec<String> = (1..=rows).map(|id| format!("({id}, {})", id / 3)).collect();
        c.batch_execute(&format!(
            "CREATE TABLE events (id BIGINT PRIMARY KEY, at BIGINT NOT NULL); \
             CREATE INDEX events_at ON events (at, id); \
             INSERT INTO events (id, at) VALUES {};",
            values.join(", ")
        ))
        .unwrap();
        drop(c);
        let url = format!("sqlite://{}", db.display());
        let config = dir.join("job.toml");
        std::fs::write(
            &config,
            format!(
                "database_url = \"{url}\"\n\n[job]\nname = \"steered\"\nversion = 1\n\n\
                 [source]\ntable = \"events\"\nkey_column = \"id\"\norder_column = \"at\"\n\n\
                 [strategy]\nkind = \"range\"\npartitions = 4\n\n\
                 [runtime]\npage_size = 20\nconcurrency = 2\npoll_interval = \"50ms\"\n\n\
                 [sink]\nkind = \"null\"\ndelay_ms = {delay_ms}\n"
            ),
        )
        .unwrap();
        (db, url, config.to_str().unwrap().to_owned())
    }

    #[test]
    fn commands_steer_a_running_process_and_exit_with_documented_codes() {
        let dir = tempfile::tempdir().unwrap();
        let (db, url, config) = steered_job(dir.path(), 4000, 50);
        let config = config.as_str();

        // A dry run plans the job and leaves the database as it was.
        let out = tranche(&["plan", "--config", config, "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan --json");
        assert_eq!(plan["rows_identified"], 4000);
        assert_eq!(plan["partitions"].as_array().unwrap().len(), 4);
        assert!(plan["estimated_read_s"].as_f64().is_some(), "{plan}");
        let tables = {
            let mut c = SqliteConnection::establish(db.to_str().unwrap()).unwrap();
            diesel::sql_query("SELECT name FROM sqlite_master WHERE type = 'table'")
                .load::<Name>(&mut c)
                .unwrap()
        };
        assert_eq!(
            tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            ["events"],
            "only the source table: nothing written"
        );
        let out = tranche(&["plan", "--config", config]);
        assert!(text(&out).contains("4 range partitions"), "{}", text(&out));

        // Before any run: the job is unknown.
        let out = tranche(&["status", "--db", &url, "--job", "steered"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains("unknown job"), "{}", text(&out));

        let run = tranche_command()
            .args(["run", "--config", config, "--quiet"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_until("rows done", 60, || {
            status_json(config).is_some_and(|s| s["rows_done"].as_i64().unwrap_or(0) > 0)
        });

        let out = tranche(&["pause", "--config", config]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(text(&out).contains("running -> paused"), "{}", text(&out));
        let out = tranche(&["pause", "--config", config]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(text(&out).contains("already paused"), "{}", text(&out));
        wait_until("partitions handed back", 60, || {
            status_json(config).is_some_and(|s| {
                s["partitions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|p| p["state"] != "claimed")
            })
        });
        let out = tranche(&["resume", "--config", config]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let out = tranche(&["throttle", "--config", config, "--max-rows-per-s", "500"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let s = status_json(config).unwrap();
        assert_eq!(s["run"]["throttle"]["max_rows_per_s"], 500);
        let out = tranche(&["throttle", "--config", config, "--unset", "bogus"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains("--unset"), "{}", text(&out));

        let out = tranche(&["cancel", "--config", config]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let ended = run.wait_with_output().unwrap();
        assert_eq!(ended.status.code(), Some(3), "cancelled: {}", text(&ended));
        let said = text(&ended);
        assert!(said.contains("running -> paused"), "{said}");
        assert!(said.contains("-> cancelled"), "{said}");
        let run_id = s["run"]["id"].as_i64().unwrap().to_string();

        // Now nothing is active; the run is cancelled and says what it forbids.
        let out = tranche(&["pause", "--config", config]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let out = tranche(&["cancel", "--config", config, "--run", &run_id]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(text(&out).contains("already cancelled"), "{}", text(&out));
        let out = tranche(&["resume", "--config", config, "--run", &run_id]);
        assert_eq!(out.status.code(), Some(4), "{}", text(&out));
        assert!(text(&out).contains("cancelled"), "{}", text(&out));
        let out = tranche(&["status", "--config", config, "--run", "999"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let out = tranche(&["dead-letters", "purge", "--config", config]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains("--yes"), "{}", text(&out));
        let out = tranche(&["dead-letters", "requeue", "--config", config, "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let requeued: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(requeued["run_id"].to_string(), run_id);
        assert_eq!(requeued["delivered"], 0, "no dead letters: {requeued}");
        let out = tranche(&[
            "dead-letters",
            "requeue",
            "--config",
            config,
            "--run",
            "999",
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));

        // Watching an ended run looks once: one JSON line.
        let out = tranche(&["status", "--config", config, "--watch", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let last: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(last["run"]["state"], "cancelled");

        let out = tranche(&["status", "--config", config]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let shown = text(&out);
        assert!(shown.contains("job steered: cancelled"), "{shown}");
        for action in [
            "pause",
            "resume",
            "throttle",
            "cancel",
            "requeue-dead-letters",
        ] {
            assert!(
                shown.contains(&format!("  {action}  ")),
                "{action} audited: {shown}"
            );
        }
        assert!(shown.contains('@'), "who acted: {shown}");
    }

    #[test]
    fn without_a_terminal_run_prints_a_progress_line_per_interval() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, config) = steered_job(dir.path(), 2000, 30);
        let out = tranche(&[
            "run",
            "--config",
            &config,
            "--progress-interval",
            "100ms",
            "--progress-format",
            "json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let lines = progress_lines(&out);
        assert!(lines.len() >= 2, "progress lines: {}", text(&out));
        let done: Vec<i64> = lines
            .iter()
            .map(|l| l["rows_done"].as_i64().unwrap())
            .collect();
        assert!(
            done.windows(2).all(|w| w[0] <= w[1]),
            "rows only grow: {done:?}"
        );
        for l in &lines {
            assert_eq!(l["rows_identified"], 2000);
            assert_eq!(l["partitions"], 4);
            assert!(l["partitions_active"].as_u64().unwrap() <= 2, "{l}");
        }
        // As text, and none with --quiet.
        let out = tranche(&[
            "run",
            "--config",
            &config,
            "--run-key",
            "again",
            "--progress-interval",
            "100ms",
        ]);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("  progress: run "),
            "{}",
            text(&out)
        );
        let out = tranche(&[
            "run",
            "--config",
            &config,
            "--run-key",
            "quiet",
            "--quiet",
            "--progress-interval",
            "100ms",
        ]);
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("progress:"),
            "{}",
            text(&out)
        );
    }

    #[test]
    fn schedule_prints_a_progress_line_per_interval_of_its_run() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, config) = steered_job(dir.path(), 2000, 30);
        let mut file = std::fs::read_to_string(&config).unwrap();
        file.push_str("\n[schedule]\nat = \"2000-01-01T00:00:00Z\"\n");
        std::fs::write(&config, file).unwrap();
        let out = tranche(&[
            "schedule",
            "--config",
            &config,
            "--progress-interval",
            "100ms",
            "--progress-format",
            "json",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let lines = progress_lines(&out);
        assert!(!lines.is_empty(), "progress lines: {}", text(&out));
        for l in &lines {
            assert_eq!(l["job"], "steered");
            assert!(l["rows_done"].as_i64().unwrap() <= 2000, "{l}");
        }
    }

    #[test]
    fn json_logs_carry_the_run_and_the_partition() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, config) = steered_job(dir.path(), 200, 0);
        let out = tranche_command()
            .args([
                "run",
                "--config",
                &config,
                "--quiet",
                "--log-format",
                "json",
            ])
            .env("RUST_LOG", "tranche=debug")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
            .collect();
        assert!(!lines.is_empty(), "{}", text(&out));
        // Every worker event sits in its partition's span, inside the run's.
        let in_partition: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| l["target"] == "tranche::runtime::worker")
            .collect();
        assert!(!in_partition.is_empty(), "{}", text(&out));
        for line in in_partition {
            let spans = line["spans"].as_array().expect("a span list");
            let field = |name: &str| spans.iter().find_map(|s| s.get(name).cloned());
            assert_eq!(
                field("job.name"),
                Some(serde_json::json!("steered")),
                "{line}"
            );
            assert!(
                field("run.id").is_some_and(|v| v.as_i64().is_some()),
                "{line}"
            );
            assert!(
                field("partition.id").is_some_and(|v| v.as_i64().is_some()),
                "{line}"
            );
            assert!(field("partition.epoch").is_some(), "{line}");
        }
    }

    /// The sum of a series over its label sets, from Prometheus' text form.
    fn series(text: &str, name: &str) -> Option<f64> {
        let values: Vec<f64> = text
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    fn scrape(port: u16) -> String {
        super::common::scrape_metrics(port).expect("metrics served")
    }

    #[test]
    fn metrics_served_during_a_run_agree_with_its_report() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _, config) = steered_job(dir.path(), 4000, 50);
        let config = config.as_str();
        let port = super::common::free_port();
        let summary = dir.path().join("summary.json");
        let run = tranche_command()
            .args(["run", "--config", config, "--quiet", "--metrics-addr"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("--summary-json")
            .arg(&summary)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_until("rows done", 60, || {
            status_json(config).is_some_and(|s| s["rows_done"].as_i64().unwrap_or(0) > 0)
        });
        wait_until("the page counters served", 60, || {
            super::common::scrape_metrics(port)
                .and_then(|text| series(&text, "tranche_rows_checkpointed_total"))
                .is_some_and(|n| n > 0.0)
        });
        let during = scrape(port);
        assert!(during.contains("job=\"steered\""), "{during}");
        assert!(
            series(&during, "tranche_page_read_seconds_count").is_some(),
            "{during}"
        );
        assert!(
            series(&during, "tranche_rows_remaining").is_some_and(|n| n > 0.0),
            "{during}"
        );
        for gauge in [
            "tranche_messages_in_flight",
            "tranche_publisher_mailbox_depth",
            "tranche_partitions_pending",
            "tranche_partitions_failed",
            "tranche_throttle_rows_per_s",
        ] {
            assert!(series(&during, gauge).is_some(), "{gauge}: {during}");
        }
        assert_eq!(series(&during, "tranche_throttle_held"), Some(0.0));
        wait_until("a lease with an age", 60, || {
            series(&scrape(port), "tranche_oldest_lease_age_seconds").is_some_and(|n| n > 0.0)
        });

        // Paused, nothing moves: the counters are the run's checkpoints.
        assert_eq!(
            tranche(&["pause", "--config", config]).status.code(),
            Some(0)
        );
        wait_until("partitions handed back", 60, || {
            status_json(config).is_some_and(|s| {
                s["partitions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|p| p["state"] != "claimed")
            })
        });
        // The gauges follow at the next poll: held back, nothing claimed or
        // in flight, the pending partitions as the database has them.
        let pending = status_json(config).unwrap()["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["state"] == "pending")
            .count() as f64;
        assert!(pending > 0.0);
        wait_until("the gauges to show the pause", 60, || {
            let text = scrape(port);
            series(&text, "tranche_throttle_held") == Some(1.0)
                && series(&text, "tranche_partitions_pending") == Some(pending)
                && series(&text, "tranche_oldest_lease_age_seconds") == Some(0.0)
                && series(&text, "tranche_messages_in_flight") == Some(0.0)
                && series(&text, "tranche_publisher_mailbox_depth") == Some(0.0)
        });
        let paused = scrape(port);
        let done = status_json(config).unwrap()["rows_done"].as_f64().unwrap();
        let checkpointed = series(&paused, "tranche_rows_checkpointed_total").unwrap();
        assert_eq!(checkpointed, done, "{paused}");
        assert_eq!(series(&paused, "tranche_rows_read_total"), Some(done));
        let confirmed = series(&paused, "tranche_rows_confirmed_total").unwrap();
        assert_eq!(
            series(&paused, "tranche_rows_published_total"),
            Some(confirmed)
        );

        assert_eq!(
            tranche(&["cancel", "--config", config]).status.code(),
            Some(0)
        );
        let ended = run.wait_with_output().unwrap();
        assert_eq!(ended.status.code(), Some(3), "{}", text(&ended));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
        assert_eq!(report["rows_checkpointed"].as_f64(), Some(checkpointed));
        assert_eq!(report["rows_published"].as_f64(), Some(confirmed));
    }
}
