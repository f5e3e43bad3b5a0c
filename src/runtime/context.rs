//! What every actor of one run shares.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use super::progress::RunProgress;
use super::RuntimeConfig;
use crate::job::Job;
use crate::model::Throttle;
use crate::store::{RunState, Store};

/// What the run's stored controls say, as its supervisor last polled them
/// (every poll interval): workers read it between pages.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Control {
    /// The run's stored state: workers hand their partitions back once it
    /// is paused or cancelled.
    pub(crate) state: RunState,
    /// The run's throttles.
    pub(crate) throttle: Throttle,
    /// Why the database is unhealthy, as this instance last checked; no
    /// page starts meanwhile.
    pub(crate) unhealthy: Option<String>,
    /// Partitions claimed beyond a lowered cap on active partitions (the
    /// latest claims): their holders hand them back.
    pub(crate) surplus: Vec<i64>,
}

impl Control {
    pub(crate) fn new(throttle: Throttle) -> Self {
        Self {
            state: RunState::Planning,
            throttle,
            unhealthy: None,
            surplus: Vec::new(),
        }
    }
}

/// The job, the store, the runtime's settings, this instance's owner id,
/// the shutdown signal, the run's live progress and controls: handed by the runtime
/// to the run's supervisor and by it to each partition worker (a clone is
/// a handful of reference counts).
#[derive(Clone)]
pub(crate) struct RunContext {
    pub(crate) job: Job,
    pub(crate) store: Store,
    pub(crate) config: Arc<RuntimeConfig>,
    pub(crate) owner: String,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) progress: Arc<watch::Sender<RunProgress>>,
    pub(crate) control: Arc<watch::Sender<Control>>,
    /// When the run started on this instance.
    pub(crate) started: Instant,
    /// The run's span (`job.name`, and `run.id` once planned): the parent
    /// of its partitions' spans and of the supervisor's events.
    pub(crate) span: tracing::Span,
}
