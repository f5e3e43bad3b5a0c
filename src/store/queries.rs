//! Queries over tranche's own tables, written once for both dialects.

use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel::QueryableByName;
use serde::Serialize;

use super::connection::{Bind, Connection, Sql};
use super::source;
use super::Scopes;
use super::StoreError;
use crate::model::{Cursor, KeyRange};
use crate::model::{Scope, Source, Strategy, Throttle};
use crate::plan;

/// Where a run stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunState {
    /// Created; identification has not finished (where every run starts).
    #[default]
    Planning,
    /// Partitions persisted; work under way.
    Running,
    /// Held by an operator: no page starts and no partition is claimed
    /// until it is resumed.
    Paused,
    /// Every partition completed.
    Done,
    /// Every partition ended and at least one failed.
    Failed,
    /// Ended by an operator; never resumed (the job's next run is a new
    /// one).
    Cancelled,
}

impl RunState {
    /// The state's name as stored and shown (`running`, `paused`...).
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Planning => "planning",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::Done => "done",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
        }
    }

    /// Whether the run has ended (done, failed or cancelled).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunState::Done | RunState::Failed | RunState::Cancelled
        )
    }

    pub(crate) fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "planning" => RunState::Planning,
            "running" => RunState::Running,
            "paused" => RunState::Paused,
            "done" => RunState::Done,
            "failed" => RunState::Failed,
            "cancelled" => RunState::Cancelled,
            other => {
                return Err(StoreError::Corrupt {
                    what: "run state",
                    reason: format!("unknown state {other:?}"),
                })
            }
        })
    }
}

/// Where a partition stands (see [`lease`](super::lease)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PartitionState {
    /// Waiting for an owner.
    Pending,
    /// Held by an owner under a lease.
    Claimed,
    /// Completed.
    Done,
    /// Gave up after its attempts or a fatal error.
    Failed,
}

impl PartitionState {
    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "pending" => PartitionState::Pending,
            "claimed" => PartitionState::Claimed,
            "done" => PartitionState::Done,
            "failed" => PartitionState::Failed,
            other => {
                return Err(StoreError::Corrupt {
                    what: "partition state",
                    reason: format!("unknown state {other:?}"),
                })
            }
        })
    }
}

/// A run as stored.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct RunRecord {
    /// Id.
    pub id: i64,
    /// Its job.
    pub job_name: String,
    /// Parameters recorded at creation (JSON).
    pub params: String,
    /// State.
    pub state: RunState,
    /// High-water marks fixed at planning, per scope (JSON).
    pub high_water_mark: Option<String>,
    /// Eligible rows found by identification.
    pub rows_identified: i64,
    /// Rows checkpointed, summed when the run closed.
    pub rows_done: i64,
    /// Partitions planned.
    pub partitions: i32,
    /// Created, epoch ms (database clock).
    pub started_ms: i64,
    /// Planned, epoch ms.
    pub planned_ms: Option<i64>,
    /// Closed, epoch ms.
    pub finished_ms: Option<i64>,
    /// The key instances joined it by, if it was started with one.
    pub run_key: Option<String>,
    /// Rows dead-lettered while planning, because their key or order value
    /// could not be read (counted in `rows_identified`).
    pub rows_dead_at_plan: i64,
    /// Why it failed, when it did.
    pub last_error: Option<String>,
    /// Its throttles, as every instance obeys them now.
    pub throttle: Throttle,
    /// Why an instance last found the database unhealthy (its health
    /// gate holds pages back), `None` while it is healthy.
    pub health: Option<String>,
}

#[derive(QueryableByName)]
pub(super) struct RunRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    job_name: String,
    #[diesel(sql_type = Text)]
    params: String,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Nullable<Text>)]
    high_water_mark: Option<String>,
    #[diesel(sql_type = BigInt)]
    rows_identified: i64,
    #[diesel(sql_type = BigInt)]
    rows_done: i64,
    #[diesel(sql_type = Integer)]
    partitions: i32,
    #[diesel(sql_type = BigInt)]
    started_ms: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    planned_ms: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    finished_ms: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    run_key: Option<String>,
    #[diesel(sql_type = BigInt)]
    rows_dead_at_plan: i64,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
    #[diesel(sql_type = Text)]
    throttle: String,
    #[diesel(sql_type = Nullable<Text>)]
    health: Option<String>,
}

pub(super) const RUN_COLUMNS: &str =
    "id, job_name, params, state, high_water_mark, rows_identified, \
     rows_done, partitions, started_ms, planned_ms, finished_ms, run_key, rows_dead_at_plan, \
     last_error, throttle, health";

impl TryFrom<RunRow> for RunRecord {
    type Error = StoreError;
    fn try_from(r: RunRow) -> Result<Self, StoreError> {
        Ok(RunRecord {
            id: r.id,
            job_name: r.job_name,
            params: r.params,
            state: RunState::parse(&r.state)?,
            high_water_mark: r.high_water_mark,
            rows_identified: r.rows_identified,
            rows_done: r.rows_done,
            partitions: r.partitions,
            started_ms: r.started_ms,
            planned_ms: r.planned_ms,
            finished_ms: r.finished_ms,
            run_key: r.run_key,
            rows_dead_at_plan: r.rows_dead_at_plan,
            last_error: r.last_error,
            throttle: serde_json::from_str(&r.throttle).map_err(|e| StoreError::Corrupt {
                what: "run throttle",
                reason: e.to_string(),
            })?,
            health: r.health,
        })
    }
}

/// A partition as stored: its slice of the work and its progress.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct PartitionRecord {
    /// Id.
    pub id: i64,
    /// Its run.
    pub run_id: i64,
    /// Number within the run, from 0.
    pub number: i32,
    /// The scope it belongs to.
    pub scope: Scope,
    /// Range bounds (range strategy).
    pub range: Option<KeyRange>,
    /// `(modulus, remainder)` (modulo strategy).
    pub modulo: Option<(i64, i64)>,
    /// The run's high-water mark for this scope: nothing after it is read.
    pub hwm: Cursor,
    /// Checkpoint: the last row confirmed, `None` before the first page.
    pub cursor: Option<Cursor>,
    /// Rows in it at planning time.
    pub rows_planned: i64,
    /// Rows confirmed and checkpointed.
    pub rows_done: i64,
    /// State.
    pub state: PartitionState,
    /// Holder while claimed.
    pub owner: Option<String>,
    /// Incremented by every claim; fences writes of earlier holders.
    pub epoch: i64,
    /// Lease expiry, epoch ms (database clock).
    pub lease_expires_ms: Option<i64>,
    /// Failed attempts.
    pub attempts: i32,
    /// Claims that took it from a holder whose lease had expired.
    pub takeovers: i32,
    /// Whether the latest claim was such a takeover.
    pub taken_over: bool,
    /// Last error recorded.
    pub last_error: Option<String>,
    /// When the latest claim happened, epoch ms (database clock).
    pub claimed_ms: Option<i64>,
    /// The partition whose remaining range this one was split from (work
    /// stealing), if any.
    pub split_from: Option<i64>,
}

