//! Connections, pools and the two SQL dialects.
//!
//! Queries are written once, as [`Sql`] text with `?` placeholders, against
//! the small [`Db`] trait that both diesel connections implement; dialect
//! differences (placeholders, the database clock, write transactions) live
//! here and nowhere else.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::Pg;
use diesel::query_builder::{BoxedSqlQuery, SqlQuery};
use diesel::query_dsl::RunQueryDsl;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, PooledConnection};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::sqlite::Sqlite;
use diesel::{PgConnection, QueryableByName, SqliteConnection};

use super::StoreError;
use crate::error::redact_url;

/// Which database a store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// SQLite (the embedded default).
    Sqlite,
}

impl Dialect {
    /// The dialect a database URL names: `postgres://` or `postgresql://`
    /// for PostgreSQL, anything else (`sqlite://path`, a bare path) SQLite.
    pub fn of_url(url: &str) -> Self {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        }
    }

    /// The database clock in epoch milliseconds, as SQL. Leases are decided by
    /// this clock alone, so instances with skewed clocks still agree.
    pub fn now_ms(self) -> &'static str {
        match self {
            Dialect::Postgres => "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
            Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        }
    }
}

/// A value bound to a `?` placeholder.
#[derive(Clone, Debug, PartialEq)]
pub enum Bind {
    /// A BIGINT.
    Int(i64),
    /// A nullable BIGINT.
    OptInt(Option<i64>),
    /// A TEXT.
    Text(String),
    /// A nullable TEXT.
    OptText(Option<String>),
    /// Bytes (PostgreSQL `BYTEA`, SQLite `BLOB`).
    Bytes(Vec<u8>),
}

/// SQL text with `?` placeholders and the values bound to them, in order.
#[derive(Clone, Debug, Default)]
pub struct Sql {
    text: String,
    binds: Vec<Bind>,
}

impl Sql {
    /// SQL text with `?` placeholders (and no `?` anywhere else).
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            binds: Vec::new(),
        }
    }

    /// Binds the next placeholder.
    pub fn bind(mut self, value: Bind) -> Self {
        self.binds.push(value);
        self
    }

    /// Appends text and its binds.
    pub fn push(&mut self, text: &str, binds: impl IntoIterator<Item = Bind>) {
        self.text.push_str(text);
        self.binds.extend(binds);
    }

    pub(crate) fn text_ref(&self) -> &str {
        &self.text
    }

    pub(crate) fn binds_ref(&self) -> &[Bind] {
        &self.binds
    }

    /// The text as PostgreSQL wants it (`$1`, `$2`, ...).
    fn numbered(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 16);
        let mut n = 0;
        for ch in self.text.chars() {
            if ch == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(ch);
            }
        }
        out
    }
}

macro_rules! bind_all {
    ($query:expr, $binds:expr) => {{
        let mut q = $query;
        for b in $binds {
            q = match b {
                Bind::Int(v) => q.bind::<BigInt, _>(*v),
                Bind::OptInt(v) => q.bind::<Nullable<BigInt>, _>(*v),
                Bind::Text(v) => q.bind::<Text, _>(v.clone()),
                Bind::OptText(v) => q.bind::<Nullable<Text>, _>(v.clone()),
                Bind::Bytes(v) => q.bind::<diesel::sql_types::Binary, _>(v.clone()),
            };
        }
        q
    }};
}

/// What the store needs of a diesel connection; implemented for
/// [`PgConnection`] and [`SqliteConnection`].
pub trait Db: diesel::Connection {
    /// The connection's dialect.
    const DIALECT: Dialect;

    /// Runs a statement, returning the number of rows it touched.
    fn exec(&mut self, sql: &Sql) -> diesel::QueryResult<usize>;

    /// Runs a query and loads its rows.
    fn load<T>(&mut self, sql: &Sql) -> diesel::QueryResult<Vec<T>>
    where
        T: QueryableByName<Self::Backend> + 'static;
}

impl Db for PgConnection {
    const DIALECT: Dialect = Dialect::Postgres;

