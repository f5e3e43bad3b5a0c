//! # tranche
//!
//! Big, repeatable data jobs inside a service: find every row that needs
//! work, split it into non-overlapping partitions, let any instance claim a
//! partition, page through it, hand every row to a sink (a broker, an
//! outbox, an update step) and checkpoint after each confirmed page. A crash
//! costs at most one page of repeated work and never a lost row.
//!
//! ## Quick start
//!
//! ```no_run
//! use std::sync::Arc;
//! use tranche::sink::MemorySink;
//! use tranche::{Job, Message, RuntimeConfig, RuntimeHandle, Scope, Source, SourceRow, Strategy};
//!
//! # async fn example() -> tranche::Result<()> {
//! let runtime = RuntimeHandle::start(RuntimeConfig::new("sqlite://app.db")).await?;
//! let sink = MemorySink::new();
//! let job = Job::builder("resend-orders")
//!     .source(Source::new("orders", "id", "created_at")?)
//!     .strategy(Strategy::Range { partitions: 8 })
//!     .processor(|row: &SourceRow, _: &Scope| {
//!         Ok(Some(Message::new("resend-orders", row.key, 1, row.key.to_string().into_bytes())))
//!     })
//!     .sink(Arc::new(sink.clone()))
//!     .build()?;
//! let report = runtime.run(job).await?;
//! println!("{} rows in {:?}", report.rows_done, report.elapsed);
//! runtime.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! ## Concepts
//!
//! * A **job** names the work: a [`Source`] (the table, its unique integer
//!   key, the order its rows are walked in, extra columns, filters), a
//!   [`Processor`](job::Processor) turning each [`SourceRow`] into a [`Message`], and a
//!   [`Sink`] the messages go to.
//! * A **run** is one pass of a job over its rows. It is planned once:
//!   **identification** counts the rows, fixes the **high-water mark** (the
//!   last row, in `(order, key)` order, that the run will read; rows added
//!   later wait for the next run) and cuts the rows into **partitions**
//!   (ranges of `(order, key)`, or `key % N = k` slices). A **scope** is a
//!   subset of the rows (a condition such as `product_id = 7`) planned on
//!   its own; a run has one scope or many.
//! * An instance **claims** a partition and holds it under a **lease**: a
//!   time by the database clock, renewed by heartbeats, after which any
//!   instance may take the partition over. Each claim raises the
//!   partition's **epoch**; every write of the holder is fenced by owner
//!   and epoch, so a holder that lost its lease writes nothing more.
//! * A worker reads its partition a **page** at a time with a keyset
//!   cursor, hands the page to the sink and, once the sink confirmed all of
//!   it, **checkpoints** the cursor. A crash repeats at most the page in
//!   flight. An instance with an idle worker may **steal** work: it cuts
//!   the busiest range partition in two and takes the part its owner has
//!   not reached.
//! * Messages of one key travel one **lane** of the publisher, so they
//!   reach the sink in order; each has the id `job:key:version`.
//! * A **run key** names a run, so that every instance given the same key
//!   (a schedule's tick, a deploy's backfill) joins that one run, even
//!   after it ended.
//! * Rows that cannot be processed (a value that cannot be read, a
//!   processor's [`Poison`]) go to **dead letters** with their reason, up to
//!   a **skip limit** per partition.
//!
//! ## Layout
//!
//! ```text
//!  RuntimeHandle (Send + Clone, usable from any tokio or actix host)  runtime
//!    ├─ Scheduler      recurring and one-time runs, keyed by tick      runtime::scheduler
//!    └─ RunSupervisor  plans a run, claims partitions, restarts or     runtime::supervisor
//!         │            fails workers, gathers the report
//!         ├─ PartitionWorker × k   page → publish → confirm → checkpoint   runtime::worker
//!         │        │ send().await into a bounded mailbox; reports back
//!         │        ▼ through a Recipient
//!         ├─ Publisher     per-key lanes → Sink                         runtime::publisher, sink
//!         └─ LeaseKeeper   renews leases; lost leases stop workers      runtime::lease_keeper
//!  Store → DbExecutor (SyncArbiter): every query of a run, on pooled     store
//!          connections (migrations take one of their own)
//!  Consumer: broker → batch → one transaction → ack (the update phase   consume
//!            on the consuming side; RabbitMQ, JetStream, Kafka)
//!  job file → runtime settings, source, sink                            config
//!  sources, rows, cursors, messages, identifiers, redaction: the shared  (model; re-exported
//!            vocabulary, importing nothing else of the crate             by job, sink, redact)
//!  plan, keyset, backoff, retry classification, catalog checks: pure logic
//! ```
//!
//! The crate root holds what a host uses to run a job; the modules hold
//! the rest: [`job`] (sources, conditions, scopes, typed rows), [`sink`]
//! (the shipped sinks and their settings), [`runtime`] (progress,
//! schedules, leases, backoff), [`store`] (the store a host may query, its
//! records and errors), [`consume`] (the consuming side), [`config`] (the
//! job file) and [`redact`].

