//! What a run reports while it works and when it ends.

use std::time::Duration;

use serde::Serialize;

use crate::store::{PartitionRecord, PartitionState, RunState};

/// Where one partition stands, as this instance sees it.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct PartitionProgress {
    /// Partition id.
    pub id: i64,
    /// Number within the run.
    pub number: i32,
    /// Its scope's label.
    pub scope: String,
    /// Rows at planning time.
    pub rows_planned: i64,
    /// Rows checkpointed.
    pub rows_done: i64,
    /// Stored state.
    pub state: PartitionState,
    /// Whether a worker of this instance is on it now.
    pub active: bool,
    /// Failed attempts.
    pub attempts: i32,
    /// Last error.
    pub last_error: Option<String>,
}

impl From<&PartitionRecord> for PartitionProgress {
    fn from(p: &PartitionRecord) -> Self {
        Self {
            id: p.id,
            number: p.number,
            scope: p.scope.label.clone(),
            rows_planned: p.rows_planned,
            rows_done: p.rows_done,
            state: p.state,
            active: false,
            attempts: p.attempts,
            last_error: p.last_error.clone(),
        }
    }
}

/// A live view of a run, published after every checkpoint.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct RunProgress {
    /// Run id (0 until identification found or created it).
    pub run_id: i64,
    /// Job name.
    pub job: String,
    /// Whether identification has finished.
    pub planned: bool,
    /// Whether the run continued from an earlier process's checkpoints.
    pub resumed: bool,
    /// Eligible rows found by identification.
    pub rows_identified: i64,
    /// Rows checkpointed by any instance, as known here.
    pub rows_done: i64,
    /// Rows that were already checkpointed when this instance joined.
    pub rows_done_at_start: i64,
    /// Rows this instance checkpointed.
    pub rows_checkpointed: u64,
    /// Messages this instance delivered (confirmed by the sink).
    pub rows_published: u64,
    /// Messages the sink reported as already delivered or applied.
    pub rows_replayed: u64,
    /// At most this many rows were delivered again because this instance
    /// resumed a partition from its checkpoint (a takeover, or a restart
    /// after a failure): the rows an earlier holder may have published past
    /// that checkpoint, at most a page per resume. A bound, not a count.
    pub rows_possibly_replayed: u64,
    /// Rows rejected as poison by this instance.
    pub dead_letters: u64,
    /// Partitions this instance took over from an expired lease.
    pub takeovers: u64,
    /// Partitions this instance made by splitting a busy worker's range.
    pub steals: u64,
    /// Partitions this instance abandoned because its lease was lost.
    pub leases_lost: u64,
    /// Every partition of the run.
    pub partitions: Vec<PartitionProgress>,
    /// Time since the run started on this instance (updated at every
    /// checkpoint and every poll interval).
    pub elapsed: Duration,
    /// The run's stored state, as last polled (planning until planned;
    /// paused and cancelled come from an operator).
    pub state: RunState,
    /// Why the run's health gate holds pages back, while it does.
    pub health: Option<String>,
    /// Rows per second of the whole run (every instance) over about the
    /// last minute; `None` until two polls apart.
    pub rows_per_s: Option<f64>,
    /// Time left at that rate; `None` without a rate.
    pub eta: Option<Duration>,
}

impl RunProgress {
    /// Whether the run has ended (done, failed or cancelled).
    pub fn is_finished(&self) -> bool {
        self.state.is_finished()
    }
}

