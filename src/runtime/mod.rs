//! The runtime: an actix `System` on a thread of its own, driven through a
//! [`RuntimeHandle`] that is `Send + Clone` and works from any host (a plain
//! `#[tokio::main]` service, an actix-web app, a test).
//!
//! ```text
//! RuntimeHandle ─┬─ schedule() ─▶ Scheduler (per schedule) ─┐ a run per tick
//!                └─ start_run() (a one-time run, now) ───────┤
//!                                                            ▼
//!            RunSupervisor (per run) ──▶ PartitionWorker × concurrency
//!                 │  claims, steals, restarts        │ send().await
//!                 │                                  ▼
//!                 ├────────────────────────────▶ Publisher ──▶ Sink
//!                 └─ LeaseKeeper (per instance: renews leases)
//! Store ──▶ DbExecutor (SyncArbiter threads, diesel, r2d2)
//! ```

mod context;
mod lease_keeper;
pub mod metrics;
mod progress;
mod publisher;
mod run_handle;
mod scheduler;
mod supervisor;
mod worker;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Arbiter, System};
use tokio::sync::{oneshot, watch, Notify};

pub use crate::backoff::Backoff;
pub use crate::store::lease::LeaseConfig;
pub use progress::{peak_rss_bytes, PartitionProgress, RunProgress, RunReport};
pub use publisher::lane_of;
pub use run_handle::RunHandle;
pub use scheduler::{tick_key, Schedule, ScheduleHandle, ScheduleStatus, ScheduledJob};
pub(crate) use worker::process_row;

use crate::error::Error;
use crate::job::Job;
use crate::model::ConfigError;
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreOptions};
use lease_keeper::{HeldLeases, LeaseKeeper};
use supervisor::{RunSupervisor, SupervisorSetup};

/// Everything an instance needs to run jobs, with documented defaults.
///
/// It is also the `[runtime]` table of a job file, field for field (unknown
/// fields refused, durations written with their unit: `"500ms"`, `"30s"`),
/// and each field can be set as `TRANCHE_<FIELD>` and with the binary's
/// `--<field>` flag (see [`crate::config::RUNTIME_SETTINGS`]). The database
/// URL is the file's top-level `database_url` (`TRANCHE_DATABASE_URL`,
/// `--db`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RuntimeConfig {
    /// Database holding tranche's tables (and, for the update step, the
    /// source): see [`DatabaseUrl`](crate::store::DatabaseUrl) for the forms it
    /// takes. Shown with its password masked.
    #[serde(skip)]
    pub database_url: crate::model::redact::SecretUrl,
    /// This instance's identity in leases (default: host, pid and a random
    /// suffix). Must be unique among live instances.
    pub instance_id: Option<String>,
    /// Partitions worked at once per run by this instance (default 4).
    pub concurrency: usize,
    /// Rows per page, and so per checkpoint (default 1000, at most 100000).
    pub page_size: usize,
    /// Publisher mailbox and per-lane queue capacity (default 16).
    pub mailbox_capacity: usize,
    /// Per-key lanes in the publisher (default 4).
    pub lanes: usize,
    /// How long a claim holds without renewal (default 30 s).
    #[serde(with = "crate::model::duration::serde_text")]
    pub lease: Duration,
    /// How often this instance renews its leases (default 10 s; shorter
    /// than `lease`).
    #[serde(with = "crate::model::duration::serde_text")]
    pub heartbeat: Duration,
    /// Attempts per partition before it is marked failed (default 5).
    pub max_attempts: u32,
    /// Delay before a failed partition's first retry, doubled each attempt
    /// and jittered (default 200 ms).
    #[serde(with = "crate::model::duration::serde_text")]
    pub backoff: Duration,
    /// Longest delay between retries (default 10 s).
    #[serde(with = "crate::model::duration::serde_text")]
    pub backoff_max: Duration,
    /// Poison rows tolerated per partition before it fails (default 100).
    pub skip_limit: u64,
    /// How often to look again when waiting for identification, for other
    /// instances' partitions or for the store (default 500 ms).
    #[serde(with = "crate::model::duration::serde_text")]
    pub poll_interval: Duration,
    /// Whether an idle worker splits the largest remaining range of a busy
    /// one when nothing is left to claim (default true; range partitions
    /// only).
    pub work_stealing: bool,
    /// Database executor threads, and so the most queries running at once
    /// (default 4; the pool holds one more connection).
    pub db_threads: usize,
    /// How long to wait for a database connection (default 10 s).
    #[serde(with = "crate::model::duration::serde_text")]
    pub connect_timeout: Duration,
    /// Apply the embedded migrations when starting (default true).
    pub migrate: bool,
    /// PostgreSQL `application_name` of every pooled session (default
    /// `tranche <instance id>`).
    pub application_name: Option<String>,
    /// How long [`RuntimeHandle::shutdown`] waits for pages in flight to be
    /// confirmed and checkpointed and partitions handed back before it
    /// abandons the rest, whose leases then expire (default 25 s, inside a
    /// container's usual 30 s between SIGTERM and SIGKILL).
    #[serde(with = "crate::model::duration::serde_text")]
    pub shutdown_grace: Duration,
}