#[derive(QueryableByName)]
struct PartitionRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    run_id: i64,
    #[diesel(sql_type = Integer)]
    number: i32,
    #[diesel(sql_type = Text)]
    scope: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    lower_order: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    lower_key: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    upper_order: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    upper_key: Option<i64>,
    #[diesel(sql_type = BigInt)]
    hwm_order: i64,
    #[diesel(sql_type = BigInt)]
    hwm_key: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    modulus: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    remainder: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    cursor_order: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    cursor_key: Option<i64>,
    #[diesel(sql_type = BigInt)]
    rows_planned: i64,
    #[diesel(sql_type = BigInt)]
    rows_done: i64,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Nullable<Text>)]
    owner: Option<String>,
    #[diesel(sql_type = BigInt)]
    epoch: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    lease_expires_ms: Option<i64>,
    #[diesel(sql_type = Integer)]
    attempts: i32,
    #[diesel(sql_type = Integer)]
    takeovers: i32,
    #[diesel(sql_type = Integer)]
    last_claim_takeover: i32,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    claimed_ms: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    split_from: Option<i64>,
}

const PARTITION_COLUMNS: &str = "id, run_id, number, scope, lower_order, lower_key, \
     upper_order, upper_key, hwm_order, hwm_key, modulus, remainder, cursor_order, cursor_key, \
     rows_planned, rows_done, state, owner, epoch, lease_expires_ms, attempts, takeovers, \
     last_claim_takeover, last_error, claimed_ms, split_from";

fn cursor_of(order: Option<i64>, key: Option<i64>) -> Option<Cursor> {
    Some(Cursor::new(order?, key?))
}

impl TryFrom<PartitionRow> for PartitionRecord {
    type Error = StoreError;
    fn try_from(r: PartitionRow) -> Result<Self, StoreError> {
        let scope = serde_json::from_str(&r.scope).map_err(|e| StoreError::Corrupt {
            what: "partition scope",
            reason: e.to_string(),
        })?;
        let modulo = r.modulus.zip(r.remainder);
        Ok(PartitionRecord {
            id: r.id,
            run_id: r.run_id,
            number: r.number,
            scope,
            range: modulo.is_none().then(|| KeyRange {
                lower: cursor_of(r.lower_order, r.lower_key),
                upper: cursor_of(r.upper_order, r.upper_key),
            }),
            modulo,
            hwm: Cursor::new(r.hwm_order, r.hwm_key),
            cursor: cursor_of(r.cursor_order, r.cursor_key),
            rows_planned: r.rows_planned,
            rows_done: r.rows_done,
            state: PartitionState::parse(&r.state)?,
            owner: r.owner,
            epoch: r.epoch,
            lease_expires_ms: r.lease_expires_ms,
            attempts: r.attempts,
            takeovers: r.takeovers,
            taken_over: r.last_claim_takeover != 0,
            last_error: r.last_error,
            claimed_ms: r.claimed_ms,
            split_from: r.split_from,
        })
    }
}

/// A row that was not delivered, kept with its reason: the processor
/// rejected it, one of its values could not be read, or (found while
/// planning) its key or order value could not be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Run.
    pub run_id: i64,
    /// Partition it was read in; `None` when planning found it.
    pub partition_id: Option<i64>,
    /// Key of the row; `None` when the key itself could not be read (the
    /// reason then describes the row).
    pub row_key: Option<i64>,
    /// Why it was rejected.
    pub reason: String,
}

impl DeadLetter {
    /// A dead letter of `run_id` for the row `row_key` read in
    /// `partition_id`, rejected for `reason`.
    pub fn new(
        run_id: i64,
        partition_id: Option<i64>,
        row_key: Option<i64>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            run_id,
            partition_id,
            row_key,
            reason: reason.into(),
        }
    }
}

#[derive(QueryableByName)]
struct DeadLetterRow {
    #[diesel(sql_type = BigInt)]
    run_id: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    partition_id: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    row_key: Option<i64>,
    #[diesel(sql_type = Text)]
    reason: String,
}

/// What planning did.
#[derive(Clone, Debug)]
pub struct PlanOutcome {
    /// The run, now running (or already closed when nothing was eligible).
    pub run: RunRecord,
    /// Its partitions.
    pub partitions: Vec<PartitionRecord>,
    /// True when the run had been planned before and its plan was reused.
    pub reused: bool,
}

#[derive(QueryableByName)]
pub(super) struct One {
    #[diesel(sql_type = BigInt)]
    pub(super) v: i64,
}

#[derive(QueryableByName)]
struct Held {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    epoch: i64,
}

pub(crate) fn now_ms(c: &mut Connection) -> Result<i64, StoreError> {
    let now = c.dialect().now_ms();
    let rows: Vec<One> = c.load(&Sql::new(format!("SELECT {now} AS v")))?;
    Ok(rows.first().map_or(0, |r| r.v))
}

/// Runs an `INSERT` of one row and returns the id it was given, or `None`
/// when it wrote nothing (a conflict it skips): `RETURNING id`, or on
/// MySQL, which has no `RETURNING`, the session's `LAST_INSERT_ID()`.
pub(super) fn insert_returning_id(
    c: &mut Connection,
    mut insert: Sql,
) -> Result<Option<i64>, StoreError> {
    if c.dialect() == super::Dialect::Mysql {
        if c.execute(&insert)? == 0 {
            return Ok(None);
        }
        let id: Vec<One> = c.load(&Sql::new("SELECT CAST(LAST_INSERT_ID() AS SIGNED) AS v"))?;
        return Ok(id.first().map(|r| r.v));
    }
    insert.push(" RETURNING id AS v", []);
    let rows: Vec<One> = c.load(&insert)?;
    Ok(rows.first().map(|r| r.v))
}

fn ensure_job(c: &mut Connection, job: &str) -> Result<(), StoreError> {
    let now = c.dialect().now_ms();
    let (insert, skip) = c.dialect().insert_skipping("name");
    c.execute(
        &Sql::new(format!(
            "{insert} tranche_jobs (name, created_ms) VALUES (?, {now}){skip}"
        ))
        .bind(Bind::Text(job.into())),
    )?;
    Ok(())
}

pub(crate) fn acquire_job_lease(
    c: &mut Connection,
    job: &str,
    owner: &str,
    lease_ms: i64,
) -> Result<bool, StoreError> {
    ensure_job(c, job)?;
    let now = c.dialect().now_ms();
    let n = c.execute(
        &Sql::new(format!(
            "UPDATE tranche_jobs SET lease_owner = ?, lease_expires_ms = {now} + ? \
             WHERE name = ? AND (lease_owner IS NULL OR lease_owner = ? OR lease_expires_ms < {now})"
        ))
        .bind(Bind::Text(owner.into()))
        .bind(Bind::Int(lease_ms))
        .bind(Bind::Text(job.into()))
        .bind(Bind::Text(owner.into())),
    )?;
    Ok(n == 1)
}

/// Extends the job lease only while `owner` still holds it: a renewal that
/// arrives after the release changes nothing.
pub(crate) fn renew_job_lease(
    c: &mut Connection,
    job: &str,
    owner: &str,
    lease_ms: i64,
) -> Result<bool, StoreError> {
    let now = c.dialect().now_ms();
    let n = c.execute(
        &Sql::new(format!(
            "UPDATE tranche_jobs SET lease_expires_ms = {now} + ? WHERE name = ? AND lease_owner = ?"
        ))
        .bind(Bind::Int(lease_ms))
        .bind(Bind::Text(job.into()))
        .bind(Bind::Text(owner.into())),
    )?;
    Ok(n == 1)
}

