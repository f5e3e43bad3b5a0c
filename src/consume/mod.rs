//! Consumers: the broker side of the update phase.
//!
//! A [`Consumer`] reads messages from an [`Inbound`] source (a RabbitMQ
//! queue, a JetStream durable consumer, or one of your own), decodes each
//! into an operation on one row, applies a batch of them to the database in
//! one transaction, and only then acknowledges the batch to the broker. A
//! crash between the commit and the acknowledgement makes the broker deliver
//! the batch again, and applying it again changes nothing:
//!
//! * [`Apply::Versions`] is the version update: the message id `job:key:version`
//!   names the row and the version it must reach; the version column only
//!   moves forward.
//! * [`Apply::Rows`] applies insert, modify and delete operations (S2). The
//!   last version applied per key is kept in `tranche_inbox`, in the same
//!   transaction, and an operation at or below it changes nothing; the entry
//!   outlives a deleted row, so a late insert cannot bring the row back.
//!   Several consumers may share one queue: the result is that of applying
//!   each key's operations in version order, provided each insert or modify
//!   carries the values of the columns it sets (not increments).
//!
//! A message that cannot be applied (no id, a payload that is not an
//! operation, an unknown column, a row the database refuses) is written to
//! `tranche_consumer_dead_letters` whole, with its reason, and acknowledged:
//! poison never blocks the queue and is never lost. Prefetch is bounded by
//! the source (`prefetch`, at least the batch size), so a slow database
//! holds back the broker rather than filling memory.

#[cfg(feature = "amqp")]
mod amqp;
mod apply;
mod file;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "nats")]
mod nats;
mod settings;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::watch;

#[cfg(feature = "amqp")]
pub use amqp::{AmqpAck, AmqpSource};
pub use file::{ApplySection, ConsumeFile, ConsumeSection, FromSection};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaAck, KafkaSource};
#[cfg(feature = "nats")]
pub use nats::{NatsAck, NatsSource};
pub use settings::{AmqpSourceConfig, KafkaSourceConfig, NatsSourceConfig};

use crate::backoff::Backoff;
use crate::error_text::Chain;
use crate::model::{Cause, ConfigError, Ident};
use crate::sink::UpdateSpec;
use crate::store::{Store, StoreError};
use apply::{Operation, Outcome, Poisoned};

/// What a consumer does with each message.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Apply {
    /// The version update: advance `version_column` of the row the message id
    /// names to the id's version, only when it is lower. The payload is not
    /// read.
    Versions(UpdateSpec),
    /// Row operations: the payload is
    /// `{"op": "insert" | "modify" | "upsert" | "delete", "data": {column: value}}`,
    /// the key and version come from the message id.
    Rows(RowsSpec),
}

/// The table [`Apply::Rows`] writes.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RowsSpec {
    /// Table to change.
    pub table: Ident,
    /// Its unique key column (the message key).
    pub key_column: Ident,
    /// Columns an operation may set. Values are JSON integers, strings or
    /// null; anything else makes the message poison.
    pub columns: Vec<Ident>,
}

impl RowsSpec {
    /// Sets `columns` of `table`'s rows keyed by `key_column`; names are
    /// validated (errors name `apply.table`, `apply.key_column`,
    /// `apply.columns`).
    pub fn new(table: &str, key_column: &str, columns: &[&str]) -> Result<Self, ConfigError> {
        Ok(Self {
            table: Ident::parse("apply.table", table)?,
            key_column: Ident::parse("apply.key_column", key_column)?,
            columns: columns
                .iter()
                .map(|c| Ident::parse("apply.columns", c))
                .collect::<Result<_, _>>()?,
        })
    }
}

/// How a consumer batches and applies.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// The consumer's name: its inbox entries and dead letters are kept
    /// under it. Consumers sharing a queue share a name.
    pub name: String,
    /// What to do with each message.
    pub apply: Apply,
    /// Messages applied per transaction, at most (default 500).
    pub batch_size: usize,
    /// How long to wait for more messages once a batch has its first
    /// (default 20 ms).
    pub linger: Duration,
    /// Delays between retries of a broker or database that is unavailable
    /// (default 100 ms doubling to 5 s); a consumer retries until stopped.
    pub retry: Backoff,
}

