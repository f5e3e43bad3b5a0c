//! The handle to one run on this instance: its live progress and, once it
//! ended here, its report, shared by every clone.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{RunProgress, RunReport};
use crate::error::Error;

/// How a run ended on this instance.
#[derive(Clone)]
pub(crate) enum Ended {
    Report(RunReport),
    /// The error, until the first waiter takes it, and its text for the
    /// others.
    Failed {
        error: Arc<Mutex<Option<Error>>>,
        text: String,
    },
}

/// The supervisor's side: sends the run's end to every handle. Dropped
/// without sending (the runtime stopped first), the handles see a shutdown.
pub(crate) struct RunEnd(watch::Sender<Option<Ended>>);

impl RunEnd {
    pub(crate) fn send(self, result: Result<RunReport, Error>) {
        let ended = match result {
            Ok(report) => Ended::Report(report),
            Err(e) => Ended::Failed {
                text: crate::error_text::Chain(&e).to_string(),
                error: Arc::new(Mutex::new(Some(e))),
            },
        };
        self.0.send_replace(Some(ended));
    }
}

/// Follows one run on this instance: live progress, then its report.
/// `Clone`: every clone sees the same run, and each can wait for its end.
/// [`crate::RuntimeHandle::active_run`] gives a handle of a job's run back,
/// and a second [`crate::RuntimeHandle::start_run`] of a job running in
/// this process returns its handle rather than starting it again.
#[derive(Clone)]
pub struct RunHandle {
    progress: watch::Receiver<RunProgress>,
    ended: watch::Receiver<Option<Ended>>,
}

impl std::fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.progress.borrow();
        f.debug_struct("RunHandle")
            .field("job", &p.job)
            .field("run_id", &p.run_id)
            .field("state", &p.state)
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl RunHandle {
    pub(crate) fn new(progress: watch::Receiver<RunProgress>) -> (Self, RunEnd) {
        let (tx, rx) = watch::channel(None);
        (
            Self {
                progress,
                ended: rx,
            },
            RunEnd(tx),
        )
    }

    /// The latest progress.
    pub fn progress(&self) -> RunProgress {
        self.progress.borrow().clone()
    }

    /// A receiver that wakes on every progress update.
    pub fn subscribe(&self) -> watch::Receiver<RunProgress> {
        self.progress.clone()
    }

    /// Whether the run has ended on this instance (done, failed,
    /// cancelled, interrupted, or stopped with the runtime).
    pub fn is_finished(&self) -> bool {
        self.ended.borrow().is_some() || self.ended.has_changed().is_err()
    }

    /// The run's report once it ended on this instance, kept for every
    /// handle; `None` while it runs, or when it ended with an error.
    pub fn report(&self) -> Option<RunReport> {
        match &*self.ended.borrow() {
            Some(Ended::Report(r)) => Some(r.clone()),
            _ => None,
        }
    }

    /// Waits for the run to end on this instance. Every clone may wait:
    /// each gets the report; when the run ended with an error, the first
    /// to wait gets it and the others [`Error::RunFailed`] with its text.
    /// [`Error::Shutdown`] when the runtime stopped first.
    pub async fn wait(self) -> Result<RunReport, Error> {
        let mut ended = self.ended;
        let end = match ended.wait_for(Option::is_some).await {
            Ok(end) => end.clone(),
            Err(_) => return Err(Error::Shutdown),
        };
        match end {
            Some(Ended::Report(r)) => Ok(r),
            Some(Ended::Failed { error, text }) => {
                let taken = error.lock().ok().and_then(|mut e| e.take());
                Err(taken.unwrap_or(Error::RunFailed { reason: text }))
            }
            None => Err(Error::Shutdown),
        }
    }
}
