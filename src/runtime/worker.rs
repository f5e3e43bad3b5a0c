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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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
use crate::store::{Checkpoint, DeadLetter, Page, PartitionRecord, StoreError};

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
            "partition",
            job = %setup.run.job.name,
            run = setup.partition.run_id,
            partition = partition_id,
            number = setup.partition.number,
            epoch,
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
fn process_row(
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
    pages: mpsc::Receiver<Result<Page, StoreError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Prefetch {
    /// Reads `part` from its stored cursor on, each page bounded by the
    /// latest cut `upper` holds.
    fn start(
        setup: &WorkerSetup,
        mut part: PartitionRecord,
        mut upper: watch::Receiver<Option<Cursor>>,
    ) -> Self {
        let (tx, pages) = mpsc::channel(1);
        let (store, job, page_size) = (
            setup.run.store.clone(),
            setup.run.job.clone(),
            setup.run.config.page_size,
        );
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
                    let page = store.fetch_page(&job.source, &part, after, page_size).await;
                    // A page closing on a group of duplicate keys may be
                    // longer than asked.
                    let next = match &page {
                        Ok(page) if page.len() >= page_size => page.last(),
                        _ => None,
                    };
                    slot.send(page);
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

    /// The next page; a read error is the store's.
    async fn next(&mut self) -> Result<Page, Error> {
        match self.pages.recv().await {
            Some(page) => Ok(page?),
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
    let page_size = setup.run.config.page_size;
    let mut dead_letters_seen = 0u64;
    tracing::debug!(cursor = ?p.cursor, "partition started");
    let (upper, upper_seen) = watch::channel(part.range.and_then(|r| r.upper));
    let mut pages = Prefetch::start(&setup, part.clone(), upper_seen);
    loop {
        if setup.lost.load(Ordering::SeqCst) {
            return Err(lost(&setup));
        }
        if *setup.run.shutdown.borrow() {
            drop(pages);
            setup.run.store.release(p.id, owner, p.epoch).await?;
            return Ok(WorkerOutcome::Released);
        }
        let mut page = pages.next().await?;
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
        let full = page.len() >= page_size;
        let read = page.len() as u64;

        let mut messages = Vec::with_capacity(page.rows.len());
        let mut dead = Vec::new();
        let rejected = page
            .rows
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
        let unreadable = page
            .unreadable
            .into_iter()
            .map(|(at, reason)| (at.key, reason));
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
            tracing::warn!(row = row_key, %reason, "poison row sent to dead letters");
            dead.push(DeadLetter {
                run_id: p.run_id,
                partition_id: Some(p.id),
                row_key: Some(row_key),
                reason,
            });
        }

        // The prefetcher reads the next pages meanwhile.
        let delivery = if messages.is_empty() {
            Default::default()
        } else {
            setup
                .publisher
                .send(Publish(messages))
                .await
                .map_err(|_| Error::Shutdown)??
        };

        if setup.lost.load(Ordering::SeqCst) {
            return Err(lost(&setup));
        }
        let dead_count = dead.len() as u64;
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
            .await?;
        if let Some(range) = part.range.as_mut().filter(|r| r.upper != ack.upper) {
            // Another worker took the end of this range: stop at the cut.
            // The prefetcher reads no further than the cut from now on.
            tracing::info!(upper = ?ack.upper, rows_planned = ack.rows_planned, "range split; the rest was stolen");
            range.upper = ack.upper;
            let _ = upper.send(ack.upper);
        }
        let n = read as i64;
        setup.run.progress.send_modify(|prog| {
            prog.rows_done += n;
            prog.rows_checkpointed += n as u64;
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
