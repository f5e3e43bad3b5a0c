//! Steering live runs: status, pause, resume, cancel, retry, throttles and
//! dead letters, for operators and for hosts that embed tranche.
//!
//! Every operation acts through the database (see the store's run
//! control), so every instance of every host obeys it within one poll
//! interval, and every operation is written to the audit trail with who
//! asked. Operations are idempotent: pausing a paused run changes nothing
//! and says so. Without a run id they mean the job's active run.
//!
//! ```no_run
//! # async fn f(runtime: tranche::RuntimeHandle) -> Result<(), tranche::control::ControlError> {
//! let operator = runtime.operator();
//! operator.update_throttle("backfill", None, |t| t.max_rows_per_s = Some(2_000)).await?;
//! operator.pause("backfill", None).await?;
//! let status = operator.status("backfill", None).await?;
//! println!("{} of {} rows, {:?}", status.rows_done, status.run.rows_identified, status.run.state);
//! operator.resume("backfill", None).await?;
//! # Ok(()) }
//! ```

mod requeue;

pub use requeue::RequeueReport;

use serde::Serialize;

use crate::model::{ConfigError, Throttle};
use crate::store::{
    AuditEntry, DeadLetter, PartitionState, RetryOutcome, RunRecord, RunState, StateChange, Store,
    StoreError, ThrottleOutcome, Transition,
};

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No job of that name has ever run on this database.
    #[error("unknown job {0:?}: no run of it was ever started on this database")]
    UnknownJob(String),
    /// The job has no run of that id.
    #[error("unknown run {run_id} of job {job:?}")]
    UnknownRun {
        /// The job.
        job: String,
        /// The id asked for.
        run_id: i64,
    },
    /// The run has no partition of that number.
    #[error("unknown partition {number} of run {run_id}")]
    UnknownPartition {
        /// The run.
        run_id: i64,
        /// The number asked for.
        number: i32,
    },
    /// No run was named and the job has no active one.
    #[error("job {0:?} has no active run (planning, running or paused); name one with --run")]
    NoActiveRun(String),
    /// The run's state forbids the operation (cancel a done run).
    #[error("cannot {op} run {run_id}: {reason}")]
    Forbidden {
        /// The operation.
        op: &'static str,
        /// The run.
        run_id: i64,
        /// Its state.
        state: RunState,
        /// Why, in words.
        reason: String,
    },
    /// A setting given to the operation is invalid (a throttle field).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job's sink failed (while requeueing dead letters).
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    /// The runtime was shut down before the operation completed.
    #[error("the tranche runtime is shut down")]
    Shutdown,
}

impl From<crate::Error> for ControlError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Config(e) => ControlError::Config(e),
            crate::Error::Store(e) => ControlError::Store(e),
            crate::Error::Sink(e) => ControlError::Sink(e),
            _ => ControlError::Shutdown,
        }
    }
}

impl ControlError {
    /// The binary's exit status for this error: 2 for an unknown job, run
    /// or partition and for bad input, 4 when the run's state forbids the
    /// operation, 1 when the database or the sink failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            ControlError::UnknownJob(_)
            | ControlError::UnknownRun { .. }
            | ControlError::UnknownPartition { .. }
            | ControlError::NoActiveRun(_)
            | ControlError::Config(_) => 2,
            ControlError::Forbidden { .. } => 4,
            ControlError::Store(_) | ControlError::Sink(_) | ControlError::Shutdown => 1,
        }
    }
}

/// A run as `tranche status` shows it.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct RunStatus {
    /// The run as stored: state, rows identified, throttle, health.
    pub run: RunRecord,
    /// Rows checkpointed by every instance so far.
    pub rows_done: i64,
    /// Rows done (and dead-lettered while planning) of rows identified, %.
    pub percent: f64,
    /// Rows per second over about the last minute (while it runs), or
    /// over the whole run (once it ended).
    pub rows_per_s: Option<f64>,
    /// Seconds left at that rate, while it runs.
    pub eta_s: Option<f64>,
    /// Its dead letters.
    pub dead_letters: i64,
    /// Its partitions, by number.
    pub partitions: Vec<PartitionStatus>,
    /// The job's latest operations, newest first.
    pub audit: Vec<AuditEntry>,
    /// The database clock when this was read, epoch ms.
    pub now_ms: i64,
}