pub(crate) fn release_job_lease(
    c: &mut Connection,
    job: &str,
    owner: &str,
) -> Result<(), StoreError> {
    c.execute(
        &Sql::new(
            "UPDATE tranche_jobs SET lease_owner = NULL, lease_expires_ms = NULL \
             WHERE name = ? AND lease_owner = ?",
        )
        .bind(Bind::Text(job.into()))
        .bind(Bind::Text(owner.into())),
    )?;
    Ok(())
}

/// The job's active run (planning, running or paused), if any, read on `c`.
pub fn active_run(c: &mut Connection, job: &str) -> Result<Option<RunRecord>, StoreError> {
    let rows: Vec<RunRow> = c.load(
        &Sql::new(format!(
            "SELECT {RUN_COLUMNS} FROM tranche_runs \
             WHERE job_name = ? AND state IN ('planning', 'running', 'paused') \
             ORDER BY id DESC LIMIT 1"
        ))
        .bind(Bind::Text(job.into())),
    )?;
    rows.into_iter().next().map(RunRecord::try_from).transpose()
}

pub(crate) fn run_record(c: &mut Connection, run_id: i64) -> Result<RunRecord, StoreError> {
    find_run(c, run_id)?.ok_or_else(|| StoreError::Corrupt {
        what: "run",
        reason: format!("run {run_id} does not exist"),
    })
}

pub(crate) fn runs(
    c: &mut Connection,
    job: &str,
    limit: i64,
) -> Result<Vec<RunRecord>, StoreError> {
    let rows: Vec<RunRow> = c.load(
        &Sql::new(format!(
            "SELECT {RUN_COLUMNS} FROM tranche_runs WHERE job_name = ? ORDER BY id DESC LIMIT ?"
        ))
        .bind(Bind::Text(job.into()))
        .bind(Bind::Int(limit)),
    )?;
    rows.into_iter().map(RunRecord::try_from).collect()
}

/// The latest runs of every job, newest first.
pub(crate) fn recent_runs(c: &mut Connection, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
    let rows: Vec<RunRow> = c.load(
        &Sql::new(format!(
            "SELECT {RUN_COLUMNS} FROM tranche_runs ORDER BY id DESC LIMIT ?"
        ))
        .bind(Bind::Int(limit)),
    )?;
    rows.into_iter().map(RunRecord::try_from).collect()
}

/// A run by id, if it exists.
pub(crate) fn find_run(c: &mut Connection, run_id: i64) -> Result<Option<RunRecord>, StoreError> {
    let rows: Vec<RunRow> = c.load(
        &Sql::new(format!(
            "SELECT {RUN_COLUMNS} FROM tranche_runs WHERE id = ?"
        ))
        .bind(Bind::Int(run_id)),
    )?;
    rows.into_iter().next().map(RunRecord::try_from).transpose()
}

pub(crate) fn run_by_key(
    c: &mut Connection,
    job: &str,
    key: &str,
) -> Result<Option<RunRecord>, StoreError> {
    let rows: Vec<RunRow> = c.load(
        &Sql::new(format!(
            "SELECT {RUN_COLUMNS} FROM tranche_runs WHERE job_name = ? AND run_key = ?"
        ))
        .bind(Bind::Text(job.into()))
        .bind(Bind::Text(key.into())),
    )?;
    rows.into_iter().next().map(RunRecord::try_from).transpose()
}

/// The run an instance starting `job` belongs to: with a key, the run of
/// that key in whatever state (created if new, refused while another run
/// of the job is active); without one, the active run or a new one.
pub(crate) fn open_run(
    c: &mut Connection,
    job: &str,
    params: &str,
    key: Option<&str>,
    throttle: &Throttle,
) -> Result<RunRecord, StoreError> {
    let throttle_json = serde_json::to_string(throttle).map_err(|e| StoreError::Corrupt {
        what: "run throttle",
        reason: e.to_string(),
    })?;
    ensure_job(c, job)?;
    c.write_transaction(|c| {
        if let Some(key) = key {
            if let Some(run) = run_by_key(c, job, key)? {
                // A run that failed while planning has no partitions and
                // did nothing: once the job is fixed, its key plans anew.
                let replan = run.state == RunState::Failed && run.planned_ms.is_none();
                if !replan || active_run(c, job)?.is_some() {
                    return Ok(run);
                }
                c.execute(
                    &Sql::new(
                        "UPDATE tranche_runs SET state = 'planning', last_error = NULL, \
                         finished_ms = NULL WHERE id = ?",
                    )
                    .bind(Bind::Int(run.id)),
                )?;
                return run_record(c, run.id);
            }
        }
        if let Some(run) = active_run(c, job)? {
            return match key {
                None => Ok(run),
                Some(key) => Err(StoreError::RunActive {
                    job: job.to_owned(),
                    run_id: run.id,
                    key: key.to_owned(),
                }),
            };
        }
        let now = c.dialect().now_ms();
        // Identification runs under the job lease, so racing inserts are
        // not expected; if one happens anyway, the key's run is joined.
        let (insert, skip) = c.dialect().insert_skipping("job_name, run_key");
        let id = insert_returning_id(
            c,
            Sql::new(format!(
                "{insert} tranche_runs (job_name, params, state, started_ms, run_key, \
                   throttle, max_active_partitions) \
                 VALUES (?, ?, 'planning', {now}, ?, ?, ?){skip}"
            ))
            .bind(Bind::Text(job.into()))
            .bind(Bind::Text(params.into()))
            .bind(Bind::OptText(key.map(str::to_owned)))
            .bind(Bind::Text(throttle_json))
            .bind(Bind::OptInt(throttle.max_active_partitions.map(i64::from))),
        )?;
        match (id, key) {
            (Some(id), _) => run_record(c, id),
            (None, Some(key)) => run_by_key(c, job, key)?.ok_or_else(|| StoreError::Corrupt {
                what: "run",
                reason: format!("run key {key:?} conflicted but no run has it"),
            }),
            (None, None) => Err(StoreError::Corrupt {
                what: "run",
                reason: "insert returned no id".into(),
            }),
        }
    })
}

/// Ends a run whose planning failed for good: failed, with the error
/// recorded, so that it is not left planning and the next run of the job
/// starts afresh. Nothing happens to a run already past planning.
pub(crate) fn fail_planning(
    c: &mut Connection,
    run_id: i64,
    error: &str,
) -> Result<RunRecord, StoreError> {
    let now = c.dialect().now_ms();
    c.execute(
        &Sql::new(format!(
            "UPDATE tranche_runs SET state = 'failed', last_error = ?, finished_ms = {now} \
             WHERE id = ? AND state = 'planning'"
        ))
        // Stored errors are shown by `history` and reports: masked again.
        .bind(Bind::Text(crate::model::redact::redact_text(error)))
        .bind(Bind::Int(run_id)),
    )?;
    run_record(c, run_id)
}

pub(crate) fn partition(c: &mut Connection, id: i64) -> Result<PartitionRecord, StoreError> {
    let rows: Vec<PartitionRow> = c.load(
        &Sql::new(format!(
            "SELECT {PARTITION_COLUMNS} FROM tranche_partitions WHERE id = ?"
        ))
        .bind(Bind::Int(id)),
    )?;
    rows.into_iter()
        .next()
        .ok_or_else(|| StoreError::Corrupt {
            what: "partition",
            reason: format!("partition {id} does not exist"),
        })
        .and_then(PartitionRecord::try_from)
}

