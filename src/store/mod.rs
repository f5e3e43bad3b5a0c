//! The store: tranche's tables and every query it runs, behind one interface.
//!
//! Diesel is synchronous, so a store's queries run only on its executor, a
//! pool of threads started with actix's `SyncArbiter`. [`Store`] is the
//! async face of it: each method ships a plain synchronous function over a
//! pooled [`Connection`] to the executor and awaits the answer, so no async
//! task ever blocks on the database. ([`run_migrations`] is the one entry
//! point that opens a connection of its own: it runs before any store.) The same methods work on SQLite,
//! PostgreSQL and (feature `mysql`) MySQL or MariaDB; one conformance suite
//! (`tests/store_conformance.rs`) holds them to the same behaviour.
//!
//! See [`lease`] for the claim, lease and checkpoint
//! protocol.

mod connection;
mod control;
mod database_url;
mod datum;
mod describe;
mod executor;
mod gate;
pub mod lease;
mod migrations;
#[cfg(feature = "mysql")]
mod mysql;
mod queries;
mod scopes;
pub(crate) mod source;

use std::time::Duration;

use actix::{Addr, SyncArbiter};

#[doc(hidden)]
pub use crate::model::{Cursor, KeyRange};
#[doc(hidden)]
pub use connection::{init_openssl, Db};
pub(crate) use connection::{Backend, Pool, Session};
pub use connection::{Bind, Connection, Dialect, LoadRow, Sql};
pub use control::{
    AuditEntry, ControlView, RetryOutcome, StateChange, ThrottleOutcome, Transition,
};
pub use database_url::{DatabaseUrl, ACCEPTED_FORMS};
pub(crate) use executor::DbExecutor;
use executor::Execute;
pub use migrations::{migrate, run_migrations};
#[doc(hidden)]
pub use queries::active_run as active_run_on;
pub use queries::{Checkpoint, CheckpointAck, DryPlan, PlanOutcome, PlanSample, Steal};
pub use queries::{DeadLetter, PartitionRecord, PartitionState, RunRecord, RunState};
pub use scopes::{IdentifyScopes, Scopes};
pub use source::Page;

use crate::model::{Source, Strategy};

/// A database failure, saying which operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be reached (the URL is shown redacted).
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// Redacted URL.
        url: String,
        /// Driver message.
        reason: String,
    },
    /// No connection could be taken from the pool in time.
    #[error("connection pool: {0}")]
    Pool(String),
    /// A query failed.
    #[error("{op} failed")]
    Query {
        /// The store operation.
        op: &'static str,
        /// Diesel's error.
        source: diesel::result::Error,
    },
    /// Migrations could not be applied.
    #[error("migrations failed")]
    Migration(#[source] crate::model::Cause),
    /// A database call panicked (a bug, in tranche or in a host's query);
    /// its transaction was rolled back.
    #[error("a database call panicked: {0}")]
    Panicked(String),
    /// A fenced write matched nothing: another instance took the partition
    /// over (or it was released), so this holder must stop.
    #[error("lease lost on partition {partition_id} (epoch {epoch})")]
    LeaseLost {
        /// Partition.
        partition_id: i64,
        /// The epoch this holder had.
        epoch: i64,
    },
    /// A value read from the database does not have the expected shape.
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        /// What was being read.
        what: &'static str,
        /// Why it could not be used.
        reason: String,
    },
    /// A run with a new key was asked for while another run of the job is
    /// still active: runs of one job never overlap.
    #[error(
        "job {job} already has an active run ({run_id}); run key {key:?} must wait for it to end"
    )]
    RunActive {
        /// Job.
        job: String,
        /// The active run.
        run_id: i64,
        /// The key that was refused.
        key: String,
    },
    /// More rows than the skip limit have a key or order value that cannot
    /// be read as the source is typed (NULL, or on SQLite text or a real
    /// in an integer column): the run is not planned.
    #[error(
        "{field}: {count} rows of {table} cannot be read (more than the skip limit of \
         {limit}); first: {first}. Fix or filter out those rows, or raise runtime.skip_limit \
         to dead-letter them"
    )]
    UnreadableRows {
        /// The column at fault, as a configuration field.
        field: &'static str,
        /// The source table.
        table: String,
        /// Rows that cannot be read (at least `limit + 1`).
        count: u64,
        /// The skip limit.
        limit: u64,
        /// The first such row, described.
        first: String,
    },
    /// The source asks for something this database cannot do.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The database URL is not one tranche reads.
    #[error(transparent)]
    Config(#[from] crate::model::ConfigError),
    /// The executor is gone (the runtime is shutting down).
    #[error("the database executor has stopped")]
    ExecutorGone,
}

