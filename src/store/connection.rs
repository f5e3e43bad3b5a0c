//! Connections, pools and the SQL dialects.
//!
//! Queries are written once, as [`Sql`] text with `?` placeholders, against
//! the small [`Db`] trait that every diesel connection implements; dialect
//! differences (placeholders, the database clock, casts, identifier quotes,
//! write transactions) live here, and the few statements that must be
//! written another way on one database branch on [`Dialect`] where they are.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::pg::Pg;
use diesel::query_dsl::RunQueryDsl;
use diesel::r2d2::{
    ConnectionManager, CustomizeConnection, ManageConnection, PooledConnection, R2D2Connection,
};
use diesel::sql_types::{BigInt, Binary, Nullable, Text};
use diesel::sqlite::Sqlite;
use diesel::{PgConnection, QueryableByName, SqliteConnection};

use super::DatabaseUrl;
use super::StoreError;

/// Which database a store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// SQLite (the embedded default).
    Sqlite,
    /// MySQL 8.0+ or MariaDB 10.6+ (feature `mysql`).
    Mysql,
}

impl Dialect {
    /// The database clock in epoch milliseconds, as SQL. Leases are decided by
    /// this clock alone, so instances with skewed clocks still agree.
    pub fn now_ms(self) -> &'static str {
        match self {
            Dialect::Postgres => "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
            Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            // NOW(3) is the statement's start, to the millisecond.
            Dialect::Mysql => "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
        }
    }

    /// The type a `CAST` names for a 64-bit integer.
    pub fn bigint(self) -> &'static str {
        match self {
            Dialect::Postgres | Dialect::Sqlite => "BIGINT",
            Dialect::Mysql => "SIGNED",
        }
    }

    /// The type a `CAST` names for text.
    pub fn text(self) -> &'static str {
        match self {
            Dialect::Postgres | Dialect::Sqlite => "TEXT",
            Dialect::Mysql => "CHAR",
        }
    }

    /// An identifier as SQL: each part double-quoted, or backticked on
    /// MySQL (whose double quotes make strings, unless `ANSI_QUOTES` is
    /// set).
    pub fn quote(self, ident: &crate::model::Ident) -> String {
        match self {
            Dialect::Postgres | Dialect::Sqlite => ident.quoted(),
            Dialect::Mysql => ident.backticked(),
        }
    }

    /// `INSERT` that skips a row whose unique `key` is taken, as the verb
    /// and the clause that ends the statement: `ON CONFLICT (key) DO
    /// NOTHING`, or MySQL's `INSERT IGNORE` (the rows written are counted
    /// the same way; strict mode still refuses a value that does not fit,
    /// IGNORE turning only that into a warning, so tranche writes it only
    /// into its own tables, whose columns are wide enough for what they
    /// hold).
    pub(crate) fn insert_skipping(self, key: &str) -> (&'static str, String) {
        match self {
            Dialect::Postgres | Dialect::Sqlite => {
                ("INSERT INTO", format!(" ON CONFLICT ({key}) DO NOTHING"))
            }
            Dialect::Mysql => ("INSERT IGNORE INTO", String::new()),
        }
    }

    /// The lock a claim's inner `SELECT` takes on the rows it picks:
    /// `FOR UPDATE SKIP LOCKED`, so concurrent claimers pass each other
    /// by; nothing on SQLite, whose write transactions are serial.
    pub(crate) fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Postgres | Dialect::Mysql => "FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        }
    }
}

/// A value bound to a `?` placeholder.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
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
///
/// A statement marked [`Sql::prepared`] is kept prepared on its connection,
/// keyed by its text, and executed again with new values: the database
/// parses it once, and PostgreSQL may settle on one plan for it instead of
/// planning every execution. Statements run on every page (page reads,
/// checkpoints) are marked; those whose text depends on the data (an
/// `IN (...)` list as long as a batch) are not, so a connection keeps a
/// bounded number of them.
#[derive(Clone, Debug, Default)]
pub struct Sql {
    text: String,
    binds: Vec<Bind>,
    prepared: bool,
}