//! ## Guarantees
//!
//! * **Plan once.** Identification runs on one instance at a time (a job
//!   lease) and is idempotent: a run that has partitions keeps them. Its
//!   high-water mark is fixed at planning time.
//! * **Exactly-once coverage.** Range partitions are half-open `(order, key)`
//!   intervals cut at row-count quantiles: gap-free, non-overlapping, correct
//!   under heavy timestamp ties. Modulo partitions take `key % N = k`.
//! * **At-least-once delivery, bounded replay.** A page is checkpointed only
//!   after the sink confirmed all of it; the checkpoint is fenced by owner and
//!   epoch. A crash repeats at most the page in flight per partition.
//! * **Identity and order.** Every message has the deterministic id
//!   `job:key:version`; messages of one key travel one lane, in order.
//! * **Every row accounted for.** Before a run is planned, its source is
//!   checked against the database catalog (table, columns, types, a unique
//!   key, an index serving the page order) and so is a sink's table; each
//!   refusal names the field. Rows whose key or order value cannot be read
//!   are dead-lettered while planning, rows with an unreadable value while
//!   paging; a run ends `Done` only when every identified row was read or
//!   dead-lettered, and fails naming the partitions short otherwise.
//! * **Bad input.** Configuration is validated before anything is claimed,
//!   naming the field; identifiers are validated and quoted, values bound;
//!   poison rows go to dead letters up to a skip limit; URLs in errors are
//!   redacted.
//!
//! The [`store::lease`] module documents the claim and lease protocol.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod backoff;
pub mod catalog;
pub mod config;
pub mod consume;
pub mod control;
mod error;
mod error_text;
pub mod job;
mod model;
pub mod plan;
mod retry;
pub mod runtime;
pub mod sink;
pub mod store;
#[cfg(feature = "web")]
pub mod web;

pub use model::redact;

/// What the `tranche` binary's demo and bench use beyond the public API
/// (raw SQL on a diesel connection of their own, OpenSSL's early start, the
/// active-run check inside a transaction). Not part of the API: it may
/// change in any release.
#[doc(hidden)]
pub mod internals {
    pub use crate::store::{active_run_on, init_openssl, Db};
}

/// The attribute a [`Sink`] implementation needs (`#[tranche::async_trait]`
/// on the `impl`), re-exported so that a sink author needs no other crate.
pub use async_trait::async_trait;
pub use error::{Error, Result};
pub use job::{Job, JobBuilder};
pub use model::{ConfigError, Message, Poison, Scope, Source, SourceRow, Strategy};
pub use runtime::{RunHandle, RunReport, RuntimeConfig, RuntimeHandle, Shutdown};
pub use sink::{Delivery, Sink, SinkError};
pub use store::{migrate, run_migrations};
