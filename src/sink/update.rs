use async_trait::async_trait;

use super::{Delivery, Message, Sink, SinkError};
use crate::model::{ConfigError, Ident};
use crate::store::{Bind, Connection, Sql, Store, StoreError};

/// The in-process update step, the embedded default: applies each message
/// to the database directly, advancing the row's version column to the
/// message's version only when it is lower, so replays change nothing.
///
/// A batch is one transaction: confirmed means committed.
#[derive(Clone)]
pub struct UpdateSink {
    store: Store,
    spec: UpdateSpec,
}

impl UpdateSpec {
    /// Advances `version_column` of `table`'s row keyed by `key_column`;
    /// names are validated (errors name `sink.table`, `sink.key_column`,
    /// `sink.version_column`).
    pub fn new(table: &str, key_column: &str, version_column: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            table: Ident::parse("sink.table", table)?,
            key_column: Ident::parse("sink.key_column", key_column)?,
            version_column: Ident::parse("sink.version_column", version_column)?,
        })
    }
}

impl UpdateSink {
    /// Updates `spec.table` through `store`.
    pub fn new(store: Store, spec: UpdateSpec) -> Self {
        Self { store, spec }
    }
}

#[async_trait]
impl Sink for UpdateSink {
    fn name(&self) -> &str {
        "update"
    }

    async fn check(&self) -> Result<(), SinkError> {
        let spec = &self.spec;
        let info = self
            .store
            .describe_table(&spec.table)
            .await
            .map_err(|e| SinkError::from_store("update", e))?;
        crate::catalog::check_update_table(
            &spec.table,
            &spec.key_column,
            &spec.version_column,
            info.as_ref(),
        )?;
        Ok(())
    }

    async fn deliver(&self, batch: &[Message]) -> Result<Delivery, SinkError> {
        let updates: Vec<(i64, i64)> = batch.iter().map(|m| (m.key, m.version)).collect();
        let (_, unchanged) = self
            .store
            .run({
                let spec = self.spec.clone();
                move |c: &mut Connection| c.write_transaction(|c| apply_updates(c, &spec, &updates))
            })
            .await
            .map_err(|e| SinkError::from_store("update", e))?;
        Ok(Delivery {
            confirmed: batch.len() as u64,
            duplicates: unchanged,
        })
    }
}

/// The in-process update step: advance `version_column` of the row with the
/// message's key to the message's version, only if it is lower. Applying a
/// message twice changes nothing the second time.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct UpdateSpec {
    /// Table to update.
    pub table: Ident,
    /// Its unique key column (the message key).
    pub key_column: Ident,
    /// The version column to advance.
    pub version_column: Ident,
}

/// Keys per `IN (...)` list.
const UPDATE_CHUNK: usize = 500;

/// Applies `updates` (key, version) inside the caller's transaction;
/// returns `(rows changed, updates that changed nothing)`.
pub(crate) fn apply_updates(
    c: &mut Connection,
    spec: &UpdateSpec,
    updates: &[(i64, i64)],
) -> Result<(u64, u64), StoreError> {
    let mut by_version: Vec<(i64, i64)> = updates.iter().map(|&(k, v)| (v, k)).collect();
    by_version.sort_unstable();
    let mut applied = 0u64;
    for group in by_version.chunk_by(|a, b| a.0 == b.0) {
        let version = group[0].0;
        for chunk in group.chunks(UPDATE_CHUNK) {
            let marks = vec!["?"; chunk.len()].join(", ");
            let d = c.dialect();
            let mut sql = Sql::new(format!(
                "UPDATE {t} SET {v} = ? WHERE {v} < ? AND {k} IN ({marks})",
                t = d.quote(&spec.table),
                v = d.quote(&spec.version_column),
                k = d.quote(&spec.key_column),
            ))
            .bind(Bind::Int(version))
            .bind(Bind::Int(version));
            sql.push("", chunk.iter().map(|&(_, k)| Bind::Int(k)));
            if chunk.len() == UPDATE_CHUNK {
                // Full chunks share one text: kept prepared.
                sql = sql.prepared();
            }
            applied += c.execute(&sql)? as u64;
        }
    }
    Ok((applied, updates.len() as u64 - applied))
}