impl Sql {
    /// SQL text with `?` placeholders (and no `?` anywhere else).
    pub fn new(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            binds: Vec::new(),
            prepared: false,
        }
    }

    /// Keeps the statement prepared on its connection (see [`Sql`]). Only
    /// for text drawn from a small set: each distinct text stays prepared
    /// for the connection's life.
    pub fn prepared(mut self) -> Self {
        self.prepared = true;
        self
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
}

/// An [`Sql`] as a diesel query: its text with each `?` replaced by the
/// backend's placeholder (`$n` on PostgreSQL) as its value is bound, and
/// safe to keep prepared when the [`Sql`] says so.
struct Query<'a>(&'a Sql);

impl diesel::query_builder::QueryId for Query<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for Query<'_> {
    type SqlType = diesel::sql_types::Untyped;
}

impl<Conn> RunQueryDsl<Conn> for Query<'_> {}

/// [`QueryFragment`](diesel::query_builder::QueryFragment) for each backend.
macro_rules! query_fragment {
    ($backend:ty) => {
        impl diesel::query_builder::QueryFragment<$backend> for Query<'_> {
            fn walk_ast<'b>(
                &'b self,
                mut out: diesel::query_builder::AstPass<'_, 'b, $backend>,
            ) -> diesel::QueryResult<()> {
                let sql = self.0;
                if !sql.prepared {
                    out.unsafe_to_cache_prepared();
                }
                let mut pieces = sql.text.split('?');
                out.push_sql(pieces.next().unwrap_or_default());
                let mut binds = sql.binds.iter();
                for piece in pieces {
                    let Some(bind) = binds.next() else {
                        return Err(placeholders_mismatch(sql));
                    };
                    match bind {
                        Bind::Int(v) => out.push_bind_param::<BigInt, _>(v)?,
                        Bind::OptInt(v) => out.push_bind_param::<Nullable<BigInt>, _>(v)?,
                        Bind::Text(v) => out.push_bind_param::<Text, _>(v)?,
                        Bind::OptText(v) => out.push_bind_param::<Nullable<Text>, _>(v)?,
                        Bind::Bytes(v) => out.push_bind_param::<Binary, _>(v)?,
                    }
                    out.push_sql(piece);
                }
                if binds.next().is_some() {
                    return Err(placeholders_mismatch(sql));
                }
                Ok(())
            }
        }
    };
}

query_fragment!(Pg);
query_fragment!(Sqlite);
#[cfg(feature = "mysql")]
query_fragment!(diesel::mysql::Mysql);

fn placeholders_mismatch(sql: &Sql) -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError(
        format!(
            "{} placeholders but {} values in: {}",
            sql.text.matches('?').count(),
            sql.binds.len(),
            sql.text
        )
        .into(),
    )
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

    /// A failed statement's error, with what the server knows of it that
    /// the driver left out (MySQL's error code).
    fn classify(&mut self, e: diesel::result::Error) -> diesel::result::Error {
        e
    }
}

impl Db for PgConnection {
    const DIALECT: Dialect = Dialect::Postgres;

    fn exec(&mut self, sql: &Sql) -> diesel::QueryResult<usize> {
        Query(sql).execute(self)
    }

    fn load<T>(&mut self, sql: &Sql) -> diesel::QueryResult<Vec<T>>
    where
        T: QueryableByName<Pg> + 'static,
    {
        Query(sql).load(self)
    }
}

impl Db for SqliteConnection {
    const DIALECT: Dialect = Dialect::Sqlite;

    fn exec(&mut self, sql: &Sql) -> diesel::QueryResult<usize> {
        Query(sql).execute(self)
    }

    fn load<T>(&mut self, sql: &Sql) -> diesel::QueryResult<Vec<T>>
    where
        T: QueryableByName<Sqlite> + 'static,
    {
        Query(sql).load(self)
    }
}

#[cfg(feature = "mysql")]
impl Db for diesel::MysqlConnection {
    const DIALECT: Dialect = Dialect::Mysql;

    fn exec(&mut self, sql: &Sql) -> diesel::QueryResult<usize> {
        let result = Query(sql).execute(self);
        result.map_err(|e| self.classify(e))
    }

    fn load<T>(&mut self, sql: &Sql) -> diesel::QueryResult<Vec<T>>
    where
        T: QueryableByName<diesel::mysql::Mysql> + 'static,
    {
        let result = Query(sql).load(self);
        result.map_err(|e| self.classify(e))
    }

