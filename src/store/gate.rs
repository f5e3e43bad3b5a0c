//! The gate every claim passes: the run's state and its cap on active
//! partitions, checked inside the claim's own transaction.

use diesel::sql_types::{BigInt, Integer, Nullable, Text};
use diesel::QueryableByName;

use super::connection::{Bind, Connection, Sql};
use super::{Dialect, StoreError};

#[derive(QueryableByName)]
struct GateRow {
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Nullable<Integer>)]
    max_active_partitions: Option<i32>,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    v: i64,
}

pub(super) fn lock_clause(c: &Connection) -> &'static str {
    match c.dialect() {
        Dialect::Postgres | Dialect::Mysql => " FOR UPDATE",
        Dialect::Sqlite => "",
    }
}

/// Inside a write transaction: locks the run's row (PostgreSQL, MySQL; SQLite's
/// write lock is already held) and says whether a partition may be claimed
/// now: the run is running and, under a cap, fewer of its partitions are
/// claimed under a live lease than the cap.
pub(super) fn may_claim(c: &mut Connection, run_id: i64) -> Result<bool, StoreError> {
    let lock = lock_clause(c);
    let gate: Vec<GateRow> = c.load(
        &Sql::new(format!(
            "SELECT state, max_active_partitions FROM tranche_runs WHERE id = ?{lock}"
        ))
        .bind(Bind::Int(run_id)),
    )?;
    let Some(gate) = gate.into_iter().next() else {
        return Ok(false);
    };
    if gate.state != "running" {
        return Ok(false);
    }
    let Some(cap) = gate.max_active_partitions else {
        return Ok(true);
    };
    Ok(live_claims(c, run_id)? < i64::from(cap))
}

fn live_claims(c: &mut Connection, run_id: i64) -> Result<i64, StoreError> {
    let now = c.dialect().now_ms();
    let n: Vec<Count> = c.load(
        &Sql::new(format!(
            "SELECT COUNT(*) AS v FROM tranche_partitions \
             WHERE run_id = ? AND state = 'claimed' AND lease_expires_ms >= {now}"
        ))
        .bind(Bind::Int(run_id)),
    )?;
    Ok(n.first().map_or(0, |r| r.v))
}
