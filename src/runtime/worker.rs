//! The partition worker: page → publish → confirm → checkpoint, repeated.
//!
//! ```text
//!   prefetcher: read page n+1 ──▶ channel of one; read n+2 once it is taken
//!                                      │
//!   worker: take page n ──▶ process rows ──▶ publish (send().await, bounded)
//!        ▲                                      │
//!        └──────── fenced checkpoint ◀── sink confirmed all of page n
//! ```
//!
//! Pages are read by a prefetcher of the worker's own, a step ahead: while
//! page n is published and checkpointed, page n+1 is read, so a read never
//! waits for the sink's confirmations or the checkpoint's commit, and the
//! worker holds two pages at most. Only the worker publishes, and only
//! after the checkpoint before, so a crash still repeats at most one page.
//!
//! The cursor moves only after the sink confirmed the whole page, and the
//! checkpoint names this holder's owner and epoch: if it matches nothing,
//! the lease was lost and the worker stops without another write. Between
//! pages it also stops when the lease keeper marked the lease lost, and on
//! shutdown it hands the partition back after its last checkpoint.
//!
//! Between pages it also obeys the run's controls (see
//! [`Control`](super::context::Control)): a paused or cancelled run, or a
//! partition beyond a lowered cap, is handed back; while the health gate
//! is closed no page starts; under a rate cap each page reserves its rows
//! from the run's shared limiter before it is delivered; and with a
//! `target_page_ms`, the page size adapts after every page.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{
    Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, Recipient, WrapFuture,
};
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::context::RunContext;
use super::publisher::{Publish, Publisher};
use crate::error::Error;
use crate::job::Job;
use crate::model::Cursor;
use crate::model::SourceRow;
use crate::store::{Checkpoint, DeadLetter, Page, PartitionRecord, RunState, StoreError};

/// How a worker ended without error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WorkerOutcome {
    /// Every row of the partition was confirmed and checkpointed.
    Completed,
    /// Shutdown: the partition was handed back after the last checkpoint.
    Released,
}

/// A worker ended; sent by the worker itself to whoever started it.
pub(crate) struct WorkerExited {
    pub(crate) partition_id: i64,
    pub(crate) epoch: i64,
    pub(crate) outcome: Result<WorkerOutcome, Error>,
}

impl actix::Message for WorkerExited {
    type Result = ();
}

/// Everything a worker needs, handed over by the supervisor.
pub(crate) struct WorkerSetup {
    pub(crate) run: RunContext,
    pub(crate) partition: PartitionRecord,
    pub(crate) publisher: Addr<Publisher>,
    /// Told how the worker ended.
    pub(crate) exited: Recipient<WorkerExited>,
    /// Set by the lease keeper when the lease was lost.
    pub(crate) lost: Arc<AtomicBool>,
}

/// One actor per claimed partition; it stops when its loop ends and tells
/// the supervisor how it went.
pub(crate) struct PartitionWorker {
    setup: Option<WorkerSetup>,
}

impl PartitionWorker {
    pub(crate) fn new(setup: WorkerSetup) -> Self {
        Self { setup: Some(setup) }
    }
}

impl Actor for PartitionWorker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(setup) = self.setup.take() else {
            return;
        };
        let exited = setup.exited.clone();
        let (partition_id, epoch) = (setup.partition.id, setup.partition.epoch);
        let span = tracing::info_span!(
            parent: &setup.run.span,
            "partition",
            partition.id = partition_id,
            partition.number = setup.partition.number,
            partition.epoch = epoch,
        );
        let work = run_partition(setup).instrument(span);
        ctx.wait(
            async move {
                let outcome = work.await;
                // Bounded mailbox, waiting when full; the supervisor outlives us.
                let _ = exited
                    .send(WorkerExited {
                        partition_id,
                        epoch,
                        outcome,
                    })
                    .await;
            }
            .into_actor(self)
            .map(|_, _, ctx: &mut Context<Self>| ctx.stop()),
        );
    }
}

fn lost(setup: &WorkerSetup) -> Error {
    Error::Store(StoreError::LeaseLost {
        partition_id: setup.partition.id,
        epoch: setup.partition.epoch,
    })
}

