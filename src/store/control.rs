//! Steering a run through the database: its state (pause, resume, cancel,
//! retry), its throttles, the shared rate limiter, the health gate, the
//! audit trail and the samples that rates and ETAs come from.
//!
//! Everything here acts on stored rows, so every instance of every host
//! obeys it within one poll interval: a supervisor reads its run's
//! [`ControlView`] every poll, and claims check the run's state and cap in
//! the same transaction that takes a partition.

use std::time::Duration;

use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text};
use diesel::QueryableByName;
use serde::Serialize;

use super::connection::{Bind, Connection, Sql};
use super::gate::lock_clause;
use super::queries::{self, One, RunRecord, RunRow, RunState, RUN_COLUMNS};
use super::{Dialect, Store, StoreError};
use crate::model::Throttle;

/// A change of a run's state asked for by an operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StateChange {
    /// Running → paused: no page starts, workers hand their partitions back.
    Pause,
    /// Paused → running.
    Resume,
    /// Planning, running or paused → cancelled, for good.
    Cancel,
}

impl StateChange {
    /// The operation's name (`pause`, `resume`, `cancel`).
    pub fn name(self) -> &'static str {
        match self {
            StateChange::Pause => "pause",
            StateChange::Resume => "resume",
            StateChange::Cancel => "cancel",
        }
    }
}

/// What a state change did: `from` equals `to` when there was nothing to
/// do (the operations are idempotent).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// The run.
    pub run_id: i64,
    /// Its state before.
    pub from: RunState,
    /// Its state after.
    pub to: RunState,
}

impl Transition {
    /// Whether the state changed.
    pub fn changed(&self) -> bool {
        self.from != self.to
    }
}

/// What a retry found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryOutcome {
    /// Failed partitions went back to pending.
    Retried {
        /// How many.
        partitions: u64,
        /// The run's state before.
        from: RunState,
        /// The run's state after.
        to: RunState,
    },
    /// The run's state forbids it (done or cancelled), or a failed run has
    /// no failed partition to retry (its rows were unaccounted for, or its
    /// planning failed): the reason.
    Forbidden(RunState, String),
    /// The run has no partition of that number.
    UnknownPartition(i32),
}

/// A run as its supervisors poll it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ControlView {
    /// The run's record: state, throttles, health.
    pub run: RunRecord,
    /// Rows checkpointed by every instance so far.
    pub rows_done: i64,
    /// Partitions claimed under a live lease, oldest claim first.
    pub claimed: Vec<i64>,
    /// Partitions waiting to be claimed.
    pub pending: i64,
    /// Partitions failed for good (until retried).
    pub failed: i64,
    /// Milliseconds since the oldest live claim was taken (database clock).
    pub oldest_lease_age_ms: Option<i64>,
}

/// One operation on a run, as the audit table holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AuditEntry {
    /// When, epoch ms (database clock; 0 before it was written).
    pub at_ms: i64,
    /// The job.
    pub job_name: String,
    /// The run, if the operation had one.
    pub run_id: Option<i64>,
    /// The partition number, if the operation named one.
    pub partition: Option<i32>,
    /// What was done (`pause`, `resume`, `cancel`, `retry`, `throttle`,
    /// `purge-dead-letters`).
    pub action: String,
    /// What it changed, in words.
    pub detail: String,
    /// Who asked: the instance, or `user@host` from the command line.
    pub actor: String,
}

impl AuditEntry {
    /// An entry to be written (its time is the database's, at insert).
    pub fn new(
        job_name: &str,
        run_id: Option<i64>,
        action: &str,
        detail: impl Into<String>,
        actor: &str,
    ) -> Self {
        Self {
            at_ms: 0,
            job_name: job_name.to_owned(),
            run_id,
            partition: None,
            action: action.to_owned(),
            detail: detail.into(),
            actor: actor.to_owned(),
        }
    }

    /// The same, naming a partition.
    pub fn with_partition(mut self, number: Option<i32>) -> Self {
        self.partition = number;
        self
    }
}

#[derive(QueryableByName)]
struct AuditRow {
    #[diesel(sql_type = BigInt)]
    at_ms: i64,
    #[diesel(sql_type = Text)]
    job_name: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    run_id: Option<i64>,
    #[diesel(sql_type = Nullable<Integer>)]
    partition_number: Option<i32>,
    #[diesel(sql_type = Text)]
    action: String,
    #[diesel(sql_type = Text)]
    detail: String,
    #[diesel(sql_type = Text)]
    actor: String,
}