impl ConsumerConfig {
    /// A consumer named `name` doing `apply`, with the defaults above.
    pub fn new(name: &str, apply: Apply) -> Self {
        Self {
            name: name.to_owned(),
            apply,
            batch_size: 500,
            linger: Duration::from_millis(20),
            retry: Backoff {
                base: Duration::from_millis(100),
                max: Duration::from_secs(5),
            },
        }
    }

    /// Checks every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::job::validate_job_name(&self.name)
            .map_err(|e| ConfigError::new("consume.name", e.reason))?;
        if self.batch_size == 0 {
            return Err(ConfigError::new("consume.batch_size", "must be at least 1"));
        }
        if let Apply::Rows(spec) = &self.apply {
            if spec.columns.contains(&spec.key_column) {
                return Err(ConfigError::new(
                    "apply.columns",
                    format!("must not contain the key column {}", spec.key_column),
                ));
            }
        }
        Ok(())
    }
}

/// A message as a consumer sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The message id (AMQP `message-id`, `Nats-Msg-Id`), if it has one.
    pub id: Option<String>,
    /// The body.
    pub payload: Vec<u8>,
}

/// A source failure.
/// Its cause (the broker client's error, masked) is kept behind `source()`.
#[derive(Debug, thiserror::Error)]
#[error("{source_name} failed{}", if *.retryable { " (retryable)" } else { "" })]
pub struct InboundError {
    /// Source name.
    pub source_name: String,
    /// What happened.
    #[source]
    pub cause: Cause,
    /// Whether trying again may help (the broker down or restarting).
    pub retryable: bool,
}

impl InboundError {
    /// A failure of the source `source_name`: `cause` is an error or a
    /// message; wrap a client's error that may quote a URL in
    /// [`Redacted`](crate::model::Redacted).
    pub fn new(
        source_name: impl Into<String>,
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
        retryable: bool,
    ) -> Self {
        Self {
            source_name: source_name.into(),
            cause: Cause::from(cause.into()),
            retryable,
        }
    }
}

/// Where a consumer reads from. Implementations reconnect on the next call
/// after a retryable error; messages handed out and not acknowledged are
/// delivered again by the broker.
#[async_trait]
pub trait Inbound: Send {
    /// What acknowledges one message.
    type Ack: Send + 'static;

    /// Short name for logs and errors.
    fn name(&self) -> &str;

    /// Connects now, so that a bad URL or a missing queue, stream or topic
    /// fails before anything else starts (by default: nothing to check).
    async fn connect(&mut self) -> Result<(), InboundError> {
        Ok(())
    }

    /// Waits for a message, then gathers up to `max` for at most `linger`
    /// more. Must be safe to cancel: messages not returned are delivered
    /// again.
    async fn next_batch(
        &mut self,
        max: usize,
        linger: Duration,
    ) -> Result<Vec<(Incoming, Self::Ack)>, InboundError>;

    /// Acknowledges messages (called after their batch committed).
    async fn ack(&mut self, acks: Vec<Self::Ack>) -> Result<(), InboundError>;
}

/// A consumer's counters, as it runs and when it stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ConsumeProgress {
    /// Messages received.
    pub received: u64,
    /// Operations that changed the database.
    pub applied: u64,
    /// Operations that changed nothing (replays, or older than what was
    /// applied for their key).
    pub stale: u64,
    /// Messages written to the dead letters.
    pub dead_lettered: u64,
    /// Transactions committed.
    pub batches: u64,
    /// Acknowledgements that failed after their batch committed (those
    /// messages come again and change nothing).
    pub acks_failed: u64,
}

impl std::ops::AddAssign for ConsumeProgress {
    fn add_assign(&mut self, rhs: Self) {
        self.received += rhs.received;
        self.applied += rhs.applied;
        self.stale += rhs.stale;
        self.dead_lettered += rhs.dead_lettered;
        self.batches += rhs.batches;
        self.acks_failed += rhs.acks_failed;
    }
}