/// How a run ended on this instance: the gathered results of its partitions.
///
/// It is also what `tranche run --summary-json` and `tranche demo
/// --summary-json` write (with a few fields of the process's own): its JSON
/// form has every field below except `partitions` and `elapsed`, which
/// appear as `partitions` (how many), `failed_partitions`, `elapsed_s` and
/// `rows_per_s` (rows this instance checkpointed per second).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RunReport {
    /// Run id.
    pub run_id: i64,
    /// Job name.
    pub job: String,
    /// The run's stored state at the end (running or paused if
    /// interrupted; cancelled when an operator cancelled it).
    pub state: RunState,
    /// True when the runtime was shut down before the run ended.
    pub interrupted: bool,
    /// Whether it continued from earlier checkpoints.
    pub resumed: bool,
    /// Eligible rows found by identification.
    pub rows_identified: i64,
    /// Rows checkpointed in the run (all instances).
    pub rows_done: i64,
    /// Rows already checkpointed when this instance joined.
    pub rows_done_at_start: i64,
    /// Rows this instance checkpointed.
    pub rows_checkpointed: u64,
    /// Messages this instance delivered.
    pub rows_published: u64,
    /// Messages the sink reported as replays.
    pub rows_replayed: u64,
    /// At most this many rows were delivered again because this instance
    /// resumed partitions from their checkpoints (see
    /// [`RunProgress::rows_possibly_replayed`]): a bound, not a count.
    pub rows_possibly_replayed: u64,
    /// Rows rejected as poison by this instance.
    pub dead_letters: u64,
    /// Partitions this instance took over.
    pub takeovers: u64,
    /// Partitions this instance made by splitting a busy worker's range.
    pub steals: u64,
    /// Partitions this instance abandoned because its lease was lost.
    pub leases_lost: u64,
    /// Per-partition results.
    pub partitions: Vec<PartitionProgress>,
    /// Time the run took on this instance.
    pub elapsed: Duration,
    /// Rows per second of the whole run, every instance together, from its
    /// stored start and end (database clock); `None` until it closed.
    pub run_rows_per_s: Option<f64>,
    /// Why the run failed, as stored with it (a planning error, or the rows
    /// left unaccounted for).
    pub error: Option<String>,
}

impl RunReport {
    /// Rows this instance checkpointed per second of its part of the run.
    pub fn rows_per_s(&self) -> f64 {
        self.rows_checkpointed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(crate) fn from_progress(p: RunProgress, state: RunState, interrupted: bool) -> Self {
        Self {
            run_id: p.run_id,
            job: p.job,
            state,
            interrupted,
            resumed: p.resumed,
            rows_identified: p.rows_identified,
            rows_done: p.rows_done,
            rows_done_at_start: p.rows_done_at_start,
            rows_checkpointed: p.rows_checkpointed,
            rows_published: p.rows_published,
            rows_replayed: p.rows_replayed,
            rows_possibly_replayed: p.rows_possibly_replayed,
            dead_letters: p.dead_letters,
            takeovers: p.takeovers,
            steals: p.steals,
            leases_lost: p.leases_lost,
            partitions: p.partitions,
            elapsed: p.elapsed,
            run_rows_per_s: None,
            error: None,
        }
    }

    /// Partitions that failed.
    pub fn failed_partitions(&self) -> impl Iterator<Item = &PartitionProgress> {
        self.partitions
            .iter()
            .filter(|p| p.state == PartitionState::Failed)
    }
}

/// The peak resident set of this process so far (Linux: `VmHWM` of
/// `/proc/self/status`), in bytes; `None` where that is not available.
/// `tranche run --summary-json` reports it, and the bench reads it there.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl Serialize for RunReport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut r = s.serialize_struct("RunReport", 22)?;
        r.serialize_field("job", &self.job)?;
        r.serialize_field("run_id", &self.run_id)?;
        r.serialize_field("state", &self.state)?;
        r.serialize_field("interrupted", &self.interrupted)?;
        r.serialize_field("resumed", &self.resumed)?;
        r.serialize_field("rows_identified", &self.rows_identified)?;
        r.serialize_field("rows_done", &self.rows_done)?;
        r.serialize_field("rows_done_at_start", &self.rows_done_at_start)?;
        r.serialize_field("rows_checkpointed", &self.rows_checkpointed)?;
        r.serialize_field("rows_published", &self.rows_published)?;
        r.serialize_field("rows_replayed", &self.rows_replayed)?;
        r.serialize_field("rows_possibly_replayed", &self.rows_possibly_replayed)?;
        r.serialize_field("dead_letters", &self.dead_letters)?;
        r.serialize_field("partitions", &self.partitions.len())?;
        r.serialize_field("failed_partitions", &self.failed_partitions().count())?;
        r.serialize_field("takeovers", &self.takeovers)?;
        r.serialize_field("steals", &self.steals)?;
        r.serialize_field("leases_lost", &self.leases_lost)?;
        r.serialize_field("elapsed_s", &self.elapsed.as_secs_f64())?;
        r.serialize_field("rows_per_s", &self.rows_per_s())?;
        r.serialize_field("run_rows_per_s", &self.run_rows_per_s)?;
        r.serialize_field("error", &self.error)?;
        r.end()
    }
}