    fn exec(&mut self, sql: &Sql) -> diesel::QueryResult<usize> {
        let q: BoxedSqlQuery<'_, Pg, SqlQuery> = diesel::sql_query(sql.numbered()).into_boxed();
        bind_all!(q, &sql.binds).execute(self)
    }

    fn load<T>(&mut self, sql: &Sql) -> diesel::QueryResult<Vec<T>>
    where
        T: QueryableByName<Pg> + 'static,
    {
        let q: BoxedSqlQuery<'_, Pg, SqlQuery> = diesel::sql_query(sql.numbered()).into_boxed();
        bind_all!(q, &sql.binds).load(self)
    }
}

impl Db for SqliteConnection {
    const DIALECT: Dialect = Dialect::Sqlite;

    fn exec(&mut self, sql: &Sql) -> diesel::QueryResult<usize> {
        let q: BoxedSqlQuery<'_, Sqlite, SqlQuery> =
            diesel::sql_query(sql.text.clone()).into_boxed();
        bind_all!(q, &sql.binds).execute(self)
    }

    fn load<T>(&mut self, sql: &Sql) -> diesel::QueryResult<Vec<T>>
    where
        T: QueryableByName<Sqlite> + 'static,
    {
        let q: BoxedSqlQuery<'_, Sqlite, SqlQuery> =
            diesel::sql_query(sql.text.clone()).into_boxed();
        bind_all!(q, &sql.binds).load(self)
    }
}

/// A pooled connection to either backend, as handed to code that runs on the
/// database executor (e.g. a job's identification query).
pub enum Connection {
    /// PostgreSQL.
    Postgres(PooledConnection<ConnectionManager<PgConnection>>),
    /// SQLite.
    Sqlite(PooledConnection<ConnectionManager<SqliteConnection>>),
}

/// Runs `$body` with `$c` bound to the concrete diesel connection inside a
/// [`Connection`], compiling it once per backend.
macro_rules! with_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::store::Connection::Postgres(pooled) => {
                let $c: &mut ::diesel::PgConnection = &mut *pooled;
                $body
            }
            $crate::store::Connection::Sqlite(pooled) => {
                let $c: &mut ::diesel::SqliteConnection = &mut *pooled;
                $body
            }
        }
    };
}