    fn classify(&mut self, e: diesel::result::Error) -> diesel::result::Error {
        super::mysql::classified(self, e)
    }
}

/// A diesel connection as the pool keeps it: it dereferences to the
/// connection, and remembers what the pool needs to know of it.
pub(crate) struct Pooled<C> {
    conn: C,
    /// Its state is unknown (a rollback failed): the pool drops it instead
    /// of handing it out again. (A link the server closed is caught by
    /// diesel, whose connection then reports itself broken.)
    lost: bool,
    /// When it last went back to the pool.
    returned: Instant,
}

impl<C> std::ops::Deref for Pooled<C> {
    type Target = C;

    fn deref(&self) -> &C {
        &self.conn
    }
}

impl<C> std::ops::DerefMut for Pooled<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.conn
    }
}

/// How long a connection may rest in the pool and still be handed out
/// without a round trip to check it first.
const FRESH: Duration = Duration::from_secs(5);

/// r2d2's manager for [`Pooled`] diesel connections. A connection is
/// checked (`SELECT 1`) on checkout only when it rested in the pool longer
/// than 5 s; one in steady use is not, which saves a round trip on
/// every query. A connection whose link failed, or whose rollback did, is
/// dropped when it goes back, so it is not handed out again.
pub(crate) struct Manager<C: R2D2Connection + 'static> {
    inner: ConnectionManager<C>,
}

impl<C: R2D2Connection + Send + 'static> ManageConnection for Manager<C> {
    type Connection = Pooled<C>;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<Pooled<C>, diesel::r2d2::Error> {
        Ok(Pooled {
            conn: self.inner.connect()?,
            lost: false,
            returned: Instant::now(),
        })
    }

    fn is_valid(&self, c: &mut Pooled<C>) -> Result<(), diesel::r2d2::Error> {
        if c.returned.elapsed() < FRESH {
            return Ok(());
        }
        self.inner.is_valid(&mut c.conn)
    }

    fn has_broken(&self, c: &mut Pooled<C>) -> bool {
        // Called as the connection goes back to the pool.
        c.returned = Instant::now();
        c.lost || self.inner.has_broken(&mut c.conn)
    }
}

/// A pooled connection to either backend, as handed to code that runs on the
/// database executor (a job's identification query, [`Store::run`](super::Store::run)):
/// it runs [`Sql`] with bound values and says which [`Dialect`] it speaks.
pub struct Connection(pub(crate) Backend);

/// The backend of a [`Connection`].
pub(crate) enum Backend {
    Postgres(PooledConnection<Manager<PgConnection>>),
    Sqlite(PooledConnection<Manager<SqliteConnection>>),
    #[cfg(feature = "mysql")]
    Mysql(PooledConnection<Manager<diesel::MysqlConnection>>),
}

/// A row type [`Connection::load`] reads on every backend built in: a
/// `#[derive(QueryableByName)]` struct is one.
#[cfg(not(feature = "mysql"))]
pub trait LoadRow: QueryableByName<Pg> + QueryableByName<Sqlite> + 'static {}
#[cfg(not(feature = "mysql"))]
impl<T: QueryableByName<Pg> + QueryableByName<Sqlite> + 'static> LoadRow for T {}

/// A row type [`Connection::load`] reads on every backend built in: a
/// `#[derive(QueryableByName)]` struct is one.
#[cfg(feature = "mysql")]
pub trait LoadRow:
    QueryableByName<Pg> + QueryableByName<Sqlite> + QueryableByName<diesel::mysql::Mysql> + 'static
{
}
#[cfg(feature = "mysql")]
impl<
        T: QueryableByName<Pg>
            + QueryableByName<Sqlite>
            + QueryableByName<diesel::mysql::Mysql>
            + 'static,
    > LoadRow for T
{
}