impl Default for RuntimeConfig {
    /// The defaults, with no database URL (set one before starting).
    fn default() -> Self {
        Self::new("")
    }
}

impl RuntimeConfig {
    /// Defaults for the database at `database_url`.
    pub fn new(database_url: impl Into<crate::model::redact::SecretUrl>) -> Self {
        let store = StoreOptions::default();
        let lease = LeaseConfig::default();
        Self {
            database_url: database_url.into(),
            instance_id: None,
            concurrency: 4,
            page_size: 1000,
            mailbox_capacity: 16,
            lanes: 4,
            lease: lease.lease,
            heartbeat: lease.heartbeat,
            max_attempts: 5,
            backoff: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
            skip_limit: 100,
            poll_interval: Duration::from_millis(500),
            work_stealing: true,
            db_threads: store.threads,
            connect_timeout: store.connect_timeout,
            migrate: store.migrate,
            application_name: None,
            shutdown_grace: RuntimeConfig::DEFAULT_SHUTDOWN_GRACE,
        }
    }

    /// The default [`RuntimeConfig::shutdown_grace`].
    pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

    /// The lease timings.
    pub fn lease_config(&self) -> LeaseConfig {
        LeaseConfig {
            lease: self.lease,
            heartbeat: self.heartbeat,
        }
    }

    /// The delays between a failed partition's attempts.
    pub fn retry_backoff(&self) -> Backoff {
        Backoff::new(self.backoff, self.backoff_max)
    }

    /// How the store connects.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            threads: self.db_threads,
            connect_timeout: self.connect_timeout,
            migrate: self.migrate,
            application_name: self.application_name.clone(),
            // A paused instance's open transaction holds its locks no
            // longer than its leases hold.
            idle_transaction_timeout: Some(self.lease.max(Self::MIN_IDLE_TRANSACTION_TIMEOUT)),
        }
    }

    /// The shortest time the store lets a session sit idle inside a
    /// transaction (see [`StoreOptions::idle_transaction_timeout`]),
    /// whatever the lease: a busy host's thread may be descheduled for
    /// a moment mid-transaction without its session being ended.
    pub const MIN_IDLE_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(5);

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::store::DatabaseUrl::parse(self.database_url.expose())?;
        let positive = [
            ("concurrency", self.concurrency),
            ("page_size", self.page_size),
            ("mailbox_capacity", self.mailbox_capacity),
            ("lanes", self.lanes),
            ("db_threads", self.db_threads),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(ConfigError::new(field, "must be at least 1"));
            }
        }
        if self.page_size > crate::model::MAX_PAGE_SIZE {
            return Err(ConfigError::new("page_size", "must be at most 100000"));
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::new("max_attempts", "must be at least 1"));
        }
        for (field, d) in [
            ("poll_interval", self.poll_interval),
            ("backoff", self.backoff),
            ("connect_timeout", self.connect_timeout),
            ("shutdown_grace", self.shutdown_grace),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(field, "must be positive"));
            }
        }
        if self.backoff_max < self.backoff {
            return Err(ConfigError::new(
                "backoff_max",
                format!(
                    "must be at least the backoff ({})",
                    crate::model::duration::format(self.backoff)
                ),
            ));
        }
        if let Some(id) = &self.instance_id {
            if id.is_empty() || id.len() > 200 {
                return Err(ConfigError::new(
                    "instance_id",
                    "must be 1 to 200 characters",
                ));
            }
        }
        self.lease_config().validate()
    }
}