/// Runs the job's processor on one row; a panic in it makes the row poison
/// rather than silently killing the worker.
pub(crate) fn process_row(
    job: &Job,
    row: &SourceRow,
    scope: &crate::model::Scope,
) -> Result<Option<crate::model::Message>, crate::model::Poison> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        job.processor.process(row, scope)
    }))
    .unwrap_or_else(|panic| {
        Err(crate::model::Poison(format!(
            "processor panicked: {}",
            crate::error_text::panic_message(&*panic)
        )))
    })
}

/// A partition's pages, read ahead of its worker by a task of their own
/// on the worker's thread: as soon as the worker takes a page, the next one
/// is read, while the worker publishes and checkpoints the one it took.
/// The task ends after the partition's last (short or empty) page, on a
/// read error (handed on as the next page), and when this is dropped.
struct Prefetch {
    pages: mpsc::Receiver<Fetched>,
    task: tokio::task::JoinHandle<()>,
}

/// A page as the prefetcher read it: the rows (or the read's error), the
/// size it asked for and how long the read took.
struct Fetched {
    page: Result<Page, StoreError>,
    asked: usize,
    took: Duration,
}

impl Prefetch {
    /// Reads `part` from its stored cursor on, each page bounded by the
    /// latest cut `upper` holds.
    /// Each page asks for the size `page_size` holds when its read starts.
    fn start(
        setup: &WorkerSetup,
        mut part: PartitionRecord,
        mut upper: watch::Receiver<Option<Cursor>>,
        page_size: Arc<AtomicUsize>,
    ) -> Self {
        let (tx, pages) = mpsc::channel(1);
        let (store, job) = (setup.run.store.clone(), setup.run.job.clone());
        let task = actix::spawn(
            async move {
                let mut after = part.cursor;
                loop {
                    // Read the next page only once the worker took the one
                    // before: it holds two pages at most, as it works on one.
                    let Ok(slot) = tx.reserve().await else {
                        return;
                    };
                    if let Some(range) = part.range.as_mut() {
                        range.upper = *upper.borrow_and_update();
                    }
                    let asked = page_size.load(Ordering::Relaxed);
                    let began = Instant::now();
                    let page = store.fetch_page(&job.source, &part, after, asked).await;
                    // A page closing on a group of duplicate keys may be
                    // longer than asked.
                    let next = match &page {
                        Ok(page) if page.len() >= asked => page.last(),
                        _ => None,
                    };
                    slot.send(Fetched {
                        page,
                        asked,
                        took: began.elapsed(),
                    });
                    let Some(next) = next else {
                        return;
                    };
                    after = Some(next);
                }
            }
            .in_current_span(),
        );
        Self { pages, task }
    }

