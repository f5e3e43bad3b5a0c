//! What every actor of one run shares.

use std::sync::Arc;

use tokio::sync::watch;

use super::progress::RunProgress;
use super::RuntimeConfig;
use crate::job::Job;
use crate::store::Store;

/// The job, the store, the runtime's settings, this instance's owner id,
/// the shutdown signal and the run's live progress: handed by the runtime
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
}