#[derive(QueryableByName)]
struct Value {
    #[diesel(sql_type = Nullable<Double>)]
    v: Option<f64>,
}

#[derive(QueryableByName, Default)]
struct PartitionTally {
    #[diesel(sql_type = BigInt)]
    rows_done: i64,
    #[diesel(sql_type = BigInt)]
    pending: i64,
    #[diesel(sql_type = BigInt)]
    failed: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    oldest_lease_age_ms: Option<i64>,
}

#[derive(QueryableByName)]
struct SampleRow {
    #[diesel(sql_type = BigInt)]
    at_ms: i64,
    #[diesel(sql_type = BigInt)]
    rows_done: i64,
}

fn locked_run(c: &mut Connection, run_id: i64) -> Result<RunRecord, StoreError> {
    let lock = lock_clause(c);
    let rows: Vec<RunRow> = c.load(
        &Sql::new(format!(
            "SELECT {RUN_COLUMNS} FROM tranche_runs WHERE id = ?{lock}"
        ))
        .bind(Bind::Int(run_id)),
    )?;
    rows.into_iter()
        .next()
        .ok_or_else(|| StoreError::Corrupt {
            what: "run",
            reason: format!("run {run_id} does not exist"),
        })
        .and_then(RunRecord::try_from)
}

/// Applies `change` to the run; `Err(state)` when its state forbids it.
pub(crate) fn change_state(
    c: &mut Connection,
    run_id: i64,
    change: StateChange,
) -> Result<Result<Transition, RunState>, StoreError> {
    c.write_transaction(|c| {
        let from = locked_run(c, run_id)?.state;
        use RunState::*;
        let to = match (change, from) {
            (StateChange::Pause, Running | Paused) => Paused,
            (StateChange::Resume, Running | Paused) => Running,
            (StateChange::Cancel, Planning | Running | Paused | Cancelled) => Cancelled,
            (_, state) => return Ok(Err(state)),
        };
        if to != from {
            let now = c.dialect().now_ms();
            let ends = if to == Cancelled {
                format!(
                    ", finished_ms = {now}, rows_done = COALESCE((SELECT SUM(p.rows_done) \
                     FROM tranche_partitions p WHERE p.run_id = tranche_runs.id), 0)"
                )
            } else {
                String::new()
            };
            c.execute(
                &Sql::new(format!(
                    "UPDATE tranche_runs SET state = ?{ends} WHERE id = ?"
                ))
                .bind(Bind::Text(to.as_str().into()))
                .bind(Bind::Int(run_id)),
            )?;
        }
        Ok(Ok(Transition { run_id, from, to }))
    })
}

/// Failed partitions of the run (or the one numbered `partition`) back to
/// pending with their attempts reset; a failed run running again.
pub(crate) fn retry(
    c: &mut Connection,
    run_id: i64,
    partition: Option<i32>,
) -> Result<RetryOutcome, StoreError> {
    c.write_transaction(|c| {
        let run = locked_run(c, run_id)?;
        if matches!(run.state, RunState::Done | RunState::Cancelled) {
            return Ok(RetryOutcome::Forbidden(
                run.state,
                format!("the run is {}; start a new run instead", run.state.as_str()),
            ));
        }
        let mut only = String::new();
        if let Some(n) = partition {
            let exists: Vec<One> = c.load(
                &Sql::new(
                    "SELECT COUNT(*) AS v FROM tranche_partitions \
                     WHERE run_id = ? AND number = ?",
                )
                .bind(Bind::Int(run_id))
                .bind(Bind::Int(i64::from(n))),
            )?;
            if exists.first().map_or(0, |r| r.v) == 0 {
                return Ok(RetryOutcome::UnknownPartition(n));
            }
            only = format!(" AND number = {n}");
        }
        let now = c.dialect().now_ms();
        let retried = c.execute(&Sql::new(format!(
            "UPDATE tranche_partitions SET state = 'pending', attempts = 0, last_error = NULL, \
             owner = NULL, lease_expires_ms = NULL, updated_ms = {now} \
             WHERE run_id = {run_id} AND state = 'failed'{only}"
        )))? as u64;
        if run.state == RunState::Failed && retried == 0 {
            return Ok(RetryOutcome::Forbidden(
                run.state,
                format!(
                    "no partition{} failed; the run failed because: {}",
                    partition
                        .map(|n| format!(" numbered {n}"))
                        .unwrap_or_default(),
                    run.last_error.as_deref().unwrap_or("no reason recorded")
                ),
            ));
        }
        let to = if run.state == RunState::Failed && retried > 0 {
            c.execute(
                &Sql::new(
                    "UPDATE tranche_runs SET state = 'running', finished_ms = NULL, \
                     last_error = NULL WHERE id = ?",
                )
                .bind(Bind::Int(run_id)),
            )?;
            RunState::Running
        } else {
            run.state
        };
        Ok(RetryOutcome::Retried {
            partitions: retried,
            from: run.state,
            to,
        })
    })
}