pub(crate) fn partitions(
    c: &mut Connection,
    run_id: i64,
) -> Result<Vec<PartitionRecord>, StoreError> {
    let rows: Vec<PartitionRow> = c.load(
        &Sql::new(format!(
            "SELECT {PARTITION_COLUMNS} FROM tranche_partitions WHERE run_id = ? ORDER BY number"
        ))
        .bind(Bind::Int(run_id)),
    )?;
    rows.into_iter().map(PartitionRecord::try_from).collect()
}

/// A partition about to be inserted.
struct NewPartition {
    scope: String,
    range: Option<KeyRange>,
    modulo: Option<(i64, i64)>,
    hwm: Cursor,
    rows_planned: u64,
}

fn resolve_scopes(c: &mut Connection, scopes: &Scopes) -> Result<Vec<Scope>, StoreError> {
    Ok(match scopes {
        Scopes::Whole => vec![Scope::whole()],
        Scopes::Fixed(s) => s.clone(),
        Scopes::Identify(f) => f(c)?,
    })
}

/// Row counts and high-water marks per scope, the partitions `strategy`
/// cuts them into, and the marks as the run row stores them. Reads only.
#[allow(clippy::type_complexity)]
fn cut(
    c: &mut Connection,
    source: &Source,
    scopes: &[Scope],
    strategy: Strategy,
) -> Result<
    (
        Vec<(u64, Option<Cursor>)>,
        Vec<NewPartition>,
        Vec<serde_json::Value>,
    ),
    StoreError,
> {
    let mut stats = Vec::with_capacity(scopes.len());
    for scope in scopes {
        stats.push(source::scope_stats(c, source, scope)?);
    }
    let mut new = Vec::new();
    let mut hwm_json = Vec::new();
    match strategy {
        Strategy::Range { partitions } => {
            let counts: Vec<u64> = stats.iter().map(|s| s.0).collect();
            let alloc = plan::allocate(&counts, partitions);
            for ((scope, &(count, hwm)), n) in scopes.iter().zip(&stats).zip(alloc) {
                let Some(hwm) = hwm.filter(|_| n > 0) else {
                    continue;
                };
                let positions = plan::cut_positions(count, n);
                let cuts = source::rows_at(c, source, scope, hwm, &positions)?;
                let scope_json = scope_json(scope)?;
                hwm_json.push(serde_json::json!({"scope": scope.label, "hwm": hwm, "rows": count}));
                for p in plan::range_partitions(count, &positions, &cuts) {
                    new.push(NewPartition {
                        scope: scope_json.clone(),
                        range: Some(p.range),
                        modulo: None,
                        hwm,
                        rows_planned: p.rows_planned,
                    });
                }
            }
        }
        Strategy::Modulo { modulus } => {
            for (scope, &(count, hwm)) in scopes.iter().zip(&stats) {
                let Some(hwm) = hwm else { continue };
                let per = source::modulo_counts(c, source, scope, hwm, modulus)?;
                let scope_json = scope_json(scope)?;
                hwm_json.push(serde_json::json!({"scope": scope.label, "hwm": hwm, "rows": count}));
                for (k, rows) in per.into_iter().enumerate() {
                    new.push(NewPartition {
                        scope: scope_json.clone(),
                        range: None,
                        modulo: Some((i64::from(modulus), k as i64)),
                        hwm,
                        rows_planned: rows,
                    });
                }
            }
        }
    }
    Ok((stats, new, hwm_json))
}

/// What a run of `source` would be planned into now, without writing
/// anything: see [`super::Store::dry_plan`].
pub(crate) fn dry_plan(
    c: &mut Connection,
    source: &Source,
    scopes: &Scopes,
    strategy: Strategy,
    sample_rows: usize,
) -> Result<DryPlan, StoreError> {
    let scopes = resolve_scopes(c, scopes)?;
    let mut rows_unreadable = 0u64;
    for scope in &scopes {
        rows_unreadable += source::unreadable_rows(c, source, scope, 0)?.0;
    }
    let (stats, new, hwm_json) = cut(c, source, &scopes, strategy)?;
    let by_json: std::collections::HashMap<String, &Scope> = scopes
        .iter()
        .map(|s| Ok((scope_json(s)?, s)))
        .collect::<Result<_, StoreError>>()?;
    let partitions: Vec<PartitionRecord> = new
        .iter()
        .enumerate()
        .map(|(number, p)| PartitionRecord {
            id: 0,
            run_id: 0,
            number: number as i32,
            scope: by_json
                .get(&p.scope)
                .map_or_else(Scope::whole, |s| (*s).clone()),
            range: p.range,
            modulo: p.modulo,
            hwm: p.hwm,
            cursor: None,
            rows_planned: p.rows_planned as i64,
            rows_done: 0,
            state: PartitionState::Pending,
            owner: None,
            epoch: 0,
            lease_expires_ms: None,
            attempts: 0,
            takeovers: 0,
            taken_over: false,
            last_error: None,
            claimed_ms: None,
            split_from: None,
        })
        .collect();
    // A short read of the largest partition's first pages, as a run would
    // page it.
    let sample = match partitions.iter().max_by_key(|p| p.rows_planned) {
        Some(largest) if sample_rows > 0 && largest.rows_planned > 0 => {
            let started = std::time::Instant::now();
            let page = source::fetch_page(c, source, largest, None, sample_rows)?;
            Some(PlanSample {
                rows: (page.rows.len() + page.unreadable.len()) as u64,
                elapsed: started.elapsed(),
            })
        }
        _ => None,
    };
    let rows: u64 = stats.iter().map(|s| s.0).sum();
    let largest = partitions.iter().map(|p| p.rows_planned).max().unwrap_or(0);
    let mean = if partitions.is_empty() {
        0.0
    } else {
        rows as f64 / partitions.len() as f64
    };
    Ok(DryPlan {
        strategy: strategy.name(),
        rows_identified: rows + rows_unreadable,
        rows_unreadable,
        skew: if mean > 0.0 {
            largest as f64 / mean
        } else {
            0.0
        },
        high_water_marks: serde_json::Value::Array(hwm_json),
        partitions,
        sample,
    })
}

/// The plan a run would get now (see [`super::Store::dry_plan`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DryPlan {
    /// `range` or `modulo`.
    pub strategy: &'static str,
    /// Rows a run would identify (those whose key or order value cannot be
    /// read included: planning would dead-letter them).
    pub rows_identified: u64,
    /// Of those, the rows whose key or order value cannot be read.
    pub rows_unreadable: u64,
    /// The partitions, numbered from 0, pending, with no id.
    pub partitions: Vec<PartitionRecord>,
    /// The largest partition's rows over the mean (1.0 is even).
    pub skew: f64,
    /// Per scope, its high-water mark and its rows, as the run would store
    /// them.
    pub high_water_marks: serde_json::Value,
    /// A timed read of the largest partition's first page.
    pub sample: Option<PlanSample>,
}

impl DryPlan {
    /// How long reading every row would take from a sampled read alone
    /// (no sink, no checkpoints), with `workers` partitions read at once;
    /// `None` without a sample.
    pub fn estimated_read(&self, workers: usize) -> Option<std::time::Duration> {
        let sample = self.sample.as_ref().filter(|s| s.rows > 0)?;
        let per_row = sample.elapsed.as_secs_f64() / sample.rows as f64;
        let parallel = workers.clamp(1, self.partitions.len().max(1)) as f64;
        let largest = self
            .partitions
            .iter()
            .map(|p| p.rows_planned)
            .max()
            .unwrap_or(0) as f64;
        // Partitions read side by side; the run lasts at least as long as
        // its largest partition.
        let seconds = (self.rows_identified as f64 * per_row / parallel).max(largest * per_row);
        Some(std::time::Duration::from_secs_f64(seconds))
    }
}