impl StoreError {
    pub(crate) fn query(op: &'static str, source: diesel::result::Error) -> Self {
        StoreError::Query { op, source }
    }

    /// Whether another attempt may succeed (a dropped connection, a busy
    /// database, a serialization failure), as opposed to a bug or lost lease.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Connect { .. } | StoreError::Pool(_) => true,
            StoreError::Query { source, .. } => crate::retry::retryable_query(source),
            StoreError::Migration(_)
            | StoreError::Panicked(_)
            | StoreError::LeaseLost { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Unsupported(_)
            | StoreError::UnreadableRows { .. }
            | StoreError::RunActive { .. }
            | StoreError::Config(_)
            | StoreError::ExecutorGone => false,
        }
    }
}

/// How the store connects.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Executor threads, and so the most queries running at once
    /// (default 4; the pool holds one more connection).
    pub threads: usize,
    /// How long to wait for a connection (default 10 s).
    pub connect_timeout: Duration,
    /// Apply the embedded migrations when opening (default true).
    pub migrate: bool,
    /// PostgreSQL `application_name` of every pooled session (the runtime
    /// sets `tranche <instance id>` unless one is given here).
    pub application_name: Option<String>,
    /// How long a session may sit idle inside an open transaction before
    /// the server ends it, rolling the transaction back (default 30 s, the
    /// default lease; the runtime sets its lease, at least 5 s; `None`
    /// leaves the server's setting). A process paused or stalled between
    /// two statements of a transaction (a claim, a checkpoint with dead
    /// letters, an update step's page) would otherwise keep the rows it
    /// locked for as long as it stays paused, and no other instance could
    /// take its partitions over after its lease ran out. PostgreSQL's
    /// `idle_in_transaction_session_timeout`, MariaDB's
    /// `idle_transaction_timeout` (whole seconds, rounded up); MySQL has no
    /// such setting and SQLite no server, so there a paused writer keeps
    /// its locks. A host's own transaction in [`Store::run`] that waits
    /// longer than this between statements fails with a retryable error.
    pub idle_transaction_timeout: Option<Duration>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            threads: 4,
            connect_timeout: Duration::from_secs(10),
            migrate: true,
            application_name: None,
            idle_transaction_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// The async handle to the database executor. Cheap to clone, `Send`.
///
/// What a host uses: [`Store::run`] for its own SQL, the runs, partitions
/// and dead letters as recorded, [`Store::describe_table`] and
/// [`Store::explain_page`]. The run protocol itself (job leases, claims,
/// fenced checkpoints, steals; see [`lease`]) is driven by the runtime and
/// held to its contract by the store conformance suite; its methods are
/// hidden from these docs and are not a stable API.
#[derive(Clone)]
pub struct Store {
    executor: Addr<DbExecutor>,
    dialect: Dialect,
}

impl Store {
    /// Connects to `url` (see [`DatabaseUrl`] for its forms), optionally
    /// applies migrations, and starts the executor threads.
    ///
    /// Needs a running actix `System` (the runtime runs one; outside one
    /// this is an error, not a panic); it blocks while the pool makes its
    /// first connection. Hosts use [`RuntimeHandle::start`](crate::RuntimeHandle::start).
    pub fn open(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        Self::open_url(&DatabaseUrl::parse(url)?, options)
    }

