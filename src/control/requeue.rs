//! Requeueing dead letters: their rows read again by key from the source,
//! through the job's processor and sink, each outcome recorded.

use std::collections::HashMap;

use serde::Serialize;

use super::{ControlError, Operator};
use crate::job::Job;
use crate::model::{Message, Scope};
use crate::store::AuditEntry;

/// Keys read from the source per query, and messages per delivery.
const BATCH: usize = 500;

/// What a requeue of a run's dead letters did, row by row counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RequeueReport {
    /// The run whose dead letters were requeued.
    pub run_id: i64,
    /// Rows read, processed and confirmed by the sink: their dead letters
    /// are deleted.
    pub delivered: u64,
    /// Rows the processor now skips (returns no message for): resolved,
    /// their dead letters deleted.
    pub skipped: u64,
    /// Rows the processor still rejects, or with a column that still cannot
    /// be read: their dead letters stay, with the new reason.
    pub still_failing: u64,
    /// Keys the source no longer has among the rows a run would read
    /// (deleted, filtered out, or a key or order value still unreadable):
    /// their dead letters stay as they were.
    pub not_found: u64,
    /// Dead letters without a key (the key itself was unreadable), which
    /// cannot be read again: they stay.
    pub without_key: u64,
}

impl std::fmt::Display for RequeueReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} delivered, {} skipped, {} still failing, {} not found, {} without a key",
            self.delivered, self.skipped, self.still_failing, self.not_found, self.without_key
        )
    }
}

impl Operator {
    /// Requeues the dead letters of `job`'s run (its active run, or its
    /// latest): see [`crate::RuntimeHandle::requeue_dead_letters`]. `job`
    /// has passed the catalog check.
    pub(crate) async fn requeue(
        &self,
        job: &Job,
        run_id: Option<i64>,
    ) -> Result<RequeueReport, ControlError> {
        let run = self.pick(&job.name, run_id, true).await?;
        let letters = self.store.dead_letters(run.id).await?;
        let mut report = RequeueReport {
            run_id: run.id,
            ..RequeueReport::default()
        };
        // The scope each row was read in: that of its partition.
        let mut scopes: HashMap<Option<i64>, Scope> = HashMap::new();
        let mut by_scope: HashMap<Option<i64>, Vec<i64>> = HashMap::new();
        for letter in &letters {
            match letter.row_key {
                Some(key) => by_scope.entry(letter.partition_id).or_default().push(key),
                None => report.without_key += 1,
            }
        }
        for (partition, keys) in by_scope {
            let scope = match partition {
                Some(id) => match scopes.get(&partition) {
                    Some(s) => s.clone(),
                    None => {
                        let s = self.store.partition(id).await?.scope;
                        scopes.insert(partition, s.clone());
                        s
                    }
                },
                None => Scope::whole(),
            };
            for chunk in keys.chunks(BATCH) {
                self.requeue_chunk(job, run.id, &scope, chunk, &mut report)
                    .await?;
            }
        }
        self.audit(AuditEntry::new(
            &job.name,
            Some(run.id),
            "requeue-dead-letters",
            report.to_string(),
            &self.actor,
        ))
        .await?;
        Ok(report)
    }

    async fn requeue_chunk(
        &self,
        job: &Job,
        run_id: i64,
        scope: &Scope,
        keys: &[i64],
        report: &mut RequeueReport,
    ) -> Result<(), ControlError> {
        let page = self
            .store
            .rows_by_key(&job.source, scope, keys.to_vec())
            .await?;
        let mut seen = std::collections::HashSet::new();
        let mut messages: Vec<Message> = Vec::new();
        let mut resolved: Vec<i64> = Vec::new();
        for (at, why) in &page.unreadable {
            seen.insert(at.key);
            report.still_failing += 1;
            self.store
                .set_dead_letter_reason(run_id, at.key, why)
                .await?;
        }
        for row in &page.rows {
            seen.insert(row.key);
            match crate::runtime::process_row(job, row, scope) {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => {
                    report.skipped += 1;
                    resolved.push(row.key);
                }
                Err(poison) => {
                    report.still_failing += 1;
                    self.store
                        .set_dead_letter_reason(run_id, row.key, &poison.0)
                        .await?;
                }
            }
        }
        report.not_found += keys.iter().filter(|k| !seen.contains(k)).count() as u64;
        if !messages.is_empty() {
            // Confirmed as a whole or not at all: on an error every dead
            // letter of the batch stays.
            job.sink.deliver(&messages).await?;
            report.delivered += messages.len() as u64;
            resolved.extend(messages.iter().map(|m| m.key));
        }
        for key in resolved {
            self.store.resolve_dead_letter(run_id, key).await?;
        }
        Ok(())
    }
}