/// What a change to a run's throttle did.
#[derive(Debug)]
#[non_exhaustive]
pub enum ThrottleOutcome {
    /// Stored: the throttle now in force.
    Set(Throttle),
    /// The changed throttle is not valid; nothing was stored.
    Invalid(crate::model::ConfigError),
    /// The run has ended (in this state); nothing was stored.
    Ended(RunState),
}

/// Applies `change` to the run's stored throttle, read and written under
/// the run's lock, so two changes made at once both take effect.
pub(crate) fn update_throttle(
    c: &mut Connection,
    run_id: i64,
    change: impl FnOnce(&mut Throttle),
) -> Result<ThrottleOutcome, StoreError> {
    c.write_transaction(|c| {
        let run = locked_run(c, run_id)?;
        if run.state.is_finished() {
            return Ok(ThrottleOutcome::Ended(run.state));
        }
        let mut throttle = run.throttle;
        change(&mut throttle);
        if let Err(e) = throttle.validate() {
            return Ok(ThrottleOutcome::Invalid(e));
        }
        let json = serde_json::to_string(&throttle).map_err(|e| StoreError::Corrupt {
            what: "run throttle",
            reason: e.to_string(),
        })?;
        c.execute(
            &Sql::new(
                "UPDATE tranche_runs SET throttle = ?, max_active_partitions = ? WHERE id = ?",
            )
            .bind(Bind::Text(json))
            .bind(Bind::OptInt(throttle.max_active_partitions.map(i64::from)))
            .bind(Bind::Int(run_id)),
        )?;
        Ok(ThrottleOutcome::Set(throttle))
    })
}

/// The run as its supervisors poll it; also records a sample of its rows
/// done when the last one is 5 s old or more.
pub(crate) fn control_view(c: &mut Connection, run_id: i64) -> Result<ControlView, StoreError> {
    let run = queries::run_record(c, run_id)?;
    let now = c.dialect().now_ms();
    let int = c.dialect().bigint();
    let tally: Vec<PartitionTally> = c.load(
        &Sql::new(format!(
            "SELECT CAST(COALESCE(SUM(rows_done), 0) AS {int}) AS rows_done, \
               CAST(COALESCE(SUM(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0) AS {int}) \
                 AS pending, \
               CAST(COALESCE(SUM(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), 0) AS {int}) \
                 AS failed, \
               CAST(MAX(CASE WHEN state = 'claimed' AND lease_expires_ms >= {now} \
                 THEN {now} - claimed_ms END) AS {int}) AS oldest_lease_age_ms \
             FROM tranche_partitions WHERE run_id = ?"
        ))
        .bind(Bind::Int(run_id)),
    )?;
    let tally = tally.into_iter().next().unwrap_or_default();
    let rows_done = tally.rows_done;
    let claimed: Vec<One> = c.load(
        &Sql::new(format!(
            "SELECT id AS v FROM tranche_partitions \
             WHERE run_id = ? AND state = 'claimed' AND lease_expires_ms >= {now} \
             ORDER BY claimed_ms, id"
        ))
        .bind(Bind::Int(run_id)),
    )?;
    if !run.state.is_finished() {
        // A sample taken in the same millisecond by another instance is
        // the same sample.
        let (ignore, on_conflict) = match c.dialect() {
            Dialect::Mysql => ("IGNORE ", ""),
            _ => ("", " ON CONFLICT (run_id, at_ms) DO NOTHING"),
        };
        c.execute(
            &Sql::new(format!(
                "INSERT {ignore}INTO tranche_run_samples (run_id, at_ms, rows_done) \
                 SELECT ?, {now}, ? FROM (SELECT 1 AS one) AS once WHERE NOT EXISTS \
                   (SELECT 1 FROM tranche_run_samples WHERE run_id = ? AND at_ms > {now} - 5000)\
                 {on_conflict}"
            ))
            .bind(Bind::Int(run_id))
            .bind(Bind::Int(rows_done))
            .bind(Bind::Int(run_id)),
        )?;
    }
    Ok(ControlView {
        run,
        rows_done,
        claimed: claimed.into_iter().map(|r| r.v).collect(),
        pending: tally.pending,
        failed: tally.failed,
        oldest_lease_age_ms: tally.oldest_lease_age_ms,
    })
}

