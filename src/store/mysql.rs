//! What MySQL and MariaDB need of a connection that the other backends do
//! not: session settings, and failures classified by the server's error
//! code, which diesel's MySQL backend drops for all but a few.

use diesel::connection::SimpleConnection;
use diesel::query_dsl::RunQueryDsl;
use diesel::result::{DatabaseErrorInformation, DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::{MysqlConnection, QueryableByName};

/// Session settings applied to every pooled MySQL connection (diesel has
/// already set the UTC time zone and utf8mb4):
/// - strict mode, so a value that does not fit a column is an error and
///   never a silent truncation or a zero date;
/// - `READ COMMITTED`, as PostgreSQL's default: a locking read sees the
///   latest committed rows, and no gap locks widen a claim's lock;
/// - a 10 s lock wait, after which a statement fails with error 1205,
///   which is retried.
const SESSION: &str = "SET SESSION sql_mode = CONCAT_WS(',', @@SESSION.sql_mode, \
     'STRICT_ALL_TABLES', 'NO_ZERO_DATE', 'NO_ZERO_IN_DATE', 'ERROR_FOR_DIVISION_BY_ZERO'); \
     SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED; \
     SET SESSION innodb_lock_wait_timeout = 10";

/// [`SESSION`], and on MariaDB (10.3 and later) the time a session may sit
/// idle inside a transaction before the server ends it, in whole seconds
/// rounded up. The assignment sits in a MariaDB-only executable comment,
/// which MySQL, having no such setting, reads as a comment.
pub(crate) fn session(idle_transaction_timeout: Option<std::time::Duration>) -> String {
    match idle_transaction_timeout {
        None => SESSION.to_owned(),
        Some(idle) => {
            let secs = idle.as_secs() + u64::from(idle.subsec_nanos() > 0);
            format!(
                "{SESSION} /*M!100300 , SESSION idle_transaction_timeout = {} */",
                secs.clamp(1, 31_536_000)
            )
        }
    }
}

/// Server error codes after which the same statement may pass later.
/// Deadlocks and lock waits are conflicts (diesel's serialization
/// failure); the others mean the server cannot take work now or the link
/// is gone.
const CONFLICTS: &[u16] = &[
    1205, // ER_LOCK_WAIT_TIMEOUT
    1213, // ER_LOCK_DEADLOCK
];
const UNAVAILABLE: &[u16] = &[
    1040, // ER_CON_COUNT_ERROR: too many connections
    1053, // ER_SERVER_SHUTDOWN
    1290, // ER_OPTION_PREVENTS_STATEMENT: --read-only (a failover under way)
    1836, // ER_READ_ONLY_MODE
    1927, // ER_CONNECTION_KILLED (MariaDB)
    2006, // CR_SERVER_GONE_ERROR
    2013, // CR_SERVER_LOST
    2055, // CR_SERVER_LOST_EXTENDED
    4031, // ER_CLIENT_INTERACTION_TIMEOUT (MySQL), idle session ended
];

/// The kind a MySQL error code is retried as, if it is.
pub(crate) fn retry_kind(code: u16) -> Option<DatabaseErrorKind> {
    if CONFLICTS.contains(&code) {
        Some(DatabaseErrorKind::SerializationFailure)
    } else if UNAVAILABLE.contains(&code) {
        Some(DatabaseErrorKind::ClosedConnection)
    } else {
        None
    }
}

/// A MySQL error with its code, as the store reports it.
#[derive(Debug)]
struct CodedError {
    message: String,
}

impl DatabaseErrorInformation for CodedError {
    fn message(&self) -> &str {
        &self.message
    }
    fn details(&self) -> Option<&str> {
        None
    }
    fn hint(&self) -> Option<&str> {
        None
    }
    fn table_name(&self) -> Option<&str> {
        None
    }
    fn column_name(&self) -> Option<&str> {
        None
    }
    fn constraint_name(&self) -> Option<&str> {
        None
    }
    fn statement_position(&self) -> Option<i32> {
        None
    }
}

#[derive(QueryableByName)]
struct ServerError {
    #[diesel(sql_type = Nullable<BigInt>)]
    code: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    message: Option<String>,
}

/// `e` with the server's error code: asked of the server with `GET
/// DIAGNOSTICS`, which reads the failed statement's diagnostics without
/// clearing them. The code decides whether the failure is retried (see
/// [`retry_kind`]); the message gains it, `(MySQL error 1213)`. When the
/// server cannot even be asked, the link is gone.
pub(crate) fn classified(conn: &mut MysqlConnection, e: DieselError) -> DieselError {
    let DieselError::DatabaseError(kind, info) = e else {
        return e;
    };
    let asked = conn
        .batch_execute(
            "GET DIAGNOSTICS CONDITION 1 @tranche_errno = MYSQL_ERRNO, \
             @tranche_error = MESSAGE_TEXT",
        )
        .and_then(|()| {
            diesel::sql_query(
                "SELECT CAST(@tranche_errno AS SIGNED) AS code, \
                 CAST(@tranche_error AS CHAR) AS message",
            )
            .load::<ServerError>(conn)
        });
    let (code, message) = match asked.as_deref() {
        Ok(
            [ServerError {
                code: Some(code),
                message,
            }],
        ) => (
            u16::try_from(*code).ok(),
            message.clone().unwrap_or_else(|| info.message().to_owned()),
        ),
        Ok(_) => (None, info.message().to_owned()),
        // A statement that failed on the client's side (the link lost)
        // leaves no diagnostics on the server; when the server cannot be
        // asked at all, the link is gone.
        Err(DieselError::DatabaseError(..)) if !alive(conn) => {
            (Some(2006), info.message().to_owned())
        }
        Err(_) => (None, info.message().to_owned()),
    };
    let Some(code) = code else {
        return DieselError::DatabaseError(kind, info);
    };
    let kind = match kind {
        DatabaseErrorKind::Unknown => retry_kind(code).unwrap_or(kind),
        known => known,
    };
    DieselError::DatabaseError(
        kind,
        Box::new(CodedError {
            message: format!("{message} (MySQL error {code})"),
        }),
    )
}

/// Whether the session still answers.
fn alive(conn: &mut MysqlConnection) -> bool {
    conn.batch_execute("DO 1").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_decide_what_is_retried() {
        for code in [1205, 1213] {
            assert_eq!(
                retry_kind(code),
                Some(DatabaseErrorKind::SerializationFailure)
            );
        }
        for code in [1040, 1053, 1290, 1836, 1927, 2006, 2013, 4031] {
            assert_eq!(retry_kind(code), Some(DatabaseErrorKind::ClosedConnection));
        }
        // A duplicate key, a missing table, a bad column, a syntax error,
        // a value out of range: mistakes to report.
        for code in [1062, 1146, 1054, 1064, 1264, 1366] {
            assert_eq!(retry_kind(code), None, "{code}");
        }
    }
}