impl Connection {
    /// The connection's dialect.
    pub fn dialect(&self) -> Dialect {
        match self {
            Connection::Postgres(_) => Dialect::Postgres,
            Connection::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// Runs a statement written with `?` placeholders.
    pub fn execute(&mut self, sql: &Sql) -> Result<usize, StoreError> {
        with_conn!(self, |c| c.exec(sql)).map_err(|e| StoreError::query("execute", e))
    }

    /// Runs a query written with `?` placeholders and loads its rows.
    pub fn load<T>(&mut self, sql: &Sql) -> Result<Vec<T>, StoreError>
    where
        T: QueryableByName<Pg> + QueryableByName<Sqlite> + 'static,
    {
        with_conn!(self, |c| c.load(sql)).map_err(|e| StoreError::query("load", e))
    }

    /// Runs statements without binds (DDL, pragmas, transaction control).
    pub fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        with_conn!(self, |c| c.batch_execute(sql)).map_err(|e| StoreError::query("batch", e))
    }

    /// Runs `f` in a transaction that writes, committing when it returns
    /// `Ok` and rolling back otherwise. SQLite takes the write lock up front
    /// (`BEGIN IMMEDIATE`) so two writers never fail on a lock upgrade.
    pub fn write_transaction<T, E>(
        &mut self,
        f: impl FnOnce(&mut Connection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        self.batch(match self.dialect() {
            Dialect::Postgres => "BEGIN",
            Dialect::Sqlite => "BEGIN IMMEDIATE",
        })?;
        match f(self) {
            Ok(v) => {
                self.batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                // A failed rollback leaves a broken connection, which the pool
                // discards when it next checks it.
                let _ = self.batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// SQLite settings applied to every pooled connection: WAL so readers and the
/// writer do not block each other, a busy timeout instead of instant
/// "database is locked" errors, foreign keys on, and a 4 MiB page cache per
/// connection (memory stays bounded by the pool, not by the table; a larger
/// cache or mmap measured no faster on the demo).
#[derive(Debug)]
struct SqlitePragmas;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
             PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON; \
             PRAGMA cache_size = -4096;",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// PostgreSQL session settings: UTC, so a `timestamp` order column compares
/// with tranche's cursors the same way on every instance, whatever the
/// server's or role's default time zone. Also names the session after the
/// instance (`application_name`), so an operator sees in
/// `pg_stat_activity` which instance holds a connection.
#[derive(Debug)]
struct PgSession {
    application_name: Option<String>,
}

impl CustomizeConnection<PgConnection, diesel::r2d2::Error> for PgSession {
    fn on_acquire(&self, conn: &mut PgConnection) -> Result<(), diesel::r2d2::Error> {
        let mut sql = String::from("SET TIME ZONE 'UTC'");
        if let Some(name) = &self.application_name {
            // A literal, quotes doubled; PostgreSQL keeps the first 63 bytes.
            let clean: String = name
                .chars()
                .filter(|c| !c.is_control())
                .take(63)
                .collect::<String>()
                .replace('\'', "''");
            sql.push_str(&format!("; SET application_name = '{clean}'"));
        }
        conn.batch_execute(&sql)
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// A pool of connections to one database.
#[derive(Clone)]
pub(crate) enum Pool {
    Postgres(diesel::r2d2::Pool<ConnectionManager<PgConnection>>),
    Sqlite(diesel::r2d2::Pool<ConnectionManager<SqliteConnection>>),
}

impl Pool {
    /// Builds a pool of `size` connections to `url`, failing (with the URL
    /// redacted) when the database cannot be reached within `timeout`.
    pub(crate) fn connect(
        url: &str,
        size: u32,
        timeout: Duration,
        application_name: Option<String>,
    ) -> Result<Self, StoreError> {
        let connect_err = |e: diesel::r2d2::PoolError| StoreError::Connect {
            url: redact_url(url),
            reason: e.to_string(),
        };
        Ok(match Dialect::of_url(url) {
            Dialect::Postgres => Pool::Postgres(
                diesel::r2d2::Pool::builder()
                    .max_size(size)
                    .min_idle(Some(1))
                    .connection_timeout(timeout)
                    .connection_customizer(Box::new(PgSession { application_name }))
                    .build(ConnectionManager::new(url))
                    .map_err(connect_err)?,
            ),
            Dialect::Sqlite => Pool::Sqlite(
                diesel::r2d2::Pool::builder()
                    .max_size(size)
                    .min_idle(Some(1))
                    .connection_timeout(timeout)
                    .connection_customizer(Box::new(SqlitePragmas))
                    .build(ConnectionManager::new(sqlite_path(url)))
                    .map_err(connect_err)?,
            ),
        })
    }

    /// Takes a connection from the pool.
    pub(crate) fn get(&self) -> Result<Connection, StoreError> {
        match self {
            Pool::Postgres(p) => p.get().map(Connection::Postgres),
            Pool::Sqlite(p) => p.get().map(Connection::Sqlite),
        }
        .map_err(|e| StoreError::Pool(e.to_string()))
    }

    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Pool::Postgres(_) => Dialect::Postgres,
            Pool::Sqlite(_) => Dialect::Sqlite,
        }
    }
}

/// The file path of an SQLite URL (`sqlite://path` or a bare path).
pub(crate) fn sqlite_path(url: &str) -> &str {
    url.strip_prefix("sqlite://").unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        let sql = Sql::new("SELECT ? WHERE a = ? AND b IN (?, ?)");
        assert_eq!(sql.numbered(), "SELECT $1 WHERE a = $2 AND b IN ($3, $4)");
    }

    #[test]
    fn urls_choose_the_dialect() {
        assert_eq!(Dialect::of_url("postgres://h/db"), Dialect::Postgres);
        assert_eq!(Dialect::of_url("postgresql://h/db"), Dialect::Postgres);
        assert_eq!(Dialect::of_url("sqlite://x.db"), Dialect::Sqlite);
        assert_eq!(Dialect::of_url("x.db"), Dialect::Sqlite);
        assert_eq!(sqlite_path("sqlite://x.db"), "x.db");
    }
}