/// The oldest sample of the run's rows done taken at or after `since_ms`,
/// as `(at_ms, rows_done)`.
pub(crate) fn sample_since(
    c: &mut Connection,
    run_id: i64,
    since_ms: i64,
) -> Result<Option<(i64, i64)>, StoreError> {
    let rows: Vec<SampleRow> = c.load(
        &Sql::new(
            "SELECT at_ms, rows_done FROM tranche_run_samples \
             WHERE run_id = ? AND at_ms >= ? ORDER BY at_ms LIMIT 1",
        )
        .bind(Bind::Int(run_id))
        .bind(Bind::Int(since_ms)),
    )?;
    Ok(rows.into_iter().next().map(|r| (r.at_ms, r.rows_done)))
}

/// The run's samples of rows done since `since_ms`, oldest first, as
/// `(at_ms, rows_done)`: at most `limit`, the latest ones.
pub(crate) fn samples(
    c: &mut Connection,
    run_id: i64,
    since_ms: i64,
    limit: i64,
) -> Result<Vec<(i64, i64)>, StoreError> {
    let rows: Vec<SampleRow> = c.load(
        &Sql::new(
            "SELECT at_ms, rows_done FROM tranche_run_samples \
             WHERE run_id = ? AND at_ms >= ? ORDER BY at_ms DESC LIMIT ?",
        )
        .bind(Bind::Int(run_id))
        .bind(Bind::Int(since_ms))
        .bind(Bind::Int(limit)),
    )?;
    let mut out: Vec<(i64, i64)> = rows.into_iter().map(|r| (r.at_ms, r.rows_done)).collect();
    out.reverse();
    Ok(out)
}

/// The shared rate limiter (a generic cell rate algorithm over the run's
/// row, on the database clock): reserves `rows` at `per_s` rows per second
/// for the whole run and answers how long to wait before delivering them.
pub(crate) fn reserve_rows(
    c: &mut Connection,
    run_id: i64,
    rows: u64,
    per_s: u64,
) -> Result<Duration, StoreError> {
    let now_us = queries::now_ms(c)?.saturating_mul(1000);
    let cost_us = (rows.saturating_mul(1_000_000) / per_s.max(1)) as i64;
    let greatest = match c.dialect() {
        Dialect::Postgres | Dialect::Mysql => "GREATEST",
        Dialect::Sqlite => "MAX",
    };
    let update = Sql::new(format!(
        "UPDATE tranche_runs SET rate_tat_us = {greatest}(COALESCE(rate_tat_us, 0), ?) + ? \
         WHERE id = ?"
    ))
    .bind(Bind::Int(now_us))
    .bind(Bind::Int(cost_us))
    .bind(Bind::Int(run_id));
    let tat: Vec<One> = if c.dialect() == Dialect::Mysql {
        // No RETURNING: the row, locked by the update, is read back in
        // the same transaction.
        c.write_transaction(|c| {
            c.execute(&update)?;
            c.load(
                &Sql::new("SELECT rate_tat_us AS v FROM tranche_runs WHERE id = ?")
                    .bind(Bind::Int(run_id)),
            )
        })?
    } else {
        let mut returning = update;
        returning.push(" RETURNING rate_tat_us AS v", []);
        c.load(&returning)?
    };
    let start_us = tat.first().map_or(now_us, |r| r.v - cost_us);
    Ok(Duration::from_micros((start_us - now_us).max(0) as u64))
}

