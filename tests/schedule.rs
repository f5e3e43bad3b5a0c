//! Scheduling on both backends: ticks start runs keyed by the tick, a tick
//! that finds the previous run still active is skipped, two instances with
//! the same schedule share each tick's run, and the history keeps them all.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tranche::runtime::{Schedule, ScheduleStatus};
use tranche::sink::MemorySink;
use tranche::store::RunState;
use tranche::{Delivery, Job, Message, RuntimeConfig, RuntimeHandle, Sink, SinkError};

const JOB: &str = "nightly";

/// Holds every delivery until the gate opens: a run that stays active.
struct GateSink {
    open: watch::Receiver<bool>,
}

#[async_trait]
impl Sink for GateSink {
    fn name(&self) -> &str {
        "gate"
    }

    async fn deliver(&self, batch: &[Message]) -> Result<Delivery, SinkError> {
        let mut open = self.open.clone();
        while !*open.borrow_and_update() {
            open.changed()
                .await
                .map_err(|_| SinkError::fatal("gate", "gate dropped"))?;
        }
        Ok(Delivery::confirmed(batch.len()))
    }
}

fn config(url: &str) -> RuntimeConfig {
    let mut c = RuntimeConfig::new(url);
    c.page_size = 100;
    c.concurrency = 2;
    c.poll_interval = Duration::from_millis(50);
    c
}

fn job(sink: Arc<dyn Sink>) -> Job {
    common::events_job(JOB, sink, 2)
}

/// Waits on the schedule's status until `cond` holds.
async fn status_until(
    rx: &mut watch::Receiver<ScheduleStatus>,
    what: &str,
    cond: impl Fn(&ScheduleStatus) -> bool,
) -> ScheduleStatus {
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if cond(&rx.borrow_and_update()) {
                return rx.borrow().clone();
            }
            rx.changed().await.expect("schedule alive");
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", *rx.borrow()))
}

async fn a_tick_while_a_run_is_active_is_skipped(url: String) {
    let runtime = RuntimeHandle::start(config(&url)).await.unwrap();
    common::seed_events(runtime.store(), 500, 10).await;
    let (gate, open) = watch::channel(false);
    let schedule = runtime
        .schedule(
            job(Arc::new(GateSink { open })),
            Schedule::every(Duration::from_secs(1)).unwrap(),
        )
        .unwrap();
    let mut status = schedule.subscribe();
    // The first tick's run blocks at the gate; the next tick must skip.
    status_until(&mut status, "a skipped tick", |s| {
        s.runs == 1 && s.skipped >= 1
    })
    .await;
    let store = runtime.store().clone();
    assert_eq!(store.runs(JOB, 10).await.unwrap().len(), 1, "no second run");
    gate.send_replace(true);
    let s = status_until(&mut status, "a second run to end", |s| {
        s.runs >= 2 && s.last_report.as_ref().is_some_and(|r| r.run_id > 1)
    })
    .await;
    schedule.cancel();
    status_until(&mut status, "the schedule to stop", |s| s.finished).await;
    assert!(s.last_error.is_none(), "{s:?}");

    let history = store.runs(JOB, 100).await.unwrap();
    assert!(history.len() >= 2);
    let keys: HashSet<_> = history.iter().map(|r| r.run_key.clone().unwrap()).collect();
    assert_eq!(keys.len(), history.len(), "one run per tick key");
    assert!(keys.iter().all(|k| k.starts_with("tick-")), "{keys:?}");
    // Newest first: every run began after the one before it ended.
    let mut ended: Vec<_> = history.iter().rev().collect();
    ended.retain(|r| r.state == RunState::Done);
    for pair in ended.windows(2) {
        assert!(
            pair[1].started_ms >= pair[0].finished_ms.unwrap(),
            "runs of one job never overlap: {pair:?}"
        );
    }
    runtime.shutdown().await;
}

async fn two_instances_with_one_schedule_share_each_tick_s_run(url: String) {
    let a = RuntimeHandle::start(config(&url)).await.unwrap();
    let b = RuntimeHandle::start(config(&url)).await.unwrap();
    common::seed_events(a.store(), 2000, 10).await;
    let (sink_a, sink_b) = (MemorySink::new(), MemorySink::new());
    let every = Schedule::every(Duration::from_secs(1)).unwrap();
    let sa = a
        .schedule(job(Arc::new(sink_a.clone())), every.clone())
        .unwrap();
    let sb = b.schedule(job(Arc::new(sink_b.clone())), every).unwrap();
    let (mut ra, mut rb) = (sa.subscribe(), sb.subscribe());
    let done = |s: &ScheduleStatus| s.last_report.as_ref().is_some_and(|r| r.run_id >= 2);
    let last_a = status_until(&mut ra, "two runs on a", done).await;
    let last_b = status_until(&mut rb, "two runs on b", done).await;
    assert!(last_a.last_error.is_none(), "{last_a:?}");
    assert!(last_b.last_error.is_none(), "{last_b:?}");
    sa.cancel();
    sb.cancel();
    status_until(&mut ra, "a to stop", |s| s.finished).await;
    status_until(&mut rb, "b to stop", |s| s.finished).await;
    let history = a.store().runs(JOB, 100).await.unwrap();
    let keys: HashSet<_> = history.iter().map(|r| r.run_key.clone()).collect();
    assert_eq!(keys.len(), history.len(), "each tick made one run, not two");
    for run in history.iter().filter(|r| r.state == RunState::Done) {
        assert_eq!(
            run.rows_done, 2000,
            "each run covered the table once: {run:?}"
        );
    }
    a.shutdown().await;
    b.shutdown().await;
}

async fn a_one_time_schedule_runs_once_and_finishes(url: String) {
    let runtime = RuntimeHandle::start(config(&url)).await.unwrap();
    common::seed_events(runtime.store(), 300, 10).await;
    let sink = MemorySink::new();
    let at = std::time::SystemTime::now() + Duration::from_millis(300);
    let schedule = runtime
        .schedule(job(Arc::new(sink.clone())), Schedule::at(at))
        .unwrap();
    let mut status = schedule.subscribe();
    let s = status_until(&mut status, "the one run to end", |s| {
        s.finished && s.last_report.is_some()
    })
    .await;
    assert_eq!((s.ticks, s.runs, s.skipped), (1, 1, 0));
    assert_eq!(s.last_report.unwrap().rows_done, 300);
    assert_eq!(sink.messages().len(), 300);
    let history = runtime.store().runs(JOB, 10).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].run_key, Some(tranche::runtime::tick_key(at)));
    runtime.shutdown().await;
}

on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_tick_while_a_run_is_active_is_skipped,
    two_instances_with_one_schedule_share_each_tick_s_run,
    a_one_time_schedule_runs_once_and_finishes,
);