/// A run in a list of runs: its record (with rows done current), progress,
/// rate and ETA.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct RunSummary {
    /// The run as stored, `rows_done` summed from its partitions while it
    /// is live.
    pub run: RunRecord,
    /// Rows done (and dead-lettered while planning) of rows identified, %.
    pub percent: f64,
    /// Rows per second (see [`RunStatus::rows_per_s`]).
    pub rows_per_s: Option<f64>,
    /// Seconds left at that rate, while it runs.
    pub eta_s: Option<f64>,
}

/// A partition as `tranche status` shows it.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct PartitionStatus {
    /// Number within the run.
    pub number: i32,
    /// Id.
    pub id: i64,
    /// Its scope's label.
    pub scope: String,
    /// State.
    pub state: PartitionState,
    /// Rows checkpointed.
    pub rows_done: i64,
    /// Rows planned.
    pub rows_planned: i64,
    /// Done of planned, %.
    pub percent: f64,
    /// Holder while claimed.
    pub owner: Option<String>,
    /// Claim epoch.
    pub epoch: i64,
    /// Milliseconds since the latest claim, while claimed.
    pub lease_age_ms: Option<i64>,
    /// Milliseconds until the lease expires (negative: expired), while
    /// claimed.
    pub lease_left_ms: Option<i64>,
    /// Failed attempts.
    pub attempts: i32,
    /// Last error.
    pub last_error: Option<String>,
}

/// Does run operations on one store, recording each under `actor`.
#[derive(Clone)]
pub struct Operator {
    store: Store,
    actor: String,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator")
            .field("actor", &self.actor)
            .finish()
    }
}

fn pct(done: i64, of: i64) -> f64 {
    if of <= 0 {
        100.0
    } else {
        (done as f64 * 100.0 / of as f64).min(100.0)
    }
}

impl Operator {
    /// An operator on `store`; `actor` names who acts in the audit trail
    /// (an instance id, or `user@host`).
    pub fn new(store: Store, actor: impl Into<String>) -> Self {
        Self {
            store,
            actor: actor.into(),
        }
    }

    /// The run meant: `run_id` of `job`, or without one the job's active
    /// run (or, when `latest` is set and none is active, its latest run).
    async fn pick(
        &self,
        job: &str,
        run_id: Option<i64>,
        latest: bool,
    ) -> Result<RunRecord, ControlError> {
        if !self.store.job_exists(job).await? {
            return Err(ControlError::UnknownJob(job.to_owned()));
        }
        if let Some(id) = run_id {
            return self
                .store
                .run_of_job(job, id)
                .await?
                .ok_or_else(|| ControlError::UnknownRun {
                    job: job.to_owned(),
                    run_id: id,
                });
        }
        if let Some(run) = self.store.active_run(job).await? {
            return Ok(run);
        }
        if latest {
            if let Some(run) = self.store.runs(job, 1).await?.into_iter().next() {
                return Ok(run);
            }
        }
        Err(ControlError::NoActiveRun(job.to_owned()))
    }

    async fn audit(&self, entry: AuditEntry) -> Result<(), ControlError> {
        self.store.write_audit(entry).await?;
        Ok(())
    }

    /// Where a run stands: the job's active run, or its latest.
    pub async fn status(&self, job: &str, run_id: Option<i64>) -> Result<RunStatus, ControlError> {
        let mut run = self.pick(job, run_id, true).await?;
        let now_ms = self.store.now_ms().await?;
        let parts = self.store.partitions(run.id).await?;
        let rows_done: i64 = parts.iter().map(|p| p.rows_done).sum();
        // The run row's count is refreshed now and then; the partitions'
        // checkpoints are the truth.
        run.rows_done = rows_done;
        let (rows_per_s, eta_s) = self.rate(&run, now_ms).await?;
        let partitions = parts
            .iter()
            .map(|p| {
                let claimed = p.state == PartitionState::Claimed;
                PartitionStatus {
                    number: p.number,
                    id: p.id,
                    scope: p.scope.label.clone(),
                    state: p.state,
                    rows_done: p.rows_done,
                    rows_planned: p.rows_planned,
                    percent: pct(p.rows_done, p.rows_planned),
                    owner: p.owner.clone().filter(|_| claimed),
                    epoch: p.epoch,
                    lease_age_ms: p.claimed_ms.filter(|_| claimed).map(|c| now_ms - c),
                    lease_left_ms: p.lease_expires_ms.filter(|_| claimed).map(|e| e - now_ms),
                    attempts: p.attempts,
                    last_error: p.last_error.clone(),
                }
            })
            .collect();
        Ok(RunStatus {
            percent: pct(rows_done + run.rows_dead_at_plan, run.rows_identified),
            rows_done,
            rows_per_s,
            eta_s,
            dead_letters: self.store.dead_letter_count(run.id).await?,
            partitions,
            audit: self.store.audit_log(job, 10).await?,
            now_ms,
            run,
        })
    }

