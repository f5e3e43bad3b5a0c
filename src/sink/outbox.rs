use async_trait::async_trait;

use super::{Delivery, Message, Sink, SinkError};
use crate::error::ConfigError;
use crate::ident::Ident;
use crate::store::Store;

/// The transactional outbox: each message becomes a row of an outbox table
/// in the same database (`tranche_outbox` by default, created by tranche's
/// migrations), for a relay to publish later. A batch is one transaction,
/// so confirmed means committed; the message id is unique, so a replayed
/// message is skipped and counted as a duplicate.
///
/// A table of your own needs the columns `message_id` (TEXT, unique),
/// `job_name` (TEXT), `row_key` and `version` (BIGINT), `payload` (BYTEA or
/// BLOB) and `created_ms` (BIGINT).
#[derive(Clone)]
pub struct OutboxSink {
    store: Store,
    table: Ident,
    job: String,
}

impl OutboxSink {
    /// Writes `job`'s messages to `tranche_outbox` through `store`.
    pub fn new(store: Store, job: &str) -> Self {
        Self {
            store,
            table: Ident::parse("sink.table", "tranche_outbox").expect("a valid name"),
            job: job.to_owned(),
        }
    }

    /// Writes to `table` instead (validated; errors name `sink.table`).
    pub fn with_table(mut self, table: &str) -> Result<Self, ConfigError> {
        self.table = Ident::parse("sink.table", table)?;
        Ok(self)
    }
}

#[async_trait]
impl Sink for OutboxSink {
    fn name(&self) -> &str {
        "outbox"
    }

    async fn check(&self) -> Result<(), SinkError> {
        let info = self
            .store
            .describe_table(&self.table)
            .await
            .map_err(|e| SinkError::from_store("outbox", e))?;
        crate::catalog::check_outbox_table(&self.table, info.as_ref())?;
        Ok(())
    }

    async fn deliver(&self, batch: &[Message]) -> Result<Delivery, SinkError> {
        let (_, duplicates) = self
            .store
            .write_outbox(self.table.clone(), &self.job, batch.to_vec())
            .await
            .map_err(|e| SinkError::from_store("outbox", e))?;
        Ok(Delivery {
            confirmed: batch.len() as u64,
            duplicates,
        })
    }
}