/// Runs `$body` with `$c` bound to the concrete diesel connection inside a
/// [`Connection`], compiling it once per backend.
macro_rules! with_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::store::Connection($crate::store::Backend::Postgres(pooled)) => {
                let $c: &mut ::diesel::PgConnection = &mut *pooled;
                $body
            }
            $crate::store::Connection($crate::store::Backend::Sqlite(pooled)) => {
                let $c: &mut ::diesel::SqliteConnection = &mut *pooled;
                $body
            }
            #[cfg(feature = "mysql")]
            $crate::store::Connection($crate::store::Backend::Mysql(pooled)) => {
                let $c: &mut ::diesel::MysqlConnection = &mut *pooled;
                $body
            }
        }
    };
}

impl Connection {
    /// The connection's dialect.
    pub fn dialect(&self) -> Dialect {
        match self {
            Connection(Backend::Postgres(_)) => Dialect::Postgres,
            Connection(Backend::Sqlite(_)) => Dialect::Sqlite,
            #[cfg(feature = "mysql")]
            Connection(Backend::Mysql(_)) => Dialect::Mysql,
        }
    }

    /// Runs a statement written with `?` placeholders.
    pub fn execute(&mut self, sql: &Sql) -> Result<usize, StoreError> {
        let result = with_conn!(self, |c| c.exec(sql));
        result.map_err(|e| self.failed("execute", e))
    }

    /// Runs a query written with `?` placeholders and loads its rows.
    pub fn load<T: LoadRow>(&mut self, sql: &Sql) -> Result<Vec<T>, StoreError> {
        let result = with_conn!(self, |c| c.load(sql));
        result.map_err(|e| self.failed("load", e))
    }