/// A timed read of one page, for [`DryPlan::estimated_read`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct PlanSample {
    /// Rows read.
    pub rows: u64,
    /// How long the read took.
    pub elapsed: std::time::Duration,
}

pub(crate) fn plan_run(
    c: &mut Connection,
    run_id: i64,
    source: &Source,
    scopes: &Scopes,
    strategy: Strategy,
    skip_limit: u64,
) -> Result<PlanOutcome, StoreError> {
    c.write_transaction(|c| {
        // Planners of one run take turns on its row (SQLite's write lock
        // already serialises them), so a second planner, say one whose job
        // lease expired during a long identification, finds the plan made
        // and reuses it instead of planning again.
        if c.dialect() != super::Dialect::Sqlite {
            c.load::<One>(
                &Sql::new("SELECT id AS v FROM tranche_runs WHERE id = ? FOR UPDATE")
                    .bind(Bind::Int(run_id)),
            )?;
        }
        let run = run_record(c, run_id)?;
        if run.state != RunState::Planning {
            let parts = partitions(c, run_id)?;
            return Ok(PlanOutcome {
                run,
                partitions: parts,
                reused: true,
            });
        }
        let scopes = resolve_scopes(c, scopes)?;
        let dead_at_plan = dead_letter_unreadable(c, run_id, source, &scopes, skip_limit)?;
        let (stats, new, hwm_json) = cut(c, source, &scopes, strategy)?;
        insert_partitions(c, run_id, strategy.name(), &new)?;
        let identified: u64 = stats.iter().map(|s| s.0).sum::<u64>() + dead_at_plan;
        let now = c.dialect().now_ms();
        c.execute(
            &Sql::new(format!(
                "UPDATE tranche_runs SET state = 'running', high_water_mark = ?, \
                 rows_identified = ?, rows_dead_at_plan = ?, partitions = ?, planned_ms = {now} \
                 WHERE id = ? AND state = 'planning'"
            ))
            .bind(Bind::Text(serde_json::Value::Array(hwm_json).to_string()))
            .bind(Bind::Int(identified as i64))
            .bind(Bind::Int(dead_at_plan as i64))
            .bind(Bind::Int(new.len() as i64))
            .bind(Bind::Int(run_id)),
        )?;
        Ok(PlanOutcome {
            run: run_record(c, run_id)?,
            partitions: partitions(c, run_id)?,
            reused: false,
        })
    })
}

/// Dead-letters the rows of a run's scopes whose key or order value cannot
/// be read (they have no place in the keyset, so no partition would ever
/// read them), refusing the plan when they are more than `skip_limit`.
/// Returns how many there were.
fn dead_letter_unreadable(
    c: &mut Connection,
    run_id: i64,
    source: &Source,
    scopes: &[Scope],
    skip_limit: u64,
) -> Result<u64, StoreError> {
    let mut total = 0u64;
    let mut found = Vec::new();
    for scope in scopes {
        let (n, rows) = source::unreadable_rows(c, source, scope, skip_limit + 1)?;
        total += n;
        found.extend(rows);
        if total > skip_limit {
            let first = found.first().map_or_else(String::new, |r| r.reason.clone());
            return Err(StoreError::UnreadableRows {
                field: if found.first().is_some_and(|r| r.key.is_none()) {
                    "source.key_column"
                } else {
                    "source.order_column"
                },
                table: source.table.to_string(),
                count: total,
                limit: skip_limit,
                first,
            });
        }
    }
    let now = c.dialect().now_ms();
    for row in &found {
        tracing::warn!(row = ?row.key, reason = %row.reason, "unreadable row sent to dead letters while planning");
        let (insert, skip) = c.dialect().insert_skipping("run_id, row_key");
        c.execute(
            &Sql::new(format!(
                "{insert} tranche_dead_letters (run_id, partition_id, row_key, reason, created_ms) \
                 VALUES (?, NULL, ?, ?, {now}){skip}"
            ))
            .bind(Bind::Int(run_id))
            .bind(Bind::OptInt(row.key))
            .bind(Bind::Text(row.reason.clone())),
        )?;
    }
    Ok(total)
}

fn scope_json(scope: &Scope) -> Result<String, StoreError> {
    serde_json::to_string(scope).map_err(|e| StoreError::Corrupt {
        what: "scope",
        reason: e.to_string(),
    })
}

fn insert_partitions(
    c: &mut Connection,
    run_id: i64,
    strategy: &str,
    new: &[NewPartition],
) -> Result<(), StoreError> {
    let now = c.dialect().now_ms();
    for (number, p) in new.iter().enumerate() {
        let lower = p.range.and_then(|r| r.lower);
        let upper = p.range.and_then(|r| r.upper);
        c.execute(
            &Sql::new(format!(
                "INSERT INTO tranche_partitions (run_id, number, strategy, scope, lower_order, \
                 lower_key, upper_order, upper_key, hwm_order, hwm_key, modulus, remainder, \
                 rows_planned, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {now})"
            ))
            .bind(Bind::Int(run_id))
            .bind(Bind::Int(number as i64))
            .bind(Bind::Text(strategy.into()))
            .bind(Bind::Text(p.scope.clone()))
            .bind(Bind::OptInt(lower.map(|c| c.order)))
            .bind(Bind::OptInt(lower.map(|c| c.key)))
            .bind(Bind::OptInt(upper.map(|c| c.order)))
            .bind(Bind::OptInt(upper.map(|c| c.key)))
            .bind(Bind::Int(p.hwm.order))
            .bind(Bind::Int(p.hwm.key))
            .bind(Bind::OptInt(p.modulo.map(|m| m.0)))
            .bind(Bind::OptInt(p.modulo.map(|m| m.1)))
            .bind(Bind::Int(p.rows_planned as i64)),
        )?;
    }
    Ok(())
}