    /// The rate of `run` (whose `rows_done` is current) and its ETA:
    /// rows per second over about the last minute while it runs, over the
    /// whole run once it ended.
    async fn rate(
        &self,
        run: &RunRecord,
        now_ms: i64,
    ) -> Result<(Option<f64>, Option<f64>), ControlError> {
        let rows_per_s = if run.state.is_finished() {
            run.finished_ms
                .map(|end| run.rows_done as f64 * 1000.0 / (end - run.started_ms).max(1) as f64)
        } else {
            match self.store.sample_since(run.id, now_ms - 60_000).await? {
                Some((at, then)) if now_ms > at => {
                    Some((run.rows_done - then).max(0) as f64 * 1000.0 / (now_ms - at) as f64)
                }
                _ => None,
            }
        };
        let left = (run.rows_identified - run.rows_done - run.rows_dead_at_plan).max(0);
        let eta_s = rows_per_s
            .filter(|r| *r > 0.0 && run.state == RunState::Running)
            .map(|r| left as f64 / r);
        Ok((rows_per_s, eta_s))
    }

    /// The latest `limit` runs of every job, newest first, each with its
    /// progress, rate and ETA (what the console's runs page shows).
    pub async fn recent_runs(&self, limit: i64) -> Result<Vec<RunSummary>, ControlError> {
        let now_ms = self.store.now_ms().await?;
        let mut out = Vec::new();
        for mut run in self.store.recent_runs(limit).await? {
            if !run.state.is_finished() {
                // Closed runs carry their sum; live ones are summed here.
                run.rows_done = self
                    .store
                    .partitions(run.id)
                    .await?
                    .iter()
                    .map(|p| p.rows_done)
                    .sum();
            }
            let (rows_per_s, eta_s) = self.rate(&run, now_ms).await?;
            out.push(RunSummary {
                percent: pct(run.rows_done + run.rows_dead_at_plan, run.rows_identified),
                rows_per_s,
                eta_s,
                run,
            });
        }
        Ok(out)
    }

    async fn change(
        &self,
        job: &str,
        run_id: Option<i64>,
        change: StateChange,
    ) -> Result<Transition, ControlError> {
        let run = self.pick(job, run_id, false).await?;
        match self.store.change_state(run.id, change).await? {
            Ok(t) => {
                let detail = if t.changed() {
                    format!("{} -> {}", t.from.as_str(), t.to.as_str())
                } else {
                    format!("no change: already {}", t.to.as_str())
                };
                tracing::info!(job, run = run.id, op = change.name(), %detail, actor = %self.actor, "run operation");
                self.audit(AuditEntry::new(
                    job,
                    Some(run.id),
                    change.name(),
                    detail,
                    &self.actor,
                ))
                .await?;
                Ok(t)
            }
            Err(state) => Err(ControlError::Forbidden {
                op: change.name(),
                run_id: run.id,
                state,
                reason: match (change, state) {
                    (StateChange::Pause, RunState::Planning) => {
                        "it is still planning; pause it once it runs".into()
                    }
                    (StateChange::Resume, RunState::Failed) => {
                        "it failed; use retry to run its failed partitions again".into()
                    }
                    (_, state) => format!("it is {} (ended)", state.as_str()),
                },
            }),
        }
    }

    /// Pauses a run: its workers finish the page in flight (confirmed and
    /// checkpointed), take no new page and hand their partitions back, so
    /// a paused run holds no lease. `tranche run` processes keep waiting.
    pub async fn pause(&self, job: &str, run_id: Option<i64>) -> Result<Transition, ControlError> {
        self.change(job, run_id, StateChange::Pause).await
    }

