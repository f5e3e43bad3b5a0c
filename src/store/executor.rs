//! The database executor: the only place diesel runs.

use actix::{Actor, Handler, Message, SyncContext};

use super::{Connection, Pool, StoreError};

/// A synchronous actor on its own thread (one per `SyncArbiter` thread)
/// that runs store functions with a pooled connection.
pub(crate) struct DbExecutor {
    /// Shared by every executor thread; one connection per running query.
    pool: Pool,
}

impl DbExecutor {
    pub(crate) fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

impl Actor for DbExecutor {
    type Context = SyncContext<Self>;
}

type Job<T> = Box<dyn FnOnce(&mut Connection) -> Result<T, StoreError> + Send>;

/// Run this function with a connection and answer with its result.
pub(crate) struct Execute<T>(Job<T>);

impl<T> Execute<T> {
    pub(crate) fn new(
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Self {
        Self(Box::new(f))
    }
}

impl<T: Send + 'static> Message for Execute<T> {
    type Result = Result<T, StoreError>;
}

impl<T: Send + 'static> Handler<Execute<T>> for DbExecutor {
    type Result = Result<T, StoreError>;

    fn handle(&mut self, msg: Execute<T>, _: &mut SyncContext<Self>) -> Self::Result {
        let mut conn = self.pool.get()?;
        let job = msg.0;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut conn))).unwrap_or_else(
            |panic| {
                // The panic may have left a transaction open on this
                // connection; close it before the pool hands it out again.
                conn.rollback();
                Err(StoreError::Panicked(crate::error_text::panic_message(
                    &*panic,
                )))
            },
        )
    }
}
