use async_trait::async_trait;

use super::{Delivery, Message, Sink, SinkError};
use crate::model::{ConfigError, Ident};
use crate::store::{Bind, Connection, Sql, Store, StoreError};

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
            .run({
                let (table, job, batch) = (self.table.clone(), self.job.clone(), batch.to_vec());
                move |c| write_outbox(c, &table, &job, &batch)
            })
            .await
            .map_err(|e| SinkError::from_store("outbox", e))?;
        Ok(Delivery {
            confirmed: batch.len() as u64,
            duplicates,
        })
    }
}

/// Rows per outbox insert statement (6 binds each).
const OUTBOX_CHUNK: usize = 200;

/// Writes messages to an outbox table in one transaction, once each:
/// a message id already there is skipped. Returns `(written, duplicates)`.
fn write_outbox(
    c: &mut Connection,
    table: &Ident,
    job: &str,
    batch: &[Message],
) -> Result<(u64, u64), StoreError> {
    let now = c.dialect().now_ms();
    let (insert, skip) = c.dialect().insert_skipping("message_id");
    let table = c.dialect().quote(table);
    let written = c.write_transaction(|c| {
        let mut written = 0u64;
        for chunk in batch.chunks(OUTBOX_CHUNK) {
            let mut sql = Sql::new(format!(
                "{insert} {table} (message_id, job_name, row_key, version, payload, created_ms) VALUES "
            ));
            for (i, m) in chunk.iter().enumerate() {
                sql.push(
                    &format!("{}(?, ?, ?, ?, ?, {now})", if i == 0 { "" } else { ", " }),
                    [
                        Bind::Text(m.id.clone()),
                        Bind::Text(job.to_owned()),
                        Bind::Int(m.key),
                        Bind::Int(m.version),
                        Bind::Bytes(m.payload.clone()),
                    ],
                );
            }
            sql.push(&skip, []);
            written += c.execute(&sql)? as u64;
        }
        Ok::<_, StoreError>(written)
    })?;
    Ok((written, batch.len() as u64 - written))
}