pub(crate) fn claim(
    c: &mut Connection,
    run_id: i64,
    owner: &str,
    lease_ms: i64,
) -> Result<Option<PartitionRecord>, StoreError> {
    let dialect = c.dialect();
    let now = dialect.now_ms();
    let lock = dialect.skip_locked();
    let claimable = format!(
        "SELECT id FROM tranche_partitions WHERE run_id = ? \
           AND (state = 'pending' OR (state = 'claimed' AND lease_expires_ms < {now})) \
           ORDER BY number LIMIT 1 {lock}"
    );
    // The takeover counts read the state before it is set: MySQL
    // evaluates assignments left to right, each seeing those before it.
    let set = format!(
        "UPDATE tranche_partitions SET \
         takeovers = takeovers + CASE WHEN state = 'claimed' THEN 1 ELSE 0 END, \
         last_claim_takeover = CASE WHEN state = 'claimed' THEN 1 ELSE 0 END, \
         state = 'claimed', owner = ?, epoch = epoch + 1, \
         lease_expires_ms = {now} + ?, updated_ms = {now}, claimed_ms = {now}"
    );
    // Claims of one run take turns on the run's row (SQLite: the write
    // lock, taken before the subquery reads, so two claimers never pick the
    // same row from one snapshot): the run's state and its cap on active
    // partitions are read by one claimer at a time.
    let rows: Vec<PartitionRow> = c.write_transaction(|c| {
        if !super::gate::may_claim(c, run_id)? {
            return Ok::<_, StoreError>(Vec::new());
        }
        if dialect == super::Dialect::Mysql {
            // MySQL neither returns updated rows nor updates a table that
            // its own subquery reads: the row is picked (and locked),
            // updated, then read.
            let picked: Vec<One> = c.load(
                &Sql::new(claimable.replacen("SELECT id", "SELECT id AS v", 1))
                    .bind(Bind::Int(run_id)),
            )?;
            let Some(id) = picked.first().map(|r| r.v) else {
                return Ok(Vec::new());
            };
            c.execute(
                &Sql::new(format!("{set} WHERE id = ?"))
                    .bind(Bind::Text(owner.into()))
                    .bind(Bind::Int(lease_ms))
                    .bind(Bind::Int(id)),
            )?;
            return c.load(
                &Sql::new(format!(
                    "SELECT {PARTITION_COLUMNS} FROM tranche_partitions WHERE id = ?"
                ))
                .bind(Bind::Int(id)),
            );
        }
        c.load(
            &Sql::new(format!(
                "{set} WHERE id = ({claimable}) RETURNING {PARTITION_COLUMNS}"
            ))
            .bind(Bind::Text(owner.into()))
            .bind(Bind::Int(lease_ms))
            .bind(Bind::Int(run_id)),
        )
    })?;
    rows.into_iter()
        .next()
        .map(PartitionRecord::try_from)
        .transpose()
}

/// A fenced checkpoint: who writes it, where the cursor moves, and what is
/// recorded with it.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// Partition.
    pub partition_id: i64,
    /// Holder writing it.
    pub owner: String,
    /// The holder's epoch; the write matches nothing once it is stale.
    pub epoch: i64,
    /// The last row of the confirmed page.
    pub cursor: Cursor,
    /// Rows on that page.
    pub rows: u64,
    /// Whether this was the partition's last page.
    pub done: bool,
    /// Rows of the page rejected as poison.
    pub dead_letters: Vec<DeadLetter>,
    /// The lease, renewed from the database clock.
    pub lease: std::time::Duration,
}

/// What a checkpoint answers: the partition's bounds as they stand now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointAck {
    /// The upper bound (exclusive); a split may have moved it down.
    pub upper: Option<Cursor>,
    /// Rows planned for the partition; a split reduces it.
    pub rows_planned: i64,
}

#[derive(QueryableByName)]
struct AckRow {
    #[diesel(sql_type = Nullable<BigInt>)]
    upper_order: Option<i64>,
    #[diesel(sql_type = Nullable<BigInt>)]
    upper_key: Option<i64>,
    #[diesel(sql_type = BigInt)]
    rows_planned: i64,
}

pub(crate) fn checkpoint(c: &mut Connection, cp: &Checkpoint) -> Result<CheckpointAck, StoreError> {
    let Checkpoint {
        partition_id,
        ref owner,
        epoch,
        cursor,
        rows,
        done,
        ref dead_letters,
        lease,
    } = *cp;
    let lease_ms = super::duration_ms(lease);
    let now = c.dialect().now_ms();
    let mysql = c.dialect() == super::Dialect::Mysql;
    let returning = if mysql {
        ""
    } else {
        " RETURNING upper_order, upper_key, rows_planned"
    };
    // The fence is the WHERE clause: zero rows matched means the lease is
    // lost. (MySQL reports rows matched, not rows changed: diesel opens
    // its connections with CLIENT_FOUND_ROWS.)
    let update = Sql::new(format!(
        "UPDATE tranche_partitions SET cursor_order = ?, cursor_key = ?, rows_done = rows_done + ?, \
         state = ?, lease_expires_ms = {now} + ?, updated_ms = {now} \
         WHERE id = ? AND owner = ? AND epoch = ? AND state = 'claimed'{returning}"
    ))
    .bind(Bind::Int(cursor.order))
    .bind(Bind::Int(cursor.key))
    .bind(Bind::Int(rows as i64))
    .bind(Bind::Text(if done { "done" } else { "claimed" }.into()))
    .bind(Bind::Int(lease_ms))
    .bind(Bind::Int(partition_id))
    .bind(Bind::Text(owner.clone()))
    .bind(Bind::Int(epoch))
    .prepared();
    let ack = |rows: Vec<AckRow>| {
        rows.into_iter()
            .next()
            .map(|r| CheckpointAck {
                upper: cursor_of(r.upper_order, r.upper_key),
                rows_planned: r.rows_planned,
            })
            .ok_or(StoreError::LeaseLost {
                partition_id,
                epoch,
            })
    };
    // MySQL has no RETURNING: the bounds are read back after the update,
    // which commits by itself, so no lock outlives its statement. Read a
    // moment later they are as new or newer (a split since only moves the
    // bound down, which the holder would learn at its next checkpoint).
    let read_back = |c: &mut Connection| {
        ack(c.load(
            &Sql::new(
                "SELECT upper_order, upper_key, rows_planned FROM tranche_partitions WHERE id = ?",
            )
            .bind(Bind::Int(partition_id))
            .prepared(),
        )?)
    };
    // The fenced update: the new bounds (PostgreSQL, SQLite), or `None`
    // on MySQL, to be read back once the update has committed.
    let fenced = |c: &mut Connection| {
        if !mysql {
            return ack(c.load(&update)?).map(Some);
        }
        if c.execute(&update)? == 0 {
            return ack(Vec::new()).map(Some);
        }
        Ok(None)
    };
    let acked = if dead_letters.is_empty() {
        fenced(c)?
    } else {
        // One transaction: the page's dead letters and its checkpoint are
        // written together or not at all. The fenced update comes last, so
        // the partition's row is locked only until the commit.
        let (insert, skip) = c.dialect().insert_skipping("run_id, row_key");
        c.write_transaction(|c| {
            for d in dead_letters {
                c.execute(
                    &Sql::new(format!(
                        "{insert} tranche_dead_letters (run_id, partition_id, row_key, reason, created_ms) \
                         VALUES (?, ?, ?, ?, {now}){skip}"
                    ))
                    .bind(Bind::Int(d.run_id))
                    .bind(Bind::OptInt(d.partition_id))
                    .bind(Bind::OptInt(d.row_key))
                    .bind(Bind::Text(d.reason.clone()))
                    .prepared(),
                )?;
            }
            fenced(c)
        })?
    };
    match acked {
        Some(ack) => Ok(ack),
        None => read_back(c),
    }
}

/// When a split is worth making (see [`Store::steal`](super::Store::steal)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Steal {
    /// Rows past the holder's checkpoint that stay with the holder at least:
    /// more than it can have read ahead (two pages: the one being published
    /// and the one its prefetcher read).
    pub margin: u64,
    /// The smallest remaining range (planned minus done) worth splitting.
    pub min_rows: u64,
}

impl Steal {
    /// The thresholds for a page size: the holder keeps at least two pages
    /// past its checkpoint, and ranges under four pages are left alone.
    pub fn for_page_size(page_size: usize) -> Self {
        let page = page_size as u64;
        Self {
            margin: 2 * page,
            min_rows: 4 * page,
        }
    }
}

