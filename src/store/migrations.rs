//! Embedded migrations, one set per backend.

use diesel::connection::SimpleConnection;
use diesel::{Connection as _, PgConnection, SqliteConnection};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::connection::{sqlite_path, Dialect};
use super::StoreError;
use crate::error::redact_url;

const POSTGRES: EmbeddedMigrations = embed_migrations!("migrations/postgres");
const SQLITE: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// Arbitrary constant naming tranche's advisory lock, so that instances
/// starting together apply the migrations once.
const PG_MIGRATION_LOCK: i64 = 0x0074_7261_6e63_6865;

/// Applies tranche's pending migrations to the database at `url`; returns the
/// versions applied (empty when it was up to date).
pub fn run_migrations(url: &str) -> Result<Vec<String>, StoreError> {
    let connect_err = |e: diesel::ConnectionError| StoreError::Connect {
        url: redact_url(url),
        reason: e.to_string(),
    };
    let migrate_err =
        |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Migration(e.to_string());
    let applied = match Dialect::of_url(url) {
        Dialect::Postgres => {
            super::init_openssl();
            let mut conn = PgConnection::establish(url).map_err(connect_err)?;
            conn.batch_execute(&format!("SELECT pg_advisory_lock({PG_MIGRATION_LOCK})"))
                .map_err(|e| StoreError::query("migration lock", e))?;
            let result = conn
                .run_pending_migrations(POSTGRES)
                .map(|v| v.into_iter().map(|m| m.to_string()).collect::<Vec<_>>());
            conn.batch_execute(&format!("SELECT pg_advisory_unlock({PG_MIGRATION_LOCK})"))
                .map_err(|e| StoreError::query("migration unlock", e))?;
            result.map_err(migrate_err)?
        }
        Dialect::Sqlite => {
            let mut conn = SqliteConnection::establish(sqlite_path(url)).map_err(connect_err)?;
            conn.batch_execute("PRAGMA busy_timeout = 30000; PRAGMA journal_mode = WAL;")
                .map_err(|e| StoreError::query("sqlite pragmas", e))?;
            conn.run_pending_migrations(SQLITE)
                .map(|v| v.into_iter().map(|m| m.to_string()).collect::<Vec<_>>())
                .map_err(migrate_err)?
        }
    };
    Ok(applied)
}