fn default_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}-{}-{nanos:08x}", std::process::id())
}

/// Counts live runs so shutdown can wait for their last checkpoints.
#[derive(Clone, Default)]
pub(crate) struct ActiveRuns {
    count: Arc<AtomicUsize>,
    changed: Arc<Notify>,
}

/// Held by a supervisor; its drop marks the run ended.
pub(crate) struct ActiveRunGuard(ActiveRuns);

impl ActiveRuns {
    fn enter(&self) -> ActiveRunGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        ActiveRunGuard(self.clone())
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.changed.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for ActiveRunGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }
}

struct Inner {
    config: Arc<RuntimeConfig>,
    owner: String,
    store: Store,
    arbiter: actix::ArbiterHandle,
    system: System,
    held: HeldLeases,
    shutdown: watch::Sender<bool>,
    active: ActiveRuns,
    /// The latest run of each job started here, by job name.
    runs: std::sync::Mutex<std::collections::HashMap<String, RunHandle>>,
    /// The schedules started here, for the console.
    schedules: std::sync::Mutex<Vec<(String, String, watch::Receiver<ScheduleStatus>)>>,
    /// Resolves when the runtime thread's System has stopped.
    stopped: tokio::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

/// The handle to a running tranche runtime. `Send + Clone`; every clone
/// drives the same runtime.
///
/// Call [`RuntimeHandle::shutdown`] before the host exits. Dropping the
/// last handle starts a graceful shutdown in the background without
/// waiting for it; a process that exits without shutting down leaves its
/// partitions to be taken over when their leases expire (safe, but later
/// than a graceful hand-back).
#[derive(Clone)]
pub struct RuntimeHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RuntimeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeHandle")
            .field("owner", &self.inner.owner)
            .finish()
    }
}

