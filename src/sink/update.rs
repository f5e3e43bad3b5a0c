use async_trait::async_trait;

use super::{Delivery, Message, Sink, SinkError};
use crate::store::{Store, UpdateSpec};

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
        let updates = batch.iter().map(|m| (m.key, m.version)).collect();
        let (_, unchanged) = self
            .store
            .apply_updates(self.spec.clone(), updates)
            .await
            .map_err(|e| SinkError::from_store("update", e))?;
        Ok(Delivery {
            confirmed: batch.len() as u64,
            duplicates: unchanged,
        })
    }
}