    /// Resumes a paused run: any instance continues from the checkpoints.
    pub async fn resume(&self, job: &str, run_id: Option<i64>) -> Result<Transition, ControlError> {
        self.change(job, run_id, StateChange::Resume).await
    }

    /// Cancels a run for good: no page starts after it, it ends as
    /// `cancelled`, and the job's next run is a new one.
    pub async fn cancel(&self, job: &str, run_id: Option<i64>) -> Result<Transition, ControlError> {
        self.change(job, run_id, StateChange::Cancel).await
    }

    /// Sends a run's failed partitions (or the one numbered `partition`)
    /// back to pending with their attempts reset, and a failed run back to
    /// running; without a run id, the job's active or latest run. Returns
    /// how many partitions went back.
    pub async fn retry(
        &self,
        job: &str,
        run_id: Option<i64>,
        partition: Option<i32>,
    ) -> Result<u64, ControlError> {
        let run = self.pick(job, run_id, true).await?;
        match self.store.retry(run.id, partition).await? {
            RetryOutcome::Retried {
                partitions,
                from,
                to,
            } => {
                let detail = format!(
                    "{partitions} failed partition{} back to pending; run {} -> {}",
                    if partitions == 1 { "" } else { "s" },
                    from.as_str(),
                    to.as_str()
                );
                self.audit(
                    AuditEntry::new(job, Some(run.id), "retry", detail, &self.actor)
                        .with_partition(partition),
                )
                .await?;
                Ok(partitions)
            }
            RetryOutcome::Forbidden(state, reason) => Err(ControlError::Forbidden {
                op: "retry",
                run_id: run.id,
                state,
                reason,
            }),
            RetryOutcome::UnknownPartition(number) => Err(ControlError::UnknownPartition {
                run_id: run.id,
                number,
            }),
        }
    }

    /// Changes a run's throttle: `change` edits the stored one, which is
    /// validated and stored for every instance to obey within a poll
    /// interval. The edit is applied to the throttle as stored under the
    /// run's lock, so two operators changing different settings at once
    /// both have their way. Returns the throttle now in force.
    pub async fn update_throttle(
        &self,
        job: &str,
        run_id: Option<i64>,
        change: impl FnOnce(&mut Throttle) + Send + 'static,
    ) -> Result<Throttle, ControlError> {
        let run = self.pick(job, run_id, false).await?;
        match self.store.update_throttle(run.id, change).await? {
            ThrottleOutcome::Set(throttle) => {
                let detail = throttle.to_string();
                self.audit(AuditEntry::new(
                    job,
                    Some(run.id),
                    "throttle",
                    detail,
                    &self.actor,
                ))
                .await?;
                Ok(throttle)
            }
            ThrottleOutcome::Invalid(e) => Err(e.into()),
            ThrottleOutcome::Ended(state) => Err(ControlError::Forbidden {
                op: "throttle",
                run_id: run.id,
                state,
                reason: format!("it is {} (ended)", state.as_str()),
            }),
        }
    }

    /// Replaces a run's throttle (see [`Operator::update_throttle`]).
    pub async fn set_throttle(
        &self,
        job: &str,
        run_id: Option<i64>,
        throttle: Throttle,
    ) -> Result<Throttle, ControlError> {
        self.update_throttle(job, run_id, |t| *t = throttle).await
    }

    /// A run's dead letters (the active or latest run without an id), with
    /// the run's id.
    pub async fn dead_letters(
        &self,
        job: &str,
        run_id: Option<i64>,
    ) -> Result<(i64, Vec<DeadLetter>), ControlError> {
        let run = self.pick(job, run_id, true).await?;
        Ok((run.id, self.store.dead_letters(run.id).await?))
    }

    /// Deletes a run's dead letters; how many there were.
    pub async fn purge_dead_letters(
        &self,
        job: &str,
        run_id: Option<i64>,
    ) -> Result<u64, ControlError> {
        let run = self.pick(job, run_id, true).await?;
        let n = self.store.purge_dead_letters(run.id).await?;
        self.audit(AuditEntry::new(
            job,
            Some(run.id),
            "purge-dead-letters",
            format!("{n} deleted"),
            &self.actor,
        ))
        .await?;
        Ok(n)
    }

    /// The job's latest operations, newest first.
    pub async fn audit_log(&self, job: &str, limit: i64) -> Result<Vec<AuditEntry>, ControlError> {
        Ok(self.store.audit_log(job, limit).await?)
    }
}