impl RuntimeHandle {
    /// Validates `config`, starts the runtime's actix `System` on a thread
    /// of its own, opens the store (applying migrations unless disabled) and
    /// starts the lease keeper.
    pub async fn start(config: RuntimeConfig) -> Result<Self, Error> {
        config.validate()?;
        let config = Arc::new(config);
        let owner = config
            .instance_id
            .clone()
            .unwrap_or_else(default_instance_id);
        let held = HeldLeases::default();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stopped_tx, stopped_rx) = oneshot::channel();
        {
            let config = Arc::clone(&config);
            let owner = owner.clone();
            let held = held.clone();
            std::thread::Builder::new()
                .name("tranche-runtime".into())
                .spawn(move || {
                    let system = System::new();
                    let opened = system.block_on(async {
                        let mut options = config.store_options();
                        if options.application_name.is_none() {
                            options.application_name = Some(format!("tranche {owner}"));
                        }
                        let url = crate::store::DatabaseUrl::parse(config.database_url.expose())?;
                        let store = Store::open_url(&url, &options)?;
                        LeaseKeeper::new(store.clone(), owner, config.lease_config(), held).start();
                        Ok::<_, Error>((store, System::current(), Arbiter::current()))
                    });
                    let ok = opened.is_ok();
                    let _ = ready_tx.send(opened);
                    if ok {
                        let _ = system.run();
                    }
                    let _ = stopped_tx.send(());
                })
                .map_err(Error::Start)?;
        }
        let (store, system, arbiter) = ready_rx.await.map_err(|_| Error::Shutdown)??;
        let (shutdown, _) = watch::channel(false);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                owner,
                store,
                arbiter,
                system,
                held,
                shutdown,
                active: ActiveRuns::default(),
                runs: Default::default(),
                schedules: Default::default(),
                stopped: tokio::sync::Mutex::new(Some(stopped_rx)),
            }),
        })
    }

    /// The store, for queries of the host's own (run history, dead letters).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Steers runs on this runtime's store (status, pause, resume, cancel,
    /// retry, throttles, dead letters), recorded in the audit trail under
    /// this instance's id. Every instance obeys within a poll interval.
    pub fn operator(&self) -> crate::control::Operator {
        crate::control::Operator::new(self.inner.store.clone(), self.inner.owner.clone())
    }

    /// This instance's identity in leases.
    pub fn instance_id(&self) -> &str {
        &self.inner.owner
    }

    /// The configuration in force.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Starts (or joins) the job's active run and returns at once; the
    /// [`RunHandle`] follows its progress and waits for its report.
    ///
    /// A job already running in this process (by name) is not started
    /// again: its run's handle is returned, whatever `job` says, so one
    /// process never doubles a job's workers.
    pub fn start_run(&self, job: Job) -> Result<RunHandle, Error> {
        if *self.inner.shutdown.borrow() {
            return Err(Error::Shutdown);
        }
        let mut runs = self.inner.runs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = runs.get(&job.name).filter(|h| !h.is_finished()) {
            return Ok(running.clone());
        }
        let name = job.name.clone();
        let (progress_tx, progress_rx) = watch::channel(RunProgress {
            job: job.name.clone(),
            ..RunProgress::default()
        });
        let (handle, report) = RunHandle::new(progress_rx);
        let control = context::Control::new(job.throttle.clone());
        let setup = SupervisorSetup {
            run: context::RunContext {
                job,
                store: self.inner.store.clone(),
                config: Arc::clone(&self.inner.config),
                owner: self.inner.owner.clone(),
                shutdown: self.inner.shutdown.subscribe(),
                progress: Arc::new(progress_tx),
                control: Arc::new(watch::channel(control).0),
                started: std::time::Instant::now(),
                span: tracing::info_span!(
                    "run",
                    job.name = %name,
                    run.id = tracing::field::Empty,
                    instance.id = %self.inner.owner,
                ),
            },
            held: self.inner.held.clone(),
            report,
            guard: self.inner.active.enter(),
        };
        let started = self.inner.arbiter.spawn(async move {
            RunSupervisor::new(setup).start();
        });
        if !started {
            return Err(Error::Shutdown);
        }
        runs.insert(name, handle.clone());
        Ok(handle)
    }

    /// The handle of the job's run in this process while it runs there,
    /// as [`RuntimeHandle::start_run`] returned it.
    pub fn active_run(&self, job: &str) -> Option<RunHandle> {
        let runs = self.inner.runs.lock().unwrap_or_else(|p| p.into_inner());
        runs.get(job).filter(|h| !h.is_finished()).cloned()
    }

    /// The job checked against the catalog, as a run checks it before
    /// anything is opened.
    async fn checked(&self, job: Job) -> Result<Job, Error> {
        supervisor::preflight(
            job,
            &self.inner.store,
            &self.inner.config,
            &self.inner.shutdown.subscribe(),
        )
        .await
    }

    /// A dry run of the job's planning: the partitions a run of it would
    /// get now, their bounds and row counts, the skew, the high-water
    /// marks and a timed read of one page (`page_size` rows) of the largest
    /// partition. The job is checked against the catalog first, as a run
    /// is; nothing is written, claimed or opened.
    pub async fn plan(&self, job: Job) -> Result<crate::store::DryPlan, Error> {
        let job = self.checked(job).await?;
        Ok(self
            .inner
            .store
            .dry_plan(
                &job.source,
                &job.scopes,
                job.strategy,
                self.inner.config.page_size,
            )
            .await?)
    }

    /// Requeues the dead letters of the job's run (its active run, or its
    /// latest, or `run_id`): reads their rows again by key from the source
    /// (as a run would read them: the filter applies), runs each through
    /// the job's processor and delivers the messages to the job's sink, in
    /// batches. A delivered row's dead letter (or one the processor now
    /// skips) is deleted; a row still rejected keeps its dead letter with
    /// the new reason; a key the source no longer has keeps its dead letter
    /// as it was. The counts are returned and written to the audit trail.
    /// The job is checked against the catalog first, as a run is. A sink
    /// error stops the requeue: the batch's dead letters stay.
    pub async fn requeue_dead_letters(
        &self,
        job: Job,
        run_id: Option<i64>,
    ) -> Result<crate::control::RequeueReport, crate::control::ControlError> {
        let job = self.checked(job).await?;
        self.operator().requeue(&job, run_id).await
    }

    /// Runs the job (or joins its active run) to its end.
    pub async fn run(&self, job: Job) -> Result<RunReport, Error> {
        self.start_run(job)?.wait().await
    }

    /// Runs the job on a schedule (see [`Schedule`]) until the schedule
    /// ends, is cancelled or the runtime shuts down. Each tick's run is keyed
    /// by the tick, so instances with the same schedule share each run; a
    /// tick that finds an earlier run still active is skipped.
    pub fn schedule(&self, job: Job, schedule: Schedule) -> Result<ScheduleHandle, Error> {
        if self.is_shutting_down() {
            return Err(Error::Shutdown);
        }
        let job_name = job.name.clone();
        let described = schedule.to_string();
        let handle = scheduler::Scheduler::start(self.clone(), job, schedule)?;
        self.inner
            .schedules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((job_name, described, handle.subscribe()));
        Ok(handle)
    }

    /// The schedules started on this runtime (by [`RuntimeHandle::schedule`]),
    /// in the order they were started: job, schedule, and what each has done.
    pub fn schedules(&self) -> Vec<ScheduledJob> {
        self.inner
            .schedules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(job, schedule, status)| ScheduledJob {
                job: job.clone(),
                schedule: schedule.clone(),
                status: status.borrow().clone(),
            })
            .collect()
    }

    /// Whether [`RuntimeHandle::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutdown.borrow()
    }

    /// Graceful shutdown within the configured
    /// [`shutdown_grace`](RuntimeConfig::shutdown_grace): see
    /// [`RuntimeHandle::shutdown_within`].
    pub async fn shutdown(&self) -> Shutdown {
        self.shutdown_within(self.inner.config.shutdown_grace).await
    }

    /// Graceful shutdown with a deadline: every worker finishes the page in
    /// flight (confirmed and checkpointed), starts no other and hands its
    /// partition back (its lease released, so another instance takes it
    /// over at once); each run reports itself interrupted; then the
    /// runtime's thread stops. Whatever has not finished by `grace` (a sink
    /// still retrying, a slow store) is abandoned: its partitions keep their
    /// leases until they expire, and at most their page in flight is read
    /// again by whoever takes them over. Idempotent.
    pub async fn shutdown_within(&self, grace: Duration) -> Shutdown {
        self.inner.shutdown.send_replace(true);
        let clean = tokio::time::timeout(grace, self.inner.active.wait_idle())
            .await
            .is_ok();
        let outcome = if clean {
            Shutdown::Clean
        } else {
            let runs = self.inner.active.count.load(Ordering::SeqCst);
            tracing::warn!(
                runs,
                grace = %crate::model::duration::format(grace),
                "shutdown grace period over: abandoning what is still in flight; its leases will expire"
            );
            Shutdown::Abandoned { runs }
        };
        self.inner.system.stop();
        if let Some(rx) = self.inner.stopped.lock().await.take() {
            let _ = rx.await;
        }
        outcome
    }
}

