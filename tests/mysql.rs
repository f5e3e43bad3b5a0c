//! What MySQL and MariaDB do differently, tested on the real server
//! (`TRANCHE_TEST_MYSQL`; built with the `mysql` feature): failures
//! classified by the server's error codes, fenced updates counted by rows
//! matched, and the database clock.
#![cfg(feature = "mysql")]

#[macro_use]
mod common;

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::Connection as _;
use tranche::store::{Bind, Sql, Store, StoreError, StoreOptions};

fn open(url: &str) -> Store {
    Store::open(url, &StoreOptions::default()).expect("open store")
}

#[derive(diesel::QueryableByName)]
struct N {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// A failure is retried or not by its MySQL error code, which the error
/// shows; a mistake is not retried, a lock wait or a killed session is,
/// and the store works again after one.
#[actix::test]
async fn failures_are_classified_by_their_error_codes() {
    let Some(db) = common::mysql_database("codes") else {
        return;
    };
    let store = open(&db.url);
    let err = |r: Result<(), StoreError>| r.expect_err("fails");

    let syntax = err(store.run(|c| c.batch("SELEC 1")).await);
    assert!(!syntax.is_retryable(), "{syntax:?}");
    assert!(
        common::chain(&syntax).contains("(MySQL error 1064)"),
        "{syntax:?}"
    );

    let missing = err(store
        .run(|c| {
            c.execute(&Sql::new("UPDATE no_such_table SET a = ?").bind(Bind::Int(1)))
                .map(drop)
        })
        .await);
    assert!(!missing.is_retryable(), "{missing:?}");
    assert!(
        common::chain(&missing).contains("(MySQL error 1146)"),
        "{missing:?}"
    );

    let deep = err(store
        .run(|c| {
            c.batch(
                "CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL); \
                 INSERT INTO t WITH RECURSIVE g (n) AS \
                 (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 5000) SELECT n, n FROM g",
            )
        })
        .await);
    assert!(!deep.is_retryable(), "{deep:?}");

    // A row lock held by another session: the store's statement waits for
    // it, then fails with a lock wait timeout (1205), which is retried.
    store
        .run(|c| c.batch("INSERT INTO t VALUES (1, 1)"))
        .await
        .expect("a row");
    let mut holder = diesel::MysqlConnection::establish(&db.url).expect("second session");
    holder
        .batch_execute("START TRANSACTION; UPDATE t SET v = 2 WHERE id = 1")
        .expect("hold the row");
    let waited = err(store
        .run(|c| {
            c.batch("SET SESSION innodb_lock_wait_timeout = 1")?;
            let r = c.execute(&Sql::new("UPDATE t SET v = 3 WHERE id = ?").bind(Bind::Int(1)));
            c.batch("SET SESSION innodb_lock_wait_timeout = 10")?;
            r.map(drop)
        })
        .await);
    assert!(waited.is_retryable(), "{waited:?}");
    assert!(
        common::chain(&waited).contains("(MySQL error 1205)"),
        "{waited:?}"
    );
    holder.batch_execute("ROLLBACK").expect("release the row");

    // A session the server killed fails its next statement as retryable;
    // the pool then drops it and the store carries on.
    let id = store
        .run(|c| c.load::<N>(&Sql::new("SELECT CAST(CONNECTION_ID() AS SIGNED) AS n")))
        .await
        .expect("session id")[0]
        .n;
    holder
        .batch_execute(&format!("KILL {id}"))
        .expect("kill the store's session");
    let mut failures = 0;
    loop {
        match store
            .run(move |c| c.load::<N>(&Sql::new("SELECT CAST(CONNECTION_ID() AS SIGNED) AS n")))
            .await
        {
            Ok(rows) => {
                assert_ne!(rows[0].n, id, "the killed session was handed out again");
                break;
            }
            Err(e) => {
                assert!(e.is_retryable(), "a killed session is retryable: {e}");
                failures += 1;
                assert!(failures <= 2, "a dead session was handed out again: {e}");
            }
        }
    }
    tokio::time::sleep(Duration::ZERO).await;
}
