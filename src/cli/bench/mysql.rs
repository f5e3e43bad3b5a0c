//! The bench's MySQL or MariaDB rows (feature `mysql`): the same table on
//! InnoDB, walked alone with keyset pages on one connection, and read by
//! tranche into the null sink and through the update step.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::sql_types::Text;
use diesel::{Connection, MysqlConnection, QueryableByName, RunQueryDsl};

use tranche::internals::Db;
use tranche::store::{Bind, Sql};

use super::limits::walk_pages;
use super::BenchError;

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Text)]
    v: String,
}

/// Drops and creates the database `name` on the server `admin` names, and
/// returns its URL and the server's name (`MariaDB` or `MySQL`).
pub(crate) fn bench_database(admin: &str, name: &str) -> Result<(String, String), BenchError> {
    let mut conn = MysqlConnection::establish(admin).map_err(|e| BenchError::connect(admin, e))?;
    conn.batch_execute(&format!(
        "DROP DATABASE IF EXISTS {name}; \
         CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    ))
    .map_err(|e| BenchError::step(&format!("creating the database {name}"), e))?;
    let version = diesel::sql_query("SELECT VERSION() AS v")
        .load::<Version>(&mut conn)
        .map_err(|e| BenchError::step("asking the server's version", e))?;
    let server = if version.iter().any(|v| v.v.contains("MariaDB")) {
        "MariaDB"
    } else {
        "MySQL"
    };
    let (path, query) = admin.split_once('?').unwrap_or((admin, ""));
    let (base, _) = path
        .rsplit_once('/')
        .filter(|(b, _)| b.contains("//"))
        .ok_or_else(|| BenchError::Config("mysql: the URL names no database".into()))?;
    let url = match query {
        "" => format!("{base}/{name}"),
        q => format!("{base}/{name}?{q}"),
    };
    Ok((url, server.to_owned()))
}

/// Creates `table` with `rows` rows as [`super::data::seed_postgres`]
/// does (keys 1..=rows, eight keys per order value, a body of `payload`
/// bytes of hex text), numbered by a cross join of digits.
pub(crate) fn seed(url: &str, table: &str, rows: u64, payload: usize) -> Result<(), BenchError> {
    let mut conn = MysqlConnection::establish(url).map_err(|e| BenchError::connect(url, e))?;
    let repeats = payload / 32 + 1;
    let mut digits = 1u32;
    while 10u64.pow(digits) < rows {
        digits += 1;
    }
    let from = (0..digits)
        .map(|i| format!("d d{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let n = (0..digits)
        .map(|i| format!("d{i}.n * {}", 10u64.pow(i)))
        .collect::<Vec<_>>()
        .join(" + ");
    conn.batch_execute(&format!(
        "DROP TABLE IF EXISTS {table};
         CREATE TABLE {table} (
             id BIGINT PRIMARY KEY, at BIGINT NOT NULL,
             version BIGINT NOT NULL DEFAULT 0, body TEXT NOT NULL,
             KEY {table}_at (at, id)) ENGINE = InnoDB;
         DROP TEMPORARY TABLE IF EXISTS d;
         CREATE TEMPORARY TABLE d (n BIGINT PRIMARY KEY);
         INSERT INTO d VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9);
         INSERT INTO {table}
             SELECT g.n, g.n DIV 8, 0, SUBSTRING(REPEAT(MD5(g.n), {repeats}), 1, {payload})
             FROM (SELECT {n} + 1 AS n FROM {from}) g WHERE g.n <= {rows};
         ANALYZE TABLE {table};"
    ))
    .map_err(|e| BenchError::step(&format!("seeding {table} on MySQL"), e))
}

/// Walks the whole table once, one keyset page after another on one
/// connection, as fast as the server serves it: rows read and the time.
/// The comparison past the cursor is spelled out (`at > ? OR (at = ? AND
/// id > ?)`), the form MariaDB seeks the `(at, id)` index with, as tranche
/// does; the statement is kept prepared, as tranche keeps its page reads.
pub(crate) fn keyset_walk(
    url: &str,
    table: &str,
    page_size: usize,
) -> Result<(u64, Duration), BenchError> {
    let mut conn = MysqlConnection::establish(url).map_err(|e| BenchError::connect(url, e))?;
    walk_pages(|after| {
        let sql = Sql::new(format!(
            "SELECT at, id, body FROM {table} WHERE (at > ? OR (at = ? AND id > ?)) \
             ORDER BY at, id LIMIT ?"
        ))
        .bind(Bind::Int(after.0))
        .bind(Bind::Int(after.0))
        .bind(Bind::Int(after.1))
        .bind(Bind::Int(page_size as i64))
        .prepared();
        conn.load(&sql)
            .map_err(|e| BenchError::step("reading a keyset page", e))
    })
}