    /// Runs statements without binds (DDL, pragmas, transaction control).
    pub fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        let result = with_conn!(self, |c| match c.batch_execute(sql) {
            Ok(()) => Ok(()),
            Err(e) => Err(Db::classify(c, e)),
        });
        result.map_err(|e| self.failed("batch", e))
    }

    /// A failed statement as a [`StoreError`]; a connection whose link is
    /// gone is not handed out again.
    fn failed(&mut self, what: &'static str, e: diesel::result::Error) -> StoreError {
        if matches!(
            e,
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ClosedConnection,
                _
            )
        ) {
            self.mark_lost();
        }
        StoreError::query(what, e)
    }

    /// Rolls back the open transaction. If that fails the connection's
    /// state is unknown, and the pool drops it instead of reusing it.
    pub(crate) fn rollback(&mut self) {
        if self.batch("ROLLBACK").is_err() {
            self.mark_lost();
        }
    }

    fn mark_lost(&mut self) {
        match self {
            Connection(Backend::Postgres(p)) => p.lost = true,
            Connection(Backend::Sqlite(p)) => p.lost = true,
            #[cfg(feature = "mysql")]
            Connection(Backend::Mysql(p)) => p.lost = true,
        }
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
            Dialect::Mysql => "START TRANSACTION",
        })?;
        match f(self) {
            Ok(v) => {
                self.batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                self.rollback();
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

impl CustomizeConnection<Pooled<SqliteConnection>, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut Pooled<SqliteConnection>) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(
            // The busy timeout first: switching a fresh file to WAL takes
            // a lock, which another process opening it may hold.
            "PRAGMA busy_timeout = 30000; PRAGMA journal_mode = WAL; \
             PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA cache_size = -4096;",
        )
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// What every pooled session of a server database is set up with, beside
/// the settings each backend always applies (see
/// [`StoreOptions`](super::StoreOptions)).
#[derive(Clone, Debug, Default)]
pub(crate) struct Session {
    /// PostgreSQL `application_name`.
    pub(crate) application_name: Option<String>,
    /// The server ends a session idle this long inside a transaction.
    pub(crate) idle_transaction_timeout: Option<Duration>,
}

/// MySQL session settings (see [`super::mysql::session`]).
#[cfg(feature = "mysql")]
#[derive(Debug)]
struct MysqlSession(Session);

#[cfg(feature = "mysql")]
impl CustomizeConnection<Pooled<diesel::MysqlConnection>, diesel::r2d2::Error> for MysqlSession {
    fn on_acquire(
        &self,
        conn: &mut Pooled<diesel::MysqlConnection>,
    ) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(&super::mysql::session(self.0.idle_transaction_timeout))
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// PostgreSQL session settings: UTC, so a `timestamp` order column compares
/// with tranche's cursors the same way on every instance, whatever the
/// server's or role's default time zone. Also names the session after the
/// instance (`application_name`), so an operator sees in
/// `pg_stat_activity` which instance holds a connection. A database in
/// `SQL_ASCII` holds bytes in no known encoding, which the server would
/// refuse to hand to a UTF-8 session, failing a whole page: the session
/// takes them as they are instead, and a value that is not UTF-8 poisons
/// its row alone. A session left idle inside a transaction (its process
/// paused) is ended by the server, releasing its locks.
#[derive(Debug)]
struct PgSession(Session);

impl CustomizeConnection<Pooled<PgConnection>, diesel::r2d2::Error> for PgSession {
    fn on_acquire(&self, conn: &mut Pooled<PgConnection>) -> Result<(), diesel::r2d2::Error> {
        let mut sql = String::from(
            "SET TIME ZONE 'UTC'; SELECT set_config('client_encoding', 'SQL_ASCII', false) \
             WHERE current_setting('server_encoding') = 'SQL_ASCII'",
        );
        if let Some(idle) = self.0.idle_transaction_timeout {
            // Milliseconds; 0 would mean no limit.
            let ms = idle.as_millis().clamp(1, i32::MAX as u128);
            sql.push_str(&format!("; SET idle_in_transaction_session_timeout = {ms}"));
        }
        if let Some(name) = &self.0.application_name {
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

/// Initialises OpenSSL, which libpq uses, before libpq does: initialised
/// first by this call, OpenSSL registers no cleanup to run at exit. That
/// cleanup frees state that threads still ending at exit use, and can
/// crash a process as it exits (seen as SIGSEGV in OpenSSL's
/// `init_thread_deregister`). No effect when the host initialised it
/// already.
pub fn init_openssl() {
    openssl_sys::init();
}

/// Logs the pool's failed connection attempts with the URL's secrets
/// masked (r2d2's own handler logs the driver's message as it is).
#[derive(Debug)]
struct RedactingErrors(DatabaseUrl);

impl diesel::r2d2::HandleError<diesel::r2d2::Error> for RedactingErrors {
    fn handle_error(&self, error: diesel::r2d2::Error) {
        tracing::error!(
            database = %self.0,
            error = %self.0.redact(&error.to_string()),
            "database connection failed"
        );
    }
}

/// A pool of connections to one database.
#[derive(Clone)]
pub(crate) enum Pool {
    Postgres(diesel::r2d2::Pool<Manager<PgConnection>>),
    Sqlite(diesel::r2d2::Pool<Manager<SqliteConnection>>),
    #[cfg(feature = "mysql")]
    Mysql(diesel::r2d2::Pool<Manager<diesel::MysqlConnection>>),
}

/// The threads r2d2 opens connections on in the background: one per pool.
/// Its default of three costs a thread stack and a malloc arena each for
/// work that happens once per connection.
fn helper_threads() -> std::sync::Arc<scheduled_thread_pool::ScheduledThreadPool> {
    std::sync::Arc::new(
        scheduled_thread_pool::ScheduledThreadPool::builder()
            .num_threads(1)
            .thread_name_pattern("tranche-r2d2")
            .build(),
    )
}

impl Pool {
    /// Builds a pool of `size` connections to `url`, failing (with the URL
    /// redacted) when the database cannot be reached within `timeout`.
    pub(crate) fn connect(
        url: &DatabaseUrl,
        size: u32,
        timeout: Duration,
        session: Session,
    ) -> Result<Self, StoreError> {
        let connect_err = |e: diesel::r2d2::PoolError| StoreError::Connect {
            url: url.redacted().to_owned(),
            reason: url.redact(&e.to_string()),
        };
        Ok(match url.dialect() {
            Dialect::Postgres => Pool::Postgres({
                init_openssl();
                diesel::r2d2::Pool::builder()
                    .thread_pool(helper_threads())
                    .max_size(size)
                    .min_idle(Some(1))
                    .connection_timeout(timeout)
                    .connection_customizer(Box::new(PgSession(session)))
                    .error_handler(Box::new(RedactingErrors(url.clone())))
                    .build(Manager {
                        inner: ConnectionManager::new(url.connect_str()),
                    })
                    .map_err(connect_err)?
            }),
            Dialect::Sqlite => Pool::Sqlite(
                diesel::r2d2::Pool::builder()
                    .thread_pool(helper_threads())
                    .max_size(size)
                    .min_idle(Some(1))
                    .connection_timeout(timeout)
                    .connection_customizer(Box::new(SqlitePragmas))
                    .error_handler(Box::new(RedactingErrors(url.clone())))
                    .build(Manager {
                        inner: ConnectionManager::new(url.connect_str()),
                    })
                    .map_err(connect_err)?,
            ),
            #[cfg(feature = "mysql")]
            Dialect::Mysql => Pool::Mysql(
                diesel::r2d2::Pool::builder()
                    .thread_pool(helper_threads())
                    .max_size(size)
                    .min_idle(Some(1))
                    .connection_timeout(timeout)
                    .connection_customizer(Box::new(MysqlSession(session)))
                    .error_handler(Box::new(RedactingErrors(url.clone())))
                    .build(Manager {
                        inner: ConnectionManager::new(url.connect_str()),
                    })
                    .map_err(connect_err)?,
            ),
            #[cfg(not(feature = "mysql"))]
            Dialect::Mysql => {
                return Err(StoreError::Unsupported(format!(
                    "{url}: this build of tranche has no MySQL support; \
                     build it with the `mysql` feature (cargo build --features mysql, \
                     with Debian's libmariadb-dev installed)"
                )))
            }
        })
    }

    /// Takes a connection from the pool.
    pub(crate) fn get(&self) -> Result<Connection, StoreError> {
        match self {
            Pool::Postgres(p) => p.get().map(|c| Connection(Backend::Postgres(c))),
            Pool::Sqlite(p) => p.get().map(|c| Connection(Backend::Sqlite(c))),
            #[cfg(feature = "mysql")]
            Pool::Mysql(p) => p.get().map(|c| Connection(Backend::Mysql(c))),
        }
        .map_err(|e| StoreError::Pool(e.to_string()))
    }

    pub(crate) fn dialect(&self) -> Dialect {
        match self {
            Pool::Postgres(_) => Dialect::Postgres,
            Pool::Sqlite(_) => Dialect::Sqlite,
            #[cfg(feature = "mysql")]
            Pool::Mysql(_) => Dialect::Mysql,
        }
    }
}

#[cfg(test)]
mod tests {
    use diesel::Connection as _;

    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        let mut sql = Sql::new("SELECT ? WHERE a = ? AND b IN (?, ?)");
        sql.push("", (1..=4).map(Bind::Int));
        let pg = diesel::debug_query::<Pg, _>(&Query(&sql)).to_string();
        assert!(
            pg.starts_with("SELECT $1 WHERE a = $2 AND b IN ($3, $4) -- binds: [1, 2, 3, 4]"),
            "{pg}"
        );
        let lite = diesel::debug_query::<Sqlite, _>(&Query(&sql)).to_string();
        assert!(
            lite.starts_with("SELECT ? WHERE a = ? AND b IN (?, ?) --"),
            "{lite}"
        );
    }

    #[test]
    fn a_placeholder_without_its_value_is_an_error_naming_the_statement() {
        let mut conn = SqliteConnection::establish(":memory:").expect("in-memory SQLite");
        let short = Sql::new("SELECT ? + ?").bind(Bind::Int(1));
        let err = conn
            .exec(&short)
            .expect_err("one value for two placeholders");
        assert!(
            err.to_string()
                .contains("2 placeholders but 1 values in: SELECT ? + ?"),
            "{err}"
        );
        let long = Sql::new("SELECT ?").bind(Bind::Int(1)).bind(Bind::Int(2));
        assert!(conn.exec(&long).is_err());
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        for (a, b) in [(1, 2), (40, 2)] {
            let fine = Sql::new("SELECT ? + ? AS n")
                .bind(Bind::Int(a))
                .bind(Bind::Int(b))
                .prepared();
            let got: Vec<N> = conn.load(&fine).expect("a prepared statement, run twice");
            assert_eq!(got.iter().map(|r| r.n).collect::<Vec<_>>(), [a + b]);
        }
    }
}