pub(crate) fn steal(
    c: &mut Connection,
    source: &Source,
    run_id: i64,
    owner: &str,
    lease_ms: i64,
    steal: Steal,
) -> Result<Option<PartitionRecord>, StoreError> {
    let dialect = c.dialect();
    let now = dialect.now_ms();
    let lock = dialect.skip_locked();
    let candidates = format!(
        "FROM tranche_partitions WHERE run_id = ? \
         AND state = 'claimed' AND lease_expires_ms >= {now} AND modulus IS NULL \
         AND rows_planned - rows_done >= ?"
    );
    // Idle instances look every poll interval: a plain read first, so that
    // most looks take no write lock (SQLite) and no row locks (PostgreSQL).
    let any: Vec<One> = c.load(
        &Sql::new(format!("SELECT id AS v {candidates} LIMIT 1"))
            .bind(Bind::Int(run_id))
            .bind(Bind::Int(steal.min_rows as i64)),
    )?;
    if any.is_empty() {
        return Ok(None);
    }
    c.write_transaction(|c| {
        // Steals of one run take turns on the run's row, so two never pick
        // the same new partition number (SQLite's write lock already does);
        // a paused run or one at its cap of active partitions gets none.
        if !super::gate::may_claim(c, run_id)? {
            return Ok(None);
        }
        // The live range partition with the most work left; its row stays
        // locked until the split commits, so its holder's checkpoint waits.
        let rows: Vec<PartitionRow> = c.load(
            &Sql::new(format!(
                "SELECT {PARTITION_COLUMNS} {candidates} \
                 ORDER BY rows_planned - rows_done DESC, number LIMIT 1 {lock}"
            ))
            .bind(Bind::Int(run_id))
            .bind(Bind::Int(steal.min_rows as i64)),
        )?;
        let Some(victim) = rows
            .into_iter()
            .next()
            .map(PartitionRecord::try_from)
            .transpose()?
        else {
            return Ok(None);
        };
        let Some(range) = victim.range else {
            return Ok(None);
        };
        let remaining = (victim.rows_planned - victim.rows_done).max(0) as u64;
        // The holder keeps rows 1..keep past its checkpoint; the thief starts
        // at row keep + 1.
        let keep = (remaining / 2).max(steal.margin);
        let Some(cut) = source::nth_row(
            c,
            source,
            &victim,
            victim.cursor,
            usize::try_from(keep + 1).unwrap_or(usize::MAX),
        )?
        else {
            // Fewer rows left than planned: nothing worth taking.
            return Ok(None);
        };
        let given = remaining - keep;
        c.execute(
            &Sql::new(format!(
                "UPDATE tranche_partitions SET upper_order = ?, upper_key = ?, \
                 rows_planned = rows_planned - ?, updated_ms = {now} WHERE id = ?"
            ))
            .bind(Bind::Int(cut.order))
            .bind(Bind::Int(cut.key))
            .bind(Bind::Int(given as i64))
            .bind(Bind::Int(victim.id)),
        )?;
        let upper = range.upper;
        let next: Vec<One> = c.load(
            &Sql::new(format!(
                "SELECT CAST(COALESCE(MAX(number), -1) + 1 AS {}) AS v \
                     FROM tranche_partitions WHERE run_id = ?",
                c.dialect().bigint()
            ))
            .bind(Bind::Int(run_id)),
        )?;
        let number = next.first().map_or(0, |r| r.v);
        let id = insert_returning_id(
            c,
            Sql::new(format!(
                "INSERT INTO tranche_partitions (run_id, number, strategy, scope, lower_order, \
                 lower_key, upper_order, upper_key, hwm_order, hwm_key, rows_planned, state, \
                 owner, epoch, lease_expires_ms, claimed_ms, split_from, updated_ms) \
                 SELECT run_id, ?, strategy, scope, ?, ?, ?, ?, hwm_order, hwm_key, ?, 'claimed', \
                 ?, 1, {now} + ?, {now}, id, {now} FROM tranche_partitions WHERE id = ?"
            ))
            .bind(Bind::Int(number))
            .bind(Bind::Int(cut.order))
            .bind(Bind::Int(cut.key))
            .bind(Bind::OptInt(upper.map(|u| u.order)))
            .bind(Bind::OptInt(upper.map(|u| u.key)))
            .bind(Bind::Int(given as i64))
            .bind(Bind::Text(owner.into()))
            .bind(Bind::Int(lease_ms))
            .bind(Bind::Int(victim.id)),
        )?;
        c.execute(
            &Sql::new("UPDATE tranche_runs SET partitions = partitions + 1 WHERE id = ?")
                .bind(Bind::Int(run_id)),
        )?;
        id.map(|id| partition(c, id)).transpose()
    })
}

pub(crate) fn complete(
    c: &mut Connection,
    partition_id: i64,
    owner: &str,
    epoch: i64,
) -> Result<(), StoreError> {
    let now = c.dialect().now_ms();
    let n = c.execute(
        &Sql::new(format!(
            "UPDATE tranche_partitions SET state = 'done', updated_ms = {now} \
             WHERE id = ? AND owner = ? AND epoch = ? AND state = 'claimed'"
        ))
        .bind(Bind::Int(partition_id))
        .bind(Bind::Text(owner.into()))
        .bind(Bind::Int(epoch)),
    )?;
    if n == 0 {
        return Err(StoreError::LeaseLost {
            partition_id,
            epoch,
        });
    }
    Ok(())
}

pub(crate) fn renew_leases(
    c: &mut Connection,
    owner: &str,
    held: &[(i64, i64)],
    lease_ms: i64,
) -> Result<Vec<(i64, i64)>, StoreError> {
    let now = c.dialect().now_ms();
    let mut out = Vec::with_capacity(held.len());
    // Ids bound in chunks; the epoch is checked on the way back.
    for chunk in held.chunks(500) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let held_by = format!("WHERE owner = ? AND state = 'claimed' AND id IN ({marks})");
        let ids = || chunk.iter().map(|&(id, _)| Bind::Int(id));
        let mut sql = Sql::new(format!(
            "UPDATE tranche_partitions SET lease_expires_ms = {now} + ? {held_by}"
        ))
        .bind(Bind::Int(lease_ms))
        .bind(Bind::Text(owner.into()));
        sql.push("", ids());
        let rows: Vec<Held> = if c.dialect() == super::Dialect::Mysql {
            // The renewed rows, read back after the update (which commits
            // by itself, holding no lock past its statement): only this
            // owner makes a row its own, and what it just renewed cannot
            // have expired since.
            let mut read = Sql::new(format!(
                "SELECT id, epoch FROM tranche_partitions {held_by}"
            ))
            .bind(Bind::Text(owner.into()));
            read.push("", ids());
            c.execute(&sql)?;
            c.load(&read)?
        } else {
            sql.push(" RETURNING id, epoch", []);
            c.load(&sql)?
        };
        out.extend(rows.into_iter().map(|h| (h.id, h.epoch)));
    }
    Ok(out)
}

pub(crate) fn release(
    c: &mut Connection,
    partition_id: i64,
    owner: &str,
    epoch: i64,
) -> Result<(), StoreError> {
    let now = c.dialect().now_ms();
    c.execute(
        &Sql::new(format!(
            "UPDATE tranche_partitions SET state = 'pending', owner = NULL, lease_expires_ms = NULL, \
             updated_ms = {now} WHERE id = ? AND owner = ? AND epoch = ? AND state = 'claimed'"
        ))
        .bind(Bind::Int(partition_id))
        .bind(Bind::Text(owner.into()))
        .bind(Bind::Int(epoch)),
    )?;
    Ok(())
}