    /// The next page, the size it asked for and how long its read took; a
    /// read error is the store's.
    async fn next(&mut self) -> Result<(Page, usize, Duration), Error> {
        match self.pages.recv().await {
            Some(f) => Ok((f.page?, f.asked, f.took)),
            // The task ends only after a last page, which the worker does
            // not read past, or when it is dropped.
            None => Err(Error::Shutdown),
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The worker's loop.
async fn run_partition(setup: WorkerSetup) -> Result<WorkerOutcome, Error> {
    // A copy whose upper bound follows splits made by other workers.
    let mut part = setup.partition.clone();
    let p = &setup.partition;
    let owner = setup.run.owner.as_str();
    let mut dead_letters_seen = 0u64;
    tracing::debug!(cursor = ?p.cursor, "partition started");
    let (upper, upper_seen) = watch::channel(part.range.and_then(|r| r.upper));
    let page_size = Arc::new(AtomicUsize::new(first_page_size(&setup)));
    let mut pages = Prefetch::start(&setup, part.clone(), upper_seen, Arc::clone(&page_size));
    let mut control = setup.run.control.subscribe();
    let m =
        super::metrics::PageMetrics::new(&setup.run.job.name, p.run_id, setup.run.job.sink.name());
    loop {
        if setup.lost.load(Ordering::SeqCst) {
            return Err(lost(&setup));
        }
        let (hand_back, unhealthy) = {
            let c = control.borrow_and_update();
            (
                matches!(c.state, RunState::Paused | RunState::Cancelled)
                    || c.surplus.contains(&p.id),
                c.unhealthy.is_some(),
            )
        };
        if *setup.run.shutdown.borrow() || hand_back {
            drop(pages);
            setup.run.store.release(p.id, owner, p.epoch).await?;
            return Ok(WorkerOutcome::Released);
        }
        if unhealthy {
            // No page starts until the supervisor finds it healthy (or the
            // run paused, or shutdown): look again on a change or a poll.
            let _ = tokio::time::timeout(setup.run.config.poll_interval, control.changed()).await;
            continue;
        }
        let (mut page, asked, read_took) = pages.next().await?;
        let page_began = Instant::now();
        // The steal margin keeps a split beyond what was read ahead; should
        // a page still reach past a cut, the rest is the thief's.
        if let Some(cut) = part.range.and_then(|r| r.upper) {
            if page.last().is_some_and(|last| last >= cut) {
                page.truncate_at(cut);
            }
        }
        let Some(last) = page.last() else {
            drop(pages);
            setup.run.store.complete(p.id, owner, p.epoch).await?;
            return Ok(WorkerOutcome::Completed);
        };
        let full = page.len() >= asked;
        let read = page.len() as u64;
        // Inside the partition's span: what this page is.
        let page_span = tracing::info_span!(
            "page",
            page.rows = read,
            page.last_key = last.key,
            page.last_order = last.order,
        );
        let rate_cap = control.borrow().throttle.max_rows_per_s;
        if let Some(per_s) = rate_cap {
            let wait = setup.run.store.reserve_rows(p.run_id, read, per_s).await?;
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        }

        let Page {
            rows, unreadable, ..
        } = page;
        let mut messages = Vec::with_capacity(rows.len());
        let mut dead = Vec::new();
        let rejected = rows
            .iter()
            .filter_map(|row| match process_row(&setup.run.job, row, &p.scope) {
                Ok(Some(m)) => {
                    messages.push(m);
                    None
                }
                Ok(None) => None,
                Err(poison) => Some((row.key, poison.0)),
            })
            .collect::<Vec<_>>();
        // The rows are not needed past their messages: free them before
        // the page's delivery and checkpoint are awaited.
        drop(rows);
        let unreadable = unreadable.into_iter().map(|(at, reason)| (at.key, reason));
        for (row_key, reason) in unreadable.chain(rejected) {
            dead_letters_seen += 1;
            if dead_letters_seen > setup.run.config.skip_limit {
                return Err(Error::SkipLimitExceeded {
                    partition_id: p.id,
                    dead_letters: dead_letters_seen,
                    limit: setup.run.config.skip_limit,
                    row_key,
                    reason,
                });
            }
            tracing::warn!(parent: &page_span, row = row_key, %reason, "poison row sent to dead letters");
            dead.push(DeadLetter {
                run_id: p.run_id,
                partition_id: Some(p.id),
                row_key: Some(row_key),
                reason,
            });
        }

        // The prefetcher reads the next pages meanwhile.
        let handed = messages.len() as u64;
        let delivery_began = Instant::now();
        let delivery = if messages.is_empty() {
            Default::default()
        } else {
            setup
                .publisher
                .send(Publish(messages))
                .instrument(page_span.clone())
                .await
                .map_err(|_| Error::Shutdown)??
        };

        if setup.lost.load(Ordering::SeqCst) {
            return Err(lost(&setup));
        }
        if handed > 0 {
            m.confirm_seconds
                .record(delivery_began.elapsed().as_secs_f64());
        }
        let dead_count = dead.len() as u64;
        let checkpoint_began = Instant::now();
        let ack = setup
            .run
            .store
            .checkpoint(Checkpoint {
                partition_id: p.id,
                owner: owner.to_owned(),
                epoch: p.epoch,
                cursor: last,
                rows: read,
                done: !full,
                dead_letters: dead,
                lease: setup.run.config.lease,
            })
            .instrument(page_span.clone())
            .await?;
        if let Some(range) = part.range.as_mut().filter(|r| r.upper != ack.upper) {
            // Another worker took the end of this range: stop at the cut.
            // The prefetcher reads no further than the cut from now on.
            tracing::info!(parent: &page_span, upper = ?ack.upper, rows_planned = ack.rows_planned, "range split; the rest was stolen");
            range.upper = ack.upper;
            let _ = upper.send(ack.upper);
        }
        let target_ms = control.borrow().throttle.target_page_ms;
        if let Some(target_ms) = target_ms {
            let bounds = control.borrow().throttle.page_size_bounds();
            let took = read_took + page_began.elapsed();
            let next = adapt_page_size(asked, took, target_ms, bounds);
            if next != asked {
                tracing::debug!(
                    parent: &page_span,
                    from = asked,
                    to = next,
                    took_ms = took.as_millis() as u64,
                    "page size adapted"
                );
            }
            page_size.store(next, Ordering::Relaxed);
        }
        m.checkpoint_seconds
            .record(checkpoint_began.elapsed().as_secs_f64());
        m.read_seconds.record(read_took.as_secs_f64());
        m.rows_read.increment(read);
        m.published.increment(handed);
        m.confirmed.increment(delivery.confirmed);
        m.replayed.increment(delivery.duplicates);
        m.checkpointed.increment(read);
        m.dead_letters.increment(dead_count);
        let n = read as i64;
        let elapsed = setup.run.started.elapsed();
        setup.run.progress.send_modify(|prog| {
            prog.elapsed = elapsed;
            prog.rows_checkpointed += n as u64;
            // The run's rows done is at least what was done when this
            // instance started plus what it checkpointed since; the
            // supervisor raises it to the stored total as it polls, which
            // may already hold this page: added to that, it would count
            // the page twice.
            prog.rows_done = prog
                .rows_done
                .max(prog.rows_done_at_start + prog.rows_checkpointed as i64);
            prog.rows_published += delivery.confirmed;
            prog.rows_replayed += delivery.duplicates;
            prog.dead_letters += dead_count;
            if let Some(pp) = prog.partitions.iter_mut().find(|pp| pp.id == p.id) {
                pp.rows_done += n;
                pp.rows_planned = ack.rows_planned;
            }
        });
        if !full {
            return Ok(WorkerOutcome::Completed);
        }
    }
}

/// The first page's size: the runtime's, within the throttle's bounds when
/// pages adapt.
fn first_page_size(setup: &WorkerSetup) -> usize {
    let control = setup.run.control.borrow();
    let size = setup.run.config.page_size;
    match control.throttle.target_page_ms {
        Some(_) => {
            let (min, max) = control.throttle.page_size_bounds();
            size.clamp(min, max)
        }
        None => size,
    }
}

/// The next page size when a page of `size` rows took `took` against a
/// target of `target_ms`: toward the size that would have taken the
/// target, at most doubling or halving per page, half way there
/// (smoothed, so one slow page does not swing it), within `(min, max)`.
pub(crate) fn adapt_page_size(
    size: usize,
    took: Duration,
    target_ms: u64,
    (min, max): (usize, usize),
) -> usize {
    let size_f = size.max(1) as f64;
    let took_ms = (took.as_secs_f64() * 1000.0).max(0.1);
    let ideal = (size_f * target_ms as f64 / took_ms).clamp(size_f / 2.0, size_f * 2.0);
    let next = (size_f + ideal) / 2.0;
    (next.round() as usize).clamp(min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_moves_toward_the_target_in_bounded_steps() {
        let ms = Duration::from_millis;
        // Twice too slow: halfway to half the size.
        assert_eq!(adapt_page_size(1000, ms(400), 200, (10, 100_000)), 750);
        // Far too fast: at most doubling, halfway there.
        assert_eq!(adapt_page_size(1000, ms(1), 200, (10, 100_000)), 1500);
        // On target: unchanged.
        assert_eq!(adapt_page_size(1000, ms(200), 200, (10, 100_000)), 1000);
        // Bounds hold.
        assert_eq!(adapt_page_size(1000, ms(1), 200, (10, 1200)), 1200);
        assert_eq!(adapt_page_size(12, ms(10_000), 200, (10, 1200)), 10);
        // A sink whose time grows with the batch settles near the target.
        let mut size = 100;
        for _ in 0..40 {
            let took = ms(20 + size as u64 / 10);
            size = adapt_page_size(size, took, 200, (10, 100_000));
        }
        let took = 20 + size as u64 / 10;
        assert!(
            (180..=220).contains(&took),
            "settled at {size} rows, {took} ms"
        );
    }
}