    /// [`Store::open`] with a URL already parsed.
    pub fn open_url(url: &DatabaseUrl, options: &StoreOptions) -> Result<Self, StoreError> {
        if actix::System::try_current().is_none() {
            return Err(StoreError::Unsupported(
                "Store::open needs a running actix System; start tranche with \
                 RuntimeHandle::start, which runs one"
                    .into(),
            ));
        }
        let threads = options.threads.max(1);
        let session = Session {
            application_name: options.application_name.clone(),
            idle_transaction_timeout: options.idle_transaction_timeout,
        };
        let pool = Pool::connect(url, threads as u32 + 1, options.connect_timeout, session)?;
        if options.migrate {
            migrations::apply_pending(&mut pool.get()?)?;
        }
        let dialect = pool.dialect();
        let executor = SyncArbiter::start(threads, move || DbExecutor::new(pool.clone()));
        Ok(Self { executor, dialect })
    }

    /// The database's dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Runs `f` on an executor thread with a pooled connection.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.executor
            .send(Execute::new(f))
            .await
            .map_err(|_| StoreError::ExecutorGone)?
    }

    /// The database clock, in epoch milliseconds.
    pub async fn now_ms(&self) -> Result<i64, StoreError> {
        self.run(queries::now_ms).await
    }

    #[doc(hidden)]
    /// Takes the job's identification lease for `lease`; false when another
    /// instance holds it. Identification runs on one instance at a time.
    pub async fn acquire_job_lease(
        &self,
        job: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let (job, owner) = (job.to_owned(), owner.to_owned());
        let ms = duration_ms(lease);
        self.run(move |c| queries::acquire_job_lease(c, &job, &owner, ms))
            .await
    }

    #[doc(hidden)]
    /// Extends the identification lease while `owner` still holds it;
    /// false when it does not (released, or expired and taken).
    pub async fn renew_job_lease(
        &self,
        job: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let (job, owner) = (job.to_owned(), owner.to_owned());
        let ms = duration_ms(lease);
        self.run(move |c| queries::renew_job_lease(c, &job, &owner, ms))
            .await
    }

    #[doc(hidden)]
    /// Gives the identification lease back.
    pub async fn release_job_lease(&self, job: &str, owner: &str) -> Result<(), StoreError> {
        let (job, owner) = (job.to_owned(), owner.to_owned());
        self.run(move |c| queries::release_job_lease(c, &job, &owner))
            .await
    }

    #[doc(hidden)]
    /// The run an instance starting `job` belongs to. With `key`: the run
    /// of that key in whatever state, created when new (and refused with
    /// [`StoreError::RunActive`] while another run of the job is active).
    /// Without: the job's active run (planning, running or paused), or a
    /// new one.
    ///
    /// A new run starts with `throttle`; a joined run keeps its own.
    pub async fn open_run(
        &self,
        job: &str,
        params: &str,
        key: Option<&str>,
        throttle: &crate::model::Throttle,
    ) -> Result<RunRecord, StoreError> {
        let (job, params) = (job.to_owned(), params.to_owned());
        let key = key.map(str::to_owned);
        let throttle = throttle.clone();
        self.run(move |c| queries::open_run(c, &job, &params, key.as_deref(), &throttle))
            .await
    }

    /// The job's run with this key, if there is one.
    pub async fn run_by_key(&self, job: &str, key: &str) -> Result<Option<RunRecord>, StoreError> {
        let (job, key) = (job.to_owned(), key.to_owned());
        self.run(move |c| queries::run_by_key(c, &job, &key)).await
    }

    /// The job's active run, if any.
    pub async fn active_run(&self, job: &str) -> Result<Option<RunRecord>, StoreError> {
        let job = job.to_owned();
        self.run(move |c| queries::active_run(c, &job)).await
    }

    /// A run by id.
    pub async fn run_record(&self, run_id: i64) -> Result<RunRecord, StoreError> {
        self.run(move |c| queries::run_record(c, run_id)).await
    }

    #[doc(hidden)]
    /// Identifies and partitions a run: reuses its partitions when it already
    /// has them, otherwise plans them (scopes, high-water marks, quantile
    /// bounds) and persists them in one transaction.
    ///
    /// Rows the source's filter admits but whose key or order value cannot
    /// be read (NULL; on SQLite, not an integer) are dead-lettered with
    /// their reason and counted as identified; more than `skip_limit` of
    /// them refuse the plan with [`StoreError::UnreadableRows`].
    pub async fn plan_run(
        &self,
        run_id: i64,
        source: &Source,
        scopes: &Scopes,
        strategy: Strategy,
        skip_limit: u64,
    ) -> Result<PlanOutcome, StoreError> {
        let (source, scopes) = (source.clone(), scopes.clone());
        self.run(move |c| queries::plan_run(c, run_id, &source, &scopes, strategy, skip_limit))
            .await
    }

    /// What a run of `source` would be planned into now, writing nothing:
    /// its partitions, bounds and row counts, skew, high-water marks and a
    /// timed read of `sample_rows` rows of its largest partition.
    pub async fn dry_plan(
        &self,
        source: &Source,
        scopes: &Scopes,
        strategy: Strategy,
        sample_rows: usize,
    ) -> Result<DryPlan, StoreError> {
        let (source, scopes) = (source.clone(), scopes.clone());
        self.run(move |c| queries::dry_plan(c, &source, &scopes, strategy, sample_rows))
            .await
    }

    #[doc(hidden)]
    /// Ends a run whose planning failed for good: `failed`, with `error`
    /// recorded, so the job's next run starts afresh (and a run key that
    /// named it plans again).
    pub async fn fail_planning(&self, run_id: i64, error: &str) -> Result<RunRecord, StoreError> {
        let error = error.to_owned();
        self.run(move |c| queries::fail_planning(c, run_id, &error))
            .await
    }

    /// Describes a table from the database catalog (columns, types,
    /// indexes); `None` when there is no such table or view.
    pub async fn describe_table(
        &self,
        table: &crate::model::Ident,
    ) -> Result<Option<crate::catalog::TableInfo>, StoreError> {
        let table = table.clone();
        self.run(move |c| describe::describe(c, &table)).await
    }

    /// Every partition of a run, by number.
    pub async fn partitions(&self, run_id: i64) -> Result<Vec<PartitionRecord>, StoreError> {
        self.run(move |c| queries::partitions(c, run_id)).await
    }

    /// One partition by id, as stored now.
    pub async fn partition(&self, id: i64) -> Result<PartitionRecord, StoreError> {
        self.run(move |c| queries::partition(c, id)).await
    }

    #[doc(hidden)]
    /// Claims one pending partition, or one whose lease expired, in one
    /// statement: sets the owner, increments the epoch and sets the lease.
    pub async fn claim(
        &self,
        run_id: i64,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<PartitionRecord>, StoreError> {
        let owner = owner.to_owned();
        let ms = duration_ms(lease);
        self.run(move |c| queries::claim(c, run_id, &owner, ms))
            .await
    }

    #[doc(hidden)]
    /// Reads the next page of a partition after `after` (or from its lower
    /// bound), at most `limit` rows, in `(order, key)` order.
    ///
    /// A row one of whose values cannot be read comes back in
    /// [`Page::unreadable`] with the reason, instead of failing the page.
    pub async fn fetch_page(
        &self,
        source: &Source,
        partition: &PartitionRecord,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Page, StoreError> {
        let source = source.clone();
        let partition = partition.clone();
        self.run(move |c| source::fetch_page(c, &source, &partition, after, limit))
            .await
    }

    /// How the database would read `source`'s page of `partition` after
    /// `after` (or its first page): PostgreSQL's `EXPLAIN` lines, or
    /// SQLite's `EXPLAIN QUERY PLAN` details. Shows whether the page
    /// query is served by an index.
    pub async fn explain_page(
        &self,
        source: &Source,
        partition: &PartitionRecord,
        after: Option<Cursor>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let source = source.clone();
        let partition = partition.clone();
        self.run(move |c| source::explain_page(c, &source, &partition, after, limit))
            .await
    }

    #[doc(hidden)]
    /// Fenced checkpoint: moves the partition's cursor, adds the page's rows
    /// to its count, records its dead letters, renews the lease and, on the
    /// last page, completes it. Fails with [`StoreError::LeaseLost`] when
    /// `(owner, epoch)` no longer holds it, writing nothing. Answers with the
    /// partition's bounds as they stand, which a split may have narrowed.
    pub async fn checkpoint(&self, checkpoint: Checkpoint) -> Result<CheckpointAck, StoreError> {
        self.run(move |c| queries::checkpoint(c, &checkpoint)).await
    }

    #[doc(hidden)]
    /// Work stealing: splits the largest remaining range of a claimed range
    /// partition of the run (held by any instance, this one included) and
    /// claims its second half for `owner`. The holder keeps its lease and
    /// epoch; the split point lies at least `margin` rows past its stored
    /// checkpoint, beyond anything it can have read, and the holder learns
    /// its narrowed bound from its next checkpoint. Only remaining ranges
    /// of at least `min_rows` are split. `None` when nothing qualifies.
    pub async fn steal(
        &self,
        source: &Source,
        run_id: i64,
        owner: &str,
        lease: Duration,
        steal: Steal,
    ) -> Result<Option<PartitionRecord>, StoreError> {
        let (source, owner) = (source.clone(), owner.to_owned());
        let ms = duration_ms(lease);
        self.run(move |c| queries::steal(c, &source, run_id, &owner, ms, steal))
            .await
    }

    #[doc(hidden)]
    /// Completes a partition without moving its cursor (its last page was
    /// empty). Fenced like [`Store::checkpoint`].
    pub async fn complete(
        &self,
        partition_id: i64,
        owner: &str,
        epoch: i64,
    ) -> Result<(), StoreError> {
        let owner = owner.to_owned();
        self.run(move |c| queries::complete(c, partition_id, &owner, epoch))
            .await
    }

    #[doc(hidden)]
    /// Extends the leases of the `(partition, epoch)` pairs `owner` holds;
    /// returns the pairs still held. Only the pairs given are renewed, so an
    /// instance restarted under the same id never keeps alive the leases of
    /// its dead predecessor (they expire and are taken over).
    pub async fn renew_leases(
        &self,
        owner: &str,
        held: &[(i64, i64)],
        lease: Duration,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let owner = owner.to_owned();
        let held = held.to_vec();
        let ms = duration_ms(lease);
        self.run(move |c| queries::renew_leases(c, &owner, &held, ms))
            .await
    }

    #[doc(hidden)]
    /// Hands a partition back (graceful shutdown): pending again, no owner,
    /// checkpoint kept. Fenced.
    pub async fn release(
        &self,
        partition_id: i64,
        owner: &str,
        epoch: i64,
    ) -> Result<(), StoreError> {
        let owner = owner.to_owned();
        self.run(move |c| queries::release(c, partition_id, &owner, epoch))
            .await
    }

    #[doc(hidden)]
    /// Records a failed attempt; with `fail`, the partition is marked failed
    /// for good. Returns the attempts so far. Fenced.
    pub async fn record_failure(
        &self,
        partition_id: i64,
        owner: &str,
        epoch: i64,
        error: &str,
        fail: bool,
    ) -> Result<i64, StoreError> {
        let (owner, error) = (owner.to_owned(), error.to_owned());
        self.run(move |c| queries::record_failure(c, partition_id, &owner, epoch, &error, fail))
            .await
    }

    #[doc(hidden)]
    /// Closes the run when no partition is pending or claimed; returns the
    /// run as it stands either way.
    pub async fn finish_run_if_complete(&self, run_id: i64) -> Result<RunRecord, StoreError> {
        self.run(move |c| queries::finish_run_if_complete(c, run_id))
            .await
    }

    /// The dead letters of a run.
    pub async fn dead_letters(&self, run_id: i64) -> Result<Vec<DeadLetter>, StoreError> {
        self.run(move |c| queries::dead_letters(c, run_id)).await
    }

    /// The job's runs, newest first (its history).
    pub async fn runs(&self, job: &str, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        let job = job.to_owned();
        self.run(move |c| queries::runs(c, &job, limit)).await
    }
}

pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