/// Records why the database is unhealthy (or `None`: healthy again).
pub(crate) fn set_health(
    c: &mut Connection,
    run_id: i64,
    health: Option<&str>,
) -> Result<(), StoreError> {
    let now = c.dialect().now_ms();
    c.execute(
        &Sql::new(format!(
            "UPDATE tranche_runs SET health = ?, health_ms = {now} WHERE id = ?"
        ))
        .bind(Bind::OptText(health.map(str::to_owned)))
        .bind(Bind::Int(run_id)),
    )?;
    Ok(())
}

/// Evaluates a run's health checks; `Some(reason)` while unhealthy. A
/// health query that fails counts as unhealthy, with its error.
pub(crate) fn check_health(
    c: &mut Connection,
    throttle: &Throttle,
) -> Result<Option<String>, StoreError> {
    if let (Some(query), Some(max)) = (&throttle.health_query, throttle.health_max) {
        let cast = match c.dialect() {
            Dialect::Postgres => "DOUBLE PRECISION",
            Dialect::Sqlite => "REAL",
            Dialect::Mysql => "DOUBLE",
        };
        let sql = Sql::new(format!("SELECT CAST(({query}) AS {cast}) AS v"));
        match c.load::<Value>(&sql) {
            Ok(rows) => match rows.first().and_then(|r| r.v) {
                Some(v) if v <= max => {}
                Some(v) => {
                    return Ok(Some(format!(
                        "throttle.health_query returned {v}, above health_max {max}"
                    )))
                }
                None => {
                    return Ok(Some(
                        "throttle.health_query returned no number (NULL or no row)".into(),
                    ))
                }
            },
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => {
                return Ok(Some(format!(
                    "throttle.health_query failed: {}",
                    crate::error_text::chain(&e)
                )))
            }
        }
    }
    if let Some(max) = throttle.max_replication_lag_ms {
        if c.dialect() == Dialect::Mysql {
            // A MySQL primary does not know its replicas' lag.
            return Err(StoreError::Unsupported(
                "throttle.max_replication_lag_ms is measured on PostgreSQL \
                 (pg_stat_replication); on MySQL, give a throttle.health_query that \
                 reads the lag where it is known (a heartbeat table, say) and a health_max"
                    .into(),
            ));
        }
        if c.dialect() == Dialect::Postgres {
            let rows: Vec<Value> = c.load(&Sql::new(
                "SELECT CAST(MAX(EXTRACT(EPOCH FROM replay_lag) * 1000) AS DOUBLE PRECISION) AS v \
                 FROM pg_stat_replication",
            ))?;
            if let Some(lag) = rows.first().and_then(|r| r.v) {
                if lag > max as f64 {
                    return Ok(Some(format!(
                        "replication lag {lag:.0} ms, above max_replication_lag_ms {max}"
                    )));
                }
            }
        }
    }
    Ok(None)
}

pub(crate) fn run_of_job(
    c: &mut Connection,
    job: &str,
    run_id: i64,
) -> Result<Option<RunRecord>, StoreError> {
    let rows: Vec<RunRow> = c.load(
        &Sql::new(format!(
            "SELECT {RUN_COLUMNS} FROM tranche_runs WHERE id = ? AND job_name = ?"
        ))
        .bind(Bind::Int(run_id))
        .bind(Bind::Text(job.into())),
    )?;
    rows.into_iter().next().map(RunRecord::try_from).transpose()
}

pub(crate) fn job_exists(c: &mut Connection, job: &str) -> Result<bool, StoreError> {
    let rows: Vec<One> = c.load(
        &Sql::new("SELECT COUNT(*) AS v FROM tranche_jobs WHERE name = ?")
            .bind(Bind::Text(job.into())),
    )?;
    Ok(rows.first().map_or(0, |r| r.v) > 0)
}

pub(crate) fn dead_letter_count(c: &mut Connection, run_id: i64) -> Result<i64, StoreError> {
    let rows: Vec<One> = c.load(
        &Sql::new("SELECT COUNT(*) AS v FROM tranche_dead_letters WHERE run_id = ?")
            .bind(Bind::Int(run_id)),
    )?;
    Ok(rows.first().map_or(0, |r| r.v))
}

pub(crate) fn purge_dead_letters(c: &mut Connection, run_id: i64) -> Result<u64, StoreError> {
    Ok(c.execute(
        &Sql::new("DELETE FROM tranche_dead_letters WHERE run_id = ?").bind(Bind::Int(run_id)),
    )? as u64)
}

