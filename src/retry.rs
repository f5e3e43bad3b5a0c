//! Which failures are worth another attempt, decided in one place for the
//! store and the sinks and consumers that write through it.
//!
//! The driver's structured kinds come first (diesel's closed connection,
//! serialization failure, unsendable command, broken transaction). Where
//! the driver gives no code, the server's own fixed messages are matched
//! whole, never a word found in arbitrary text: `column "locked_at" does
//! not exist` is a mistake to report, not a lock to wait out.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// Server messages, matched whole (their first line, trimmed), that mean a
/// later attempt may pass.
const RETRYABLE_MESSAGES: &[&str] = &[
    // PostgreSQL.
    "deadlock detected",
    "terminating connection due to administrator command",
    "terminating connection due to conflict with recovery",
    "terminating connection due to idle-in-transaction timeout",
    "terminating connection due to idle-session timeout",
    "sorry, too many clients already",
    "canceling statement due to lock timeout",
    "canceling statement due to conflict with recovery",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "could not serialize access due to concurrent update",
    "could not serialize access due to read/write dependencies among transactions",
    "could not serialize access due to concurrent delete",
    // libpq, when the link itself goes.
    "server closed the connection unexpectedly",
    "no connection to the server",
    "SSL connection has been closed unexpectedly",
    "could not receive data from server: Connection reset by peer",
    "could not send data to server: Broken pipe",
    // SQLite.
    "database is locked",
    "database table is locked",
];

/// Whether `message` is one of the retryable server messages: one of its
/// lines, trimmed and without a severity prefix (libpq joins a server's
/// `FATAL:` with its own account of the closed link), is one whole.
pub(crate) fn retryable_message(message: &str) -> bool {
    message.lines().any(|line| {
        let line = line.trim();
        let line = ["FATAL:", "ERROR:", "PANIC:"]
            .iter()
            .find_map(|p| line.strip_prefix(p))
            .unwrap_or(line)
            .trim();
        RETRYABLE_MESSAGES.contains(&line)
    })
}

/// Whether a failed query may pass if tried again.
pub(crate) fn retryable_query(e: &DieselError) -> bool {
    match e {
        DieselError::DatabaseError(kind, info) => {
            matches!(
                kind,
                DatabaseErrorKind::ClosedConnection
                    | DatabaseErrorKind::SerializationFailure
                    | DatabaseErrorKind::UnableToSendCommand
            ) || retryable_message(info.message())
        }
        DieselError::BrokenTransactionManager => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_error(kind: DatabaseErrorKind, message: &str) -> DieselError {
        DieselError::DatabaseError(kind, Box::new(message.to_owned()))
    }

    #[test]
    fn the_table_decides_and_words_inside_other_messages_do_not() {
        use DatabaseErrorKind as K;
        for (kind, message, retryable) in [
            (K::SerializationFailure, "anything", true),
            (K::ClosedConnection, "anything", true),
            (K::Unknown, "deadlock detected", true),
            (K::Unknown, "database is locked", true),
            (K::Unknown, "database table is locked", true),
            (
                K::Unknown,
                "terminating connection due to administrator command",
                true,
            ),
            (K::Unknown, "sorry, too many clients already", true),
            (K::Unknown, "canceling statement due to lock timeout", true),
            (
                K::Unknown,
                "server closed the connection unexpectedly\n\tThis probably means the server \
                 terminated abnormally",
                true,
            ),
            (
                K::Unknown,
                "FATAL:  terminating connection due to administrator command\n\
                 server closed the connection unexpectedly",
                true,
            ),
            (K::Unknown, "column \"locked_at\" does not exist", false),
            (K::Unknown, "relation \"busy_hours\" does not exist", false),
            (K::Unknown, "column \"connection_id\" does not exist", false),
            (K::Unknown, "function terminate_all() does not exist", false),
            (K::Unknown, "deadlock detected in my trigger", false),
            (
                K::UniqueViolation,
                "duplicate key value violates unique constraint",
                false,
            ),
            (
                K::Unknown,
                "canceling statement due to statement timeout",
                false,
            ),
        ] {
            assert_eq!(
                retryable_query(&db_error(kind, message)),
                retryable,
                "{kind:?} {message:?}"
            );
        }
        assert!(retryable_query(&DieselError::BrokenTransactionManager));
        assert!(!retryable_query(&DieselError::NotFound));
    }
}