/// A consumer failure that retrying cannot fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumeError {
    /// Invalid configuration (its text already says so, once).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The source failed for good (a missing queue, refused credentials).
    #[error(transparent)]
    Inbound(#[from] InboundError),
    /// The database failed for good while writing dead letters.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A message a consumer could not apply, as kept in the dead letters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ConsumerDeadLetter {
    /// Its id (empty when it had none).
    pub message_id: String,
    /// The row key, when the id named one.
    pub row_key: Option<i64>,
    /// Why it was not applied.
    pub reason: String,
    /// The body, as received.
    pub payload: Vec<u8>,
}

/// The dead letters of the consumer named `consumer`, oldest first.
pub async fn dead_letters(
    store: &Store,
    consumer: &str,
) -> Result<Vec<ConsumerDeadLetter>, StoreError> {
    let consumer = consumer.to_owned();
    store.run(move |c| apply::dead_letters(c, &consumer)).await
}

/// Reads a source, applies to the database, acknowledges after the commit.
pub struct Consumer<I: Inbound> {
    store: Store,
    inbound: I,
    config: ConsumerConfig,
    progress: watch::Sender<ConsumeProgress>,
}

impl<I: Inbound> Consumer<I> {
    /// A consumer of `inbound` writing through `store` (for example
    /// [`RuntimeHandle::store`](crate::RuntimeHandle::store)).
    pub fn new(store: Store, inbound: I, config: ConsumerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            store,
            inbound,
            config,
            progress: watch::channel(ConsumeProgress::default()).0,
        })
    }

    /// Its counters, updated after every batch.
    pub fn progress(&self) -> watch::Receiver<ConsumeProgress> {
        self.progress.subscribe()
    }

    /// Consumes until `stop` completes or a failure retrying cannot fix.
    /// A batch being applied is finished and acknowledged first, unless it
    /// is waiting for an unavailable database: it is then left
    /// unacknowledged, for the broker to deliver again.
    pub async fn run(
        mut self,
        stop: impl Future<Output = ()> + Send,
    ) -> Result<ConsumeProgress, ConsumeError> {
        let mut stop = std::pin::pin!(stop);
        let mut failures = 0u32;
        loop {
            let next = tokio::select! {
                biased;
                _ = &mut stop => break,
                next = self.inbound.next_batch(self.config.batch_size, self.config.linger) => next,
            };
            let batch = match next {
                Ok(batch) => {
                    failures = 0;
                    batch
                }
                Err(e) if e.retryable => {
                    failures += 1;
                    tracing::warn!(error = %Chain(&e), consumer = %self.config.name, "source unavailable; retrying");
                    tokio::select! {
                        biased;
                        _ = &mut stop => break,
                        _ = tokio::time::sleep(self.config.retry.jittered(failures)) => continue,
                    }
                }
                Err(e) => return Err(e.into()),
            };
            if batch.is_empty() {
                continue;
            }
            let received = batch.len() as u64;
            let (messages, acks): (Vec<Incoming>, Vec<I::Ack>) = batch.into_iter().unzip();
            let mut ops = Vec::with_capacity(messages.len());
            let mut poison = Vec::new();
            for m in messages {
                match apply::decode(&self.config.apply, m.id.as_deref(), &m.payload) {
                    Ok(op) => ops.push(op),
                    Err((key, reason)) => poison.push(Poisoned {
                        id: m.id.unwrap_or_default(),
                        key,
                        reason,
                        payload: m.payload,
                    }),
                }
            }
            let committed = commit(
                &self.store,
                &self.config,
                &mut stop,
                Arc::new(ops),
                Arc::new(poison),
            )
            .await?;
            let Some(outcome) = committed else {
                break;
            };
            let acked = match self.inbound.ack(acks).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(
                        error = %Chain(&e),
                        consumer = %self.config.name,
                        "acknowledgement failed after the commit; the broker will deliver the \
                         batch again, which changes nothing"
                    );
                    false
                }
            };
            crate::runtime::metrics::consumer_batch(
                &self.config.name,
                received,
                outcome.applied,
                outcome.stale,
                outcome.dead,
            );
            self.progress.send_modify(|p| {
                p.received += received;
                p.applied += outcome.applied;
                p.stale += outcome.stale;
                p.dead_lettered += outcome.dead;
                p.batches += 1;
                p.acks_failed += u64::from(!acked);
            });
        }
        Ok(*self.progress.borrow())
    }
}