pub(crate) fn record_failure(
    c: &mut Connection,
    partition_id: i64,
    owner: &str,
    epoch: i64,
    error: &str,
    fail: bool,
) -> Result<i64, StoreError> {
    let now = c.dialect().now_ms();
    let mut update = Sql::new(format!(
        "UPDATE tranche_partitions SET attempts = attempts + 1, last_error = ?, \
         state = CASE WHEN ? = 1 THEN 'failed' ELSE state END, updated_ms = {now} \
         WHERE id = ? AND owner = ? AND epoch = ? AND state = 'claimed'"
    ))
    .bind(Bind::Text(crate::model::redact::redact_text(error)))
    .bind(Bind::Int(i64::from(fail)))
    .bind(Bind::Int(partition_id))
    .bind(Bind::Text(owner.into()))
    .bind(Bind::Int(epoch));
    let rows: Vec<One> = if c.dialect() == super::Dialect::Mysql {
        // Read back after the update, which commits by itself: only the
        // holder counts attempts, and it counts one at a time.
        if c.execute(&update)? == 0 {
            Vec::new()
        } else {
            c.load(
                &Sql::new("SELECT attempts AS v FROM tranche_partitions WHERE id = ?")
                    .bind(Bind::Int(partition_id)),
            )?
        }
    } else {
        update.push(" RETURNING CAST(attempts AS BIGINT) AS v", []);
        c.load(&update)?
    };
    rows.first().map(|r| r.v).ok_or(StoreError::LeaseLost {
        partition_id,
        epoch,
    })
}

/// Closes the run once no partition is pending or claimed, and checks that
/// its rows are accounted for: a run ends `done` only when every row it
/// identified was read (and so delivered, skipped by the processor or
/// dead-lettered) or dead-lettered while planning. Otherwise it ends
/// `failed`, its error naming the partitions that read fewer rows than
/// planned (rows deleted or moved out of the source's order since
/// planning, or a bug; either way nobody may take it as complete).
pub(crate) fn finish_run_if_complete(
    c: &mut Connection,
    run_id: i64,
) -> Result<RunRecord, StoreError> {
    let now = c.dialect().now_ms();
    c.write_transaction(|c| {
        c.execute(
            &Sql::new(format!(
                "UPDATE tranche_runs SET \
                   state = CASE WHEN EXISTS (SELECT 1 FROM tranche_partitions p \
                       WHERE p.run_id = tranche_runs.id AND p.state = 'failed') THEN 'failed' ELSE 'done' END, \
                   rows_done = COALESCE((SELECT SUM(p.rows_done) FROM tranche_partitions p \
                       WHERE p.run_id = tranche_runs.id), 0), \
                   finished_ms = {now} \
                 WHERE id = ? AND state IN ('running', 'paused') AND NOT EXISTS (SELECT 1 FROM tranche_partitions p \
                       WHERE p.run_id = tranche_runs.id AND p.state IN ('pending', 'claimed'))"
            ))
            .bind(Bind::Int(run_id)),
        )?;
        let run = run_record(c, run_id)?;
        if run.state == RunState::Failed && run.last_error.is_none() {
            return record_failed_partitions(c, run_id);
        }
        let accounted = run.rows_done + run.rows_dead_at_plan;
        if run.state != RunState::Done || accounted >= run.rows_identified {
            return Ok(run);
        }
        let short: Vec<ShortRow> = c.load(
            &Sql::new(
                "SELECT number, rows_done, rows_planned FROM tranche_partitions \
                 WHERE run_id = ? AND rows_done < rows_planned ORDER BY number LIMIT 20",
            )
            .bind(Bind::Int(run_id)),
        )?;
        let partitions = short
            .iter()
            .map(|p| format!("#{} read {} of {}", p.number, p.rows_done, p.rows_planned))
            .collect::<Vec<_>>()
            .join(", ");
        let error = format!(
            "{} of {} identified rows are unaccounted for (read {}, dead-lettered while \
             planning {}); partitions short: {}. Rows deleted or moved in the source's order \
             since planning are not read; run the job again to pick up what is left",
            run.rows_identified - accounted,
            run.rows_identified,
            run.rows_done,
            run.rows_dead_at_plan,
            if partitions.is_empty() { "none named".to_owned() } else { partitions },
        );
        c.execute(
            &Sql::new("UPDATE tranche_runs SET state = 'failed', last_error = ? WHERE id = ?")
                .bind(Bind::Text(error))
                .bind(Bind::Int(run_id)),
        )?;
        run_record(c, run_id)
    })
}

#[derive(QueryableByName)]
struct FailedRow {
    #[diesel(sql_type = Integer)]
    number: i32,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
}

/// Gives a run that ended failed because partitions failed an error of its
/// own: how many failed, and the first ones' errors.
fn record_failed_partitions(c: &mut Connection, run_id: i64) -> Result<RunRecord, StoreError> {
    let failed: Vec<FailedRow> = c.load(
        &Sql::new(
            "SELECT number, last_error FROM tranche_partitions \
             WHERE run_id = ? AND state = 'failed' ORDER BY number",
        )
        .bind(Bind::Int(run_id)),
    )?;
    let first = failed
        .iter()
        .take(3)
        .map(|p| {
            format!(
                "#{}: {}",
                p.number,
                p.last_error.as_deref().unwrap_or("no error recorded")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let more = failed.len().saturating_sub(3);
    let error = format!(
        "{} partition{} failed ({first}{})",
        failed.len(),
        if failed.len() == 1 { "" } else { "s" },
        if more > 0 {
            format!("; {more} more")
        } else {
            String::new()
        },
    );
    c.execute(
        &Sql::new("UPDATE tranche_runs SET last_error = ? WHERE id = ?")
            .bind(Bind::Text(error))
            .bind(Bind::Int(run_id)),
    )?;
    run_record(c, run_id)
}

#[derive(QueryableByName)]
struct ShortRow {
    #[diesel(sql_type = Integer)]
    number: i32,
    #[diesel(sql_type = BigInt)]
    rows_done: i64,
    #[diesel(sql_type = BigInt)]
    rows_planned: i64,
}

pub(crate) fn dead_letters(c: &mut Connection, run_id: i64) -> Result<Vec<DeadLetter>, StoreError> {
    dead_letters_limited(c, run_id, i64::MAX)
}

/// The first `limit` dead letters of a run, by key.
pub(crate) fn dead_letters_limited(
    c: &mut Connection,
    run_id: i64,
    limit: i64,
) -> Result<Vec<DeadLetter>, StoreError> {
    let rows: Vec<DeadLetterRow> = c.load(
        &Sql::new(
            "SELECT run_id, partition_id, row_key, reason FROM tranche_dead_letters \
             WHERE run_id = ? ORDER BY row_key, id LIMIT ?",
        )
        .bind(Bind::Int(run_id))
        .bind(Bind::Int(limit)),
    )?;
    Ok(rows
        .into_iter()
        .map(|r| DeadLetter {
            run_id: r.run_id,
            partition_id: r.partition_id,
            row_key: r.row_key,
            reason: r.reason,
        })
        .collect())
}
