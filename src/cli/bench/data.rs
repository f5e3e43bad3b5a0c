//! The bench's table and job: the same rows and the same message size for
//! every measurement.

use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

use super::BenchError;
use tranche::job::{FilterValue, Op};
use tranche::sink::Sink;
use tranche::store::Store;
use tranche::Job;
use tranche::{Message, Scope, Source, SourceRow, Strategy};

/// The table every measurement reads.
pub(crate) const TABLE: &str = "tranche_bench_rows";

diesel::table! {
    /// [`TABLE`], for `COPY ... TO STDOUT`.
    tranche_bench_rows (id) {
        id -> BigInt,
        at -> BigInt,
        version -> BigInt,
        body -> Text,
    }
}

/// Drops and creates the database `name` next to the one `admin` names,
/// and returns its URL. `name` is validated by the caller.
pub(crate) fn bench_database(admin: &str, name: &str) -> Result<String, BenchError> {
    let mut conn = PgConnection::establish(admin).map_err(|e| BenchError::connect(admin, e))?;
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        conn.batch_execute(&sql)
            .map_err(|e| BenchError::step(&format!("creating the database {name}"), e))?;
    }
    let (path, query) = admin.split_once('?').unwrap_or((admin, ""));
    let (base, _) = path
        .rsplit_once('/')
        .filter(|(b, _)| b.contains("//"))
        .ok_or_else(|| BenchError::Config("pg: the URL names no database".into()))?;
    Ok(match query {
        "" => format!("{base}/{name}"),
        q => format!("{base}/{name}?{q}"),
    })
}

/// Creates `table` in PostgreSQL with `rows` rows: keys 1..=rows, an order
/// column shared by eight consecutive keys (so the keyset needs its key to
/// break ties), version 0 and a body of `payload` bytes of hex text.
pub(crate) fn seed_postgres(
    url: &str,
    table: &str,
    rows: u64,
    payload: usize,
) -> Result<(), BenchError> {
    let mut conn = PgConnection::establish(url).map_err(|e| BenchError::connect(url, e))?;
    let repeats = payload / 32 + 1;
    conn.batch_execute(&format!(
        "DROP TABLE IF EXISTS {table};
         CREATE UNLOGGED TABLE {table} (
             id BIGINT PRIMARY KEY, at BIGINT NOT NULL,
             version BIGINT NOT NULL DEFAULT 0, body TEXT NOT NULL);
         INSERT INTO {table}
             SELECT g, g / 8, 0, substr(repeat(md5(g::text), {repeats}), 1, {payload})
             FROM generate_series(1, {rows}) g;
         CREATE INDEX ON {table} (at, id);"
    ))
    .and_then(|()| conn.batch_execute(&format!("VACUUM ANALYZE {table}")))
    .map_err(|e| BenchError::step(&format!("seeding {table}"), e))
}

/// Makes [`TABLE`] in the SQLite store with `rows` rows, as
/// [`seed_postgres`] does.
pub(crate) async fn seed_sqlite(
    store: &Store,
    rows: u64,
    payload: usize,
) -> Result<(), BenchError> {
    let bytes = payload / 2 + 1;
    let sql = format!(
        "DROP TABLE IF EXISTS {TABLE};
         CREATE TABLE {TABLE} (
             id INTEGER PRIMARY KEY, at INTEGER NOT NULL,
             version INTEGER NOT NULL DEFAULT 0, body TEXT NOT NULL);
         WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {rows})
         INSERT INTO {TABLE}
             SELECT n, n / 8, 0, substr(hex(randomblob({bytes})), 1, {payload}) FROM g;
         CREATE INDEX {TABLE}_at ON {TABLE} (at, id);
         ANALYZE;"
    );
    store
        .run(move |c| c.batch(&sql))
        .await
        .map_err(|e| BenchError::step("seeding SQLite", e))
}

/// The order a bench job walks its table in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Walk {
    /// `(at, id)`, over the `(at, id)` index.
    Order,
    /// The key alone, over the primary key.
    Key,
}

/// The bench job `name` over `table`: range partitions over `(at, id)` (or
/// the key alone), one message per row carrying its body as the payload
/// and `version`, for the rows with `id <= upto` when given.
pub(crate) fn job(
    name: &str,
    table: &str,
    sink: Arc<dyn Sink>,
    partitions: u32,
    (upto, walk): (Option<u64>, Walk),
    version: i64,
) -> Result<Job, BenchError> {
    let source = match walk {
        Walk::Order => Source::new(table, "id", "at")?,
        Walk::Key => Source::by_key(table, "id")?,
    };
    let mut source = source.column("body")?;
    if let Some(upto) = upto {
        source = source.filter("id", Op::Le, FilterValue::Int(upto as i64))?;
    }
    let job_name = name.to_owned();
    Ok(Job::builder(name)
        .source(source)
        .strategy(Strategy::Range { partitions })
        .processor(move |row: &SourceRow, _: &Scope| {
            let body = row.text("body")?.unwrap_or_default().to_owned();
            Ok(Some(Message::new(
                &job_name,
                row.key,
                version,
                body.into_bytes(),
            )))
        })
        .sink(sink)
        .build()?)
}

/// Drops `table` (a memory run's own).
pub(crate) fn drop_table(url: &str, table: &str) -> Result<(), BenchError> {
    let mut conn = PgConnection::establish(url).map_err(|e| BenchError::connect(url, e))?;
    conn.batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
        .map_err(|e| BenchError::step(&format!("dropping {table}"), e))
}