/// Applies a batch and its poison in one transaction, retrying while the
/// database is unavailable; `None` when `stop` came first (the batch is then
/// not acknowledged, and the broker delivers it again). When the database
/// refuses the batch for good, each operation is tried alone and those it
/// refuses become dead letters, so one bad row cannot hold back the others.
async fn commit<S: Future<Output = ()>>(
    store: &Store,
    config: &ConsumerConfig,
    stop: &mut Pin<&mut S>,
    ops: Arc<Vec<Operation>>,
    poison: Arc<Vec<Poisoned>>,
) -> Result<Option<Outcome>, ConsumeError> {
    let refused = match try_commit(store, config, stop, ops.clone(), poison.clone()).await? {
        None => return Ok(None),
        Some(Ok(outcome)) => return Ok(Some(outcome)),
        Some(Err(e)) => e,
    };
    tracing::warn!(error = %refused, consumer = %config.name, "the database refused a batch; applying its messages one by one");
    let mut total = Outcome::default();
    let mut poison = Arc::unwrap_or_clone(poison);
    for op in ops.iter() {
        match try_commit(
            store,
            config,
            stop,
            Arc::new(vec![op.clone()]),
            Arc::default(),
        )
        .await?
        {
            None => return Ok(None),
            Some(Ok(o)) => {
                total.applied += o.applied;
                total.stale += o.stale;
            }
            Some(Err(e)) => poison.push(Poisoned {
                id: op.id.clone(),
                key: Some(op.key),
                reason: format!("the database refused it: {}", Chain(&e)),
                payload: op.payload.clone(),
            }),
        }
    }
    match try_commit(store, config, stop, Arc::default(), Arc::new(poison)).await? {
        None => Ok(None),
        Some(Ok(o)) => {
            total.dead = o.dead;
            Ok(Some(total))
        }
        Some(Err(e)) => Err(e.into()),
    }
}

/// One transaction, retried while the error is retryable and `stop` has
/// not come (`None`); the inner error is a permanent refusal.
async fn try_commit<S: Future<Output = ()>>(
    store: &Store,
    config: &ConsumerConfig,
    stop: &mut Pin<&mut S>,
    ops: Arc<Vec<Operation>>,
    poison: Arc<Vec<Poisoned>>,
) -> Result<Option<Result<Outcome, StoreError>>, ConsumeError> {
    let mut attempt = 0u32;
    loop {
        let (name, apply) = (config.name.clone(), config.apply.clone());
        let (o, p) = (ops.clone(), poison.clone());
        match store
            .run(move |c| apply::apply_batch(c, &name, &apply, &o, &p))
            .await
        {
            Ok(outcome) => return Ok(Some(Ok(outcome))),
            Err(StoreError::ExecutorGone) => return Err(StoreError::ExecutorGone.into()),
            Err(e) if e.is_retryable() => {
                attempt += 1;
                tracing::warn!(error = %Chain(&e), consumer = %config.name, "database unavailable; retrying the batch");
                tokio::select! {
                    biased;
                    _ = stop.as_mut() => return Ok(None),
                    _ = tokio::time::sleep(config.retry.jittered(attempt)) => {}
                }
            }
            Err(e) => return Ok(Some(Err(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_error_says_so_once() {
        let e = ConsumeError::from(ConfigError::new("from.queue", "must not be empty"));
        assert_eq!(
            e.to_string(),
            "invalid configuration: from.queue: must not be empty"
        );
    }
}
