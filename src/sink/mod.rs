//! Sinks: where messages go. A sink delivers a batch durably and returns only
//! when the whole batch is confirmed; nothing is checkpointed before that.
//!
//! Implement [`Sink`] for your own destination; the crate ships an
//! in-process update step ([`UpdateSink`], the embedded default), a
//! transactional outbox table in the same database ([`OutboxSink`]), a
//! JSON-lines file ([`JsonLinesSink`]), an in-memory sink for tests
//! ([`MemorySink`]) and a discarding one for measurements ([`NullSink`]); behind cargo features (on by default) the brokers:
//! RabbitMQ (`AmqpSink`, feature `amqp`), NATS JetStream (`NatsSink`,
//! feature `nats`) and Kafka (`KafkaSink`, feature `kafka`). Their consuming
//! side is [`crate::consume`].

#[cfg(feature = "amqp")]
pub(crate) mod amqp;
mod jsonl;
#[cfg(feature = "kafka")]
pub(crate) mod kafka;
mod memory;
#[cfg(feature = "nats")]
pub(crate) mod nats;
mod null;
mod outbox;
pub(crate) mod settings;
pub(crate) mod update;

use async_trait::async_trait;
use serde::Serialize;

use crate::model::ConfigError;
pub use crate::model::{Cause, Message, Redacted};

#[cfg(feature = "amqp")]
pub use amqp::AmqpSink;
pub use jsonl::JsonLinesSink;
#[cfg(feature = "kafka")]
pub use kafka::KafkaSink;
pub use memory::MemorySink;
#[cfg(feature = "nats")]
pub use nats::NatsSink;
pub use null::NullSink;
pub use outbox::OutboxSink;
pub use settings::{AmqpConfig, KafkaConfig, NatsConfig};
pub use update::{UpdateSink, UpdateSpec};

/// What a sink reports for a confirmed batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Delivery {
    /// Messages confirmed.
    pub confirmed: u64,
    /// Messages the sink knows it had already received or applied
    /// (replays after a crash).
    pub duplicates: u64,
}

impl Delivery {
    /// `confirmed` messages confirmed, `duplicates` of them known replays.
    pub fn new(confirmed: u64, duplicates: u64) -> Self {
        Self {
            confirmed,
            duplicates,
        }
    }

    /// A batch of `n` messages confirmed, none known to be a replay.
    pub fn confirmed(n: usize) -> Self {
        Self::new(n as u64, 0)
    }
}

impl std::ops::AddAssign for Delivery {
    fn add_assign(&mut self, rhs: Self) {
        self.confirmed += rhs.confirmed;
        self.duplicates += rhs.duplicates;
    }
}

/// A sink failure. Its cause (the broker client's or the database's error)
/// is kept behind `source()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// May succeed if tried again (broker down, timeout, busy database).
    #[error("{sink} failed (retryable)")]
    Retryable {
        /// Sink name.
        sink: String,
        /// What happened.
        #[source]
        cause: Cause,
    },
    /// Will not succeed if tried again.
    #[error("{sink} failed")]
    Fatal {
        /// Sink name.
        sink: String,
        /// What happened.
        #[source]
        cause: Cause,
    },
    /// The sink is configured for something that is not there (a table, a
    /// column), found by [`Sink::check`] before the run is planned.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl SinkError {
    /// A failure of `sink` that another attempt may get past (a broker
    /// down, a timeout): the worker retries the batch after a backoff.
    /// `cause` is an error or a message; wrap a driver's error that may
    /// quote a URL in [`Redacted`].
    pub fn retryable(
        sink: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        SinkError::Retryable {
            sink: sink.into(),
            cause: Cause::from(cause.into()),
        }
    }

    /// A failure of `sink` that another attempt will not fix: the
    /// partition fails once its attempts are spent.
    pub fn fatal(
        sink: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        SinkError::Fatal {
            sink: sink.into(),
            cause: Cause::from(cause.into()),
        }
    }

    /// A store failure of a sink that writes to the database: retryable
    /// when the store says another attempt may pass.
    pub(crate) fn from_store(sink: &str, e: crate::store::StoreError) -> Self {
        let retryable = e.is_retryable();
        let (sink, cause) = (sink.to_owned(), Cause::from(Box::new(e) as Box<_>));
        if retryable {
            SinkError::Retryable { sink, cause }
        } else {
            SinkError::Fatal { sink, cause }
        }
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SinkError::Retryable { .. })
    }
}

/// A destination for messages.
///
/// `deliver` must return only when every message of `batch` is durably
/// confirmed, and must keep the order of the batch for messages of the same
/// key. It may be called concurrently for different lanes (disjoint keys).
///
/// Implement it under `#[tranche::async_trait]` (re-exported from the
/// `async-trait` crate), as `examples/custom_sink.rs` does.
#[async_trait]
pub trait Sink: Send + Sync + 'static {
    /// Short name for logs and errors.
    fn name(&self) -> &str;

    /// Delivers `batch` and waits for its confirmation.
    async fn deliver(&self, batch: &[Message]) -> Result<Delivery, SinkError>;

    /// Checks, before a run is planned, that what the sink writes to can
    /// take its messages (a table and its columns, a directory), creating
    /// nothing. A [`SinkError::Config`] names the field at fault; the
    /// default checks nothing.
    async fn check(&self) -> Result<(), SinkError> {
        Ok(())
    }
}
