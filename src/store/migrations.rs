//! Embedded migrations, one set per backend.

use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::SqliteConnection;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::connection::{Backend, Connection, Pool};
use super::{DatabaseUrl, StoreError};

const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
#[cfg(feature = "mysql")]
const MYSQL: EmbeddedMigrations = embed_migrations!("migrations/mysql");

/// The name of the `GET_LOCK` lock MySQL instances migrate under (MySQL
/// has no advisory locks of PostgreSQL's kind; a named lock is held by the
/// session, and freed if it ends).
#[cfg(feature = "mysql")]
const MYSQL_MIGRATION_LOCK: &str = "tranche.migrations";

/// Arbitrary constant naming tranche's advisory lock, so that instances
/// starting together apply the migrations once.
const PG_MIGRATION_LOCK: i64 = 0x0074_7261_6e63_6865;

/// Applies tranche's pending migrations to the database at `url`; returns the
/// versions applied (empty when it was up to date).
///
/// This blocks the calling thread while it connects and migrates: from
/// async code, use [`migrate`]. (`RuntimeHandle::start` migrates by itself
/// unless `store.migrate` is off.)
pub fn run_migrations(url: &str) -> Result<Vec<String>, StoreError> {
    let url = DatabaseUrl::parse(url).map_err(StoreError::Config)?;
    let pool = Pool::connect(
        &url,
        1,
        std::time::Duration::from_secs(10),
        super::Session::default(),
    )?;
    apply_pending(&mut pool.get()?)
}

/// [`run_migrations`] for async code: the blocking work runs on tokio's
/// blocking pool, so the caller's executor is not held up.
pub async fn migrate(url: &str) -> Result<Vec<String>, StoreError> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || run_migrations(&url))
        .await
        .map_err(|e| StoreError::Migration(Arc::new(e)))?
}

/// Applies the pending migrations over `conn`, one instance at a time:
/// PostgreSQL under an advisory lock, MySQL under a named lock
/// (`GET_LOCK`), SQLite in one write transaction (another process opening
/// a fresh file waits for it, then finds the tables made).
pub(crate) fn apply_pending(conn: &mut Connection) -> Result<Vec<String>, StoreError> {
    let migrate_err =
        |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Migration(Arc::from(e));
    let applied = match conn {
        Connection(Backend::Postgres(pooled)) => {
            let conn: &mut diesel::PgConnection = &mut *pooled;
            conn.batch_execute(&format!("SELECT pg_advisory_lock({PG_MIGRATION_LOCK})"))
                .map_err(|e| StoreError::query("migration lock", e))?;
            let result = conn
                .run_pending_migrations(POSTGRES)
                .map(|v| v.into_iter().map(|m| m.to_string()).collect::<Vec<_>>());
            conn.batch_execute(&format!("SELECT pg_advisory_unlock({PG_MIGRATION_LOCK})"))
                .map_err(|e| StoreError::query("migration unlock", e))?;
            result.map_err(migrate_err)?
        }
        Connection(Backend::Sqlite(pooled)) => {
            let conn: &mut SqliteConnection = &mut *pooled;
            conn.immediate_transaction(|conn| {
                conn.run_pending_migrations(SQLITE)
                    .map(|v| v.into_iter().map(|m| m.to_string()).collect::<Vec<_>>())
                    .map_err(diesel::result::Error::QueryBuilderError)
            })
            .map_err(|e| StoreError::Migration(Arc::new(e)))?
        }
        #[cfg(feature = "mysql")]
        Connection(Backend::Mysql(pooled)) => {
            let conn: &mut diesel::MysqlConnection = &mut *pooled;
            #[derive(diesel::QueryableByName)]
            struct Got {
                #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
                v: Option<i64>,
            }
            let got = diesel::RunQueryDsl::load::<Got>(
                diesel::sql_query(format!(
                    "SELECT GET_LOCK('{MYSQL_MIGRATION_LOCK}', 120) AS v"
                )),
                conn,
            )
            .map_err(|e| StoreError::query("migration lock", e))?;
            if got.first().and_then(|g| g.v) != Some(1) {
                return Err(migrate_err(
                    "another session held the migration lock for 120 s".into(),
                ));
            }
            let result = conn
                .run_pending_migrations(MYSQL)
                .map(|v| v.into_iter().map(|m| m.to_string()).collect::<Vec<_>>());
            conn.batch_execute(&format!("DO RELEASE_LOCK('{MYSQL_MIGRATION_LOCK}')"))
                .map_err(|e| StoreError::query("migration unlock", e))?;
            result.map_err(migrate_err)?
        }
    };
    Ok(applied)
}

/// The names of tranche's migrations not yet applied on `conn` (empty:
/// the schema is current).
pub(crate) fn pending(conn: &mut Connection) -> Result<Vec<String>, StoreError> {
    let migrate_err =
        |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Migration(Arc::from(e));
    let names = match conn {
        Connection(Backend::Postgres(pooled)) => {
            let conn: &mut diesel::PgConnection = &mut *pooled;
            conn.pending_migrations(POSTGRES)
                .map_err(migrate_err)?
                .iter()
                .map(|m| m.name().to_string())
                .collect::<Vec<_>>()
        }
        Connection(Backend::Sqlite(pooled)) => {
            let conn: &mut SqliteConnection = &mut *pooled;
            conn.pending_migrations(SQLITE)
                .map_err(migrate_err)?
                .iter()
                .map(|m| m.name().to_string())
                .collect()
        }
        #[cfg(feature = "mysql")]
        Connection(Backend::Mysql(pooled)) => {
            let conn: &mut diesel::MysqlConnection = &mut *pooled;
            conn.pending_migrations(MYSQL)
                .map_err(migrate_err)?
                .iter()
                .map(|m| m.name().to_string())
                .collect()
        }
    };
    Ok(names)
}

impl super::Store {
    /// The names of tranche's migrations not yet applied to this store's
    /// database (empty: the schema is current); what a readiness check asks.
    pub async fn pending_migrations(&self) -> Result<Vec<String>, StoreError> {
        self.run(pending).await
    }
}