/// How a [`RuntimeHandle::shutdown`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Every run checkpointed its pages in flight and handed its
    /// partitions back (or there was nothing running).
    Clean,
    /// The grace period ended first: this many runs were abandoned, their
    /// leases left to expire.
    Abandoned {
        /// Runs still in flight at the deadline.
        runs: usize,
    },
}

/// Dropping the last handle (a schedule holds one while it lasts; a
/// [`RunHandle`] holds none) starts the same
/// graceful shutdown in the background: workers checkpoint their pages in
/// flight and hand their partitions back, then the runtime's thread stops.
/// Nothing waits for it, so a process about to exit should call
/// [`RuntimeHandle::shutdown`] instead; otherwise what was not handed back
/// is taken over when its leases expire.
impl Drop for Inner {
    fn drop(&mut self) {
        if *self.shutdown.borrow() {
            return;
        }
        self.shutdown.send_replace(true);
        let (active, system) = (self.active.clone(), self.system.clone());
        let grace = self.config.shutdown_grace;
        self.arbiter.spawn(async move {
            let _ = tokio::time::timeout(grace, active.wait_idle()).await;
            system.stop();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_ends_idle_transactions_after_the_lease_and_never_sooner_than_the_floor() {
        let mut config = RuntimeConfig::new("sqlite://t.db");
        assert_eq!(
            config.store_options().idle_transaction_timeout,
            Some(config.lease)
        );
        config.lease = Duration::from_secs(90);
        assert_eq!(
            config.store_options().idle_transaction_timeout,
            Some(Duration::from_secs(90))
        );
        config.lease = Duration::from_millis(1500);
        assert_eq!(
            config.store_options().idle_transaction_timeout,
            Some(RuntimeConfig::MIN_IDLE_TRANSACTION_TIMEOUT)
        );
    }
}
