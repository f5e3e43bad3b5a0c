//! The systems tranche replaces: a worker that loads a page
//! of entities and sends them one by one, waiting for each confirmation
//! before the next, and the quick fix that ran N such workers, worker k
//! taking the rows with `id % N = k`, filtered in SQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::{Connection, PgConnection};

use super::limits::page;
use super::BenchError;
use tranche::sink::Sink;
use tranche::Message;

/// What a legacy measurement got through before it ended or ran out of
/// time.
pub(crate) struct Legacy {
    /// Rows confirmed.
    pub(crate) rows: u64,
    /// Time taken.
    pub(crate) elapsed: Duration,
}

/// What the legacy workers read and where they send it.
#[derive(Clone)]
pub(crate) struct Plan {
    /// Database URL.
    pub(crate) url: String,
    /// The table.
    pub(crate) table: String,
    /// Where each row goes, alone.
    pub(crate) sink: Arc<dyn Sink>,
    /// The job name in message ids.
    pub(crate) job: String,
    /// The version in message ids (the bench run's stamp, so that ids of
    /// one bench run are never those of an earlier one).
    pub(crate) version: i64,
    /// Rows loaded at a time.
    pub(crate) page_size: usize,
    /// Only the rows with `id <= upto`.
    pub(crate) upto: Option<u64>,
}

/// One legacy worker: pages of `page_size` rows (of `id % n = k` when
/// `modulo` is given), each row sent alone and confirmed before the next,
/// until the rows or the time (`deadline`) run out.
async fn worker(
    plan: Plan,
    modulo: Option<(u64, u64)>,
    deadline: Instant,
) -> Result<u64, BenchError> {
    let url = &plan.url;
    let mut conn = Some(PgConnection::establish(url).map_err(|e| BenchError::connect(url, e))?);
    let mut after = (i64::MIN, i64::MIN);
    let mut sent = 0u64;
    while Instant::now() < deadline {
        let (table, page_size, upto) = (plan.table.clone(), plan.page_size, plan.upto);
        let mut c = conn.take().expect("the connection is back");
        let (c, rows) = tokio::task::spawn_blocking(move || {
            let rows = page(&mut c, &table, after, page_size, upto, modulo);
            (c, rows)
        })
        .await
        .map_err(|e| BenchError::Config(format!("a legacy worker's read panicked: {e}")))?;
        conn = Some(c);
        let rows = rows?;
        let Some(last) = rows.last() else { break };
        after = (last.at, last.id);
        for row in rows {
            if Instant::now() >= deadline {
                return Ok(sent);
            }
            let message = Message::new(&plan.job, row.id, plan.version, row.body.into_bytes());
            plan.sink
                .deliver(std::slice::from_ref(&message))
                .await
                .map_err(|e| BenchError::step("a legacy confirmation", e))?;
            sent += 1;
        }
    }
    Ok(sent)
}

/// The sequential worker (`workers` = 1, no modulo) or the modulo workers (`workers`
/// modulo workers at once), stopped at `budget` if not done by then.
pub(crate) async fn run(plan: &Plan, workers: u64, budget: Duration) -> Result<Legacy, BenchError> {
    let started = Instant::now();
    let deadline = started + budget;
    let tasks: Vec<_> = (0..workers)
        .map(|k| {
            let modulo = (workers > 1).then_some((workers, k));
            tokio::spawn(worker(plan.clone(), modulo, deadline))
        })
        .collect();
    let mut rows = 0;
    for task in tasks {
        rows += task
            .await
            .map_err(|e| BenchError::Config(format!("a legacy worker panicked: {e}")))??;
    }
    Ok(Legacy {
        rows,
        elapsed: started.elapsed(),
    })
}
