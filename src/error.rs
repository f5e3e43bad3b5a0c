//! The errors of the crate, one enum per layer, composed upward.
//!
//! Each says what failed and with which input, and is classified: a
//! retryable error (a dropped connection, a broker that is down) is worth
//! another attempt after a backoff; a fatal one (bad configuration, a lost
//! lease, a poison-row limit) is not. Credentials never appear in them: URLs
//! are shown with their password removed.

use crate::model::ConfigError;
use crate::sink::SinkError;
use crate::store::StoreError;

/// A result whose error is tranche's [`Error`] unless another is named.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Anything a run or the runtime can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The sink failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// A partition collected more poison rows than its skip limit allows.
    #[error("partition {partition_id}: {dead_letters} poison rows exceed the skip limit of {limit}; last: row {row_key}: {reason}")]
    SkipLimitExceeded {
        /// Partition that failed.
        partition_id: i64,
        /// Poison rows seen in it.
        dead_letters: u64,
        /// The configured limit.
        limit: u64,
        /// Key of the last poison row.
        row_key: i64,
        /// Why the processor rejected it.
        reason: String,
    },
    /// The runtime's thread could not be started.
    #[error("cannot start the tranche runtime's thread")]
    Start(#[source] std::io::Error),
    /// The runtime was shut down before the request completed.
    #[error("the tranche runtime is shut down")]
    Shutdown,
    /// The run ended with an error that another of its handles took
    /// (see [`crate::RunHandle::wait`]); its text.
    #[error("the run failed on this instance: {reason}")]
    RunFailed {
        /// The error's text, causes included.
        reason: String,
    },
}

impl Error {
    /// Whether another attempt after a backoff may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store(e) => e.is_retryable(),
            Error::Sink(e) => e.is_retryable(),
            Error::Config(_)
            | Error::SkipLimitExceeded { .. }
            | Error::Start(_)
            | Error::Shutdown
            | Error::RunFailed { .. } => false,
        }
    }
}