/// Deletes the dead letter of `key` in `run_id` (resolved by a requeue).
pub(crate) fn resolve_dead_letter(
    c: &mut Connection,
    run_id: i64,
    key: i64,
) -> Result<u64, StoreError> {
    Ok(c.execute(
        &Sql::new("DELETE FROM tranche_dead_letters WHERE run_id = ? AND row_key = ?")
            .bind(Bind::Int(run_id))
            .bind(Bind::Int(key)),
    )? as u64)
}

/// Replaces the reason of the dead letter of `key` in `run_id`.
pub(crate) fn set_dead_letter_reason(
    c: &mut Connection,
    run_id: i64,
    key: i64,
    reason: &str,
) -> Result<(), StoreError> {
    c.execute(
        &Sql::new("UPDATE tranche_dead_letters SET reason = ? WHERE run_id = ? AND row_key = ?")
            .bind(Bind::Text(crate::model::redact::redact_text(reason)))
            .bind(Bind::Int(run_id))
            .bind(Bind::Int(key)),
    )?;
    Ok(())
}

pub(crate) fn write_audit(c: &mut Connection, e: &AuditEntry) -> Result<(), StoreError> {
    let now = c.dialect().now_ms();
    c.execute(
        &Sql::new(format!(
            "INSERT INTO tranche_audit (at_ms, job_name, run_id, partition_number, action, \
             detail, actor) VALUES ({now}, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(Bind::Text(e.job_name.clone()))
        .bind(Bind::OptInt(e.run_id))
        .bind(Bind::OptInt(e.partition.map(i64::from)))
        .bind(Bind::Text(e.action.clone()))
        .bind(Bind::Text(crate::model::redact::redact_text(&e.detail)))
        .bind(Bind::Text(e.actor.clone())),
    )?;
    Ok(())
}

pub(crate) fn audit_log(
    c: &mut Connection,
    job: &str,
    limit: i64,
) -> Result<Vec<AuditEntry>, StoreError> {
    let rows: Vec<AuditRow> = c.load(
        &Sql::new(
            "SELECT at_ms, job_name, run_id, partition_number, action, detail, actor \
             FROM tranche_audit WHERE job_name = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(Bind::Text(job.into()))
        .bind(Bind::Int(limit)),
    )?;
    Ok(rows
        .into_iter()
        .map(|r| AuditEntry {
            at_ms: r.at_ms,
            job_name: r.job_name,
            run_id: r.run_id,
            partition: r.partition_number,
            action: r.action,
            detail: r.detail,
            actor: r.actor,
        })
        .collect())
}

/// Run control, on the async face of the store. These are what
/// [`crate::control::Operator`] and the runtime's supervisors call.
impl Store {
    /// Applies a state change to a run (`Err(state)`: its state forbids it).
    pub async fn change_state(
        &self,
        run_id: i64,
        change: StateChange,
    ) -> Result<Result<Transition, RunState>, StoreError> {
        self.run(move |c| change_state(c, run_id, change)).await
    }

    /// Sends failed partitions back to pending (see [`RetryOutcome`]).
    pub async fn retry(
        &self,
        run_id: i64,
        partition: Option<i32>,
    ) -> Result<RetryOutcome, StoreError> {
        self.run(move |c| retry(c, run_id, partition)).await
    }

    /// Applies `change` to a run's stored throttle and stores it if it is
    /// valid and the run has not ended; the read and the write hold the
    /// run's lock, so changes made at once by several operators all take
    /// effect.
    pub async fn update_throttle(
        &self,
        run_id: i64,
        change: impl FnOnce(&mut Throttle) + Send + 'static,
    ) -> Result<ThrottleOutcome, StoreError> {
        self.run(move |c| update_throttle(c, run_id, change)).await
    }

    #[doc(hidden)]
    /// The run as a supervisor polls it (records a rate sample too).
    pub async fn control_view(&self, run_id: i64) -> Result<ControlView, StoreError> {
        self.run(move |c| control_view(c, run_id)).await
    }

    /// The oldest sample of the run's rows done since `since_ms`.
    pub async fn sample_since(
        &self,
        run_id: i64,
        since_ms: i64,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        self.run(move |c| sample_since(c, run_id, since_ms)).await
    }

    #[doc(hidden)]
    /// Reserves `rows` under the run's shared rate; how long to wait.
    pub async fn reserve_rows(
        &self,
        run_id: i64,
        rows: u64,
        per_s: u64,
    ) -> Result<Duration, StoreError> {
        self.run(move |c| reserve_rows(c, run_id, rows, per_s))
            .await
    }

    #[doc(hidden)]
    /// Records the run's health as an instance found it.
    pub async fn set_health(&self, run_id: i64, health: Option<String>) -> Result<(), StoreError> {
        self.run(move |c| set_health(c, run_id, health.as_deref()))
            .await
    }

    #[doc(hidden)]
    /// Evaluates a throttle's health checks; `Some(reason)` while unhealthy.
    pub async fn check_health(&self, throttle: &Throttle) -> Result<Option<String>, StoreError> {
        let throttle = throttle.clone();
        self.run(move |c| check_health(c, &throttle)).await
    }

    /// The job's run of this id, if it has one.
    pub async fn run_of_job(
        &self,
        job: &str,
        run_id: i64,
    ) -> Result<Option<RunRecord>, StoreError> {
        let job = job.to_owned();
        self.run(move |c| run_of_job(c, &job, run_id)).await
    }

    /// Whether the store has ever seen a job of this name.
    pub async fn job_exists(&self, job: &str) -> Result<bool, StoreError> {
        let job = job.to_owned();
        self.run(move |c| job_exists(c, &job)).await
    }

    /// How many dead letters a run has.
    pub async fn dead_letter_count(&self, run_id: i64) -> Result<i64, StoreError> {
        self.run(move |c| dead_letter_count(c, run_id)).await
    }

    /// Deletes a run's dead letters; how many there were.
    pub async fn purge_dead_letters(&self, run_id: i64) -> Result<u64, StoreError> {
        self.run(move |c| purge_dead_letters(c, run_id)).await
    }

    #[doc(hidden)]
    /// Deletes the dead letter of `key` in `run_id`; how many there were.
    pub async fn resolve_dead_letter(&self, run_id: i64, key: i64) -> Result<u64, StoreError> {
        self.run(move |c| resolve_dead_letter(c, run_id, key)).await
    }

    #[doc(hidden)]
    /// Replaces the reason of the dead letter of `key` in `run_id`.
    pub async fn set_dead_letter_reason(
        &self,
        run_id: i64,
        key: i64,
        reason: &str,
    ) -> Result<(), StoreError> {
        let reason = reason.to_owned();
        self.run(move |c| set_dead_letter_reason(c, run_id, key, &reason))
            .await
    }

    #[doc(hidden)]
    /// The rows of `scope` with these keys that a run would read, decoded
    /// as a page is (see [`Store::fetch_page`]).
    pub async fn rows_by_key(
        &self,
        source: &crate::model::Source,
        scope: &crate::model::Scope,
        keys: Vec<i64>,
    ) -> Result<super::Page, StoreError> {
        let (source, scope) = (source.clone(), scope.clone());
        self.run(move |c| super::source::rows_by_key(c, &source, &scope, &keys))
            .await
    }

    /// The run's samples of rows done (one per run and about 5 s) since
    /// `since_ms`, oldest first, as `(at_ms, rows_done)`: the latest
    /// `limit` of them.
    pub async fn samples(
        &self,
        run_id: i64,
        since_ms: i64,
        limit: i64,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        self.run(move |c| samples(c, run_id, since_ms, limit)).await
    }

    /// The latest runs of every job, newest first.
    pub async fn recent_runs(&self, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        self.run(move |c| queries::recent_runs(c, limit)).await
    }

    /// A run by id, `None` when there is none.
    pub async fn find_run(&self, run_id: i64) -> Result<Option<RunRecord>, StoreError> {
        self.run(move |c| queries::find_run(c, run_id)).await
    }

    /// The first `limit` dead letters of a run, by key.
    pub async fn dead_letters_limited(
        &self,
        run_id: i64,
        limit: i64,
    ) -> Result<Vec<super::DeadLetter>, StoreError> {
        self.run(move |c| queries::dead_letters_limited(c, run_id, limit))
            .await
    }

    /// Appends to the audit trail.
    pub async fn write_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.run(move |c| write_audit(c, &entry)).await
    }

    /// The job's latest audit entries, newest first.
    pub async fn audit_log(&self, job: &str, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let job = job.to_owned();
        self.run(move |c| audit_log(c, &job, limit)).await
    }
}
