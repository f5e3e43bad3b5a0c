//! What MySQL and MariaDB do differently, tested on the real server
//! (`TRANCHE_TEST_MYSQL`; built with the `mysql` feature): failures
//! classified by the server's error codes, fenced updates counted by rows
//! matched, the database clock, and the sessions' idle-transaction timeout.
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

/// The fence counts rows matched, not rows changed (diesel's connections
/// set CLIENT_FOUND_ROWS): an update that leaves a row as it was still
/// says it found it, so a checkpoint repeating its values is not taken for
/// a lost lease.
#[actix::test]
async fn an_update_that_changes_nothing_still_counts_its_row() {
    let Some(db) = common::mysql_database("found_rows") else {
        return;
    };
    let store = open(&db.url);
    let n = store
        .run(|c| {
            c.batch("CREATE TABLE t (id BIGINT PRIMARY KEY, v BIGINT NOT NULL); INSERT INTO t VALUES (1, 7)")?;
            c.execute(&Sql::new("UPDATE t SET v = ? WHERE id = ?").bind(Bind::Int(7)).bind(Bind::Int(1)))
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
}

/// A keyset page on `(order, key)` past a cursor seeks the index on both
/// columns (MariaDB would scan the index from its start for a row-value
/// comparison; the comparison is spelled out so that it does not).
#[actix::test]
async fn a_page_after_a_cursor_seeks_the_order_key_index() {
    use tranche::job::{Cursor, Throttle};
    use tranche::store::Scopes;
    use tranche::{Source, Strategy};
    let Some(db) = common::mysql_database("seek") else {
        return;
    };
    let store = open(&db.url);
    store
        .run(|c| {
            c.batch(
                "CREATE TABLE events (id BIGINT PRIMARY KEY, at BIGINT NOT NULL, KEY events_at (at)); \
                 INSERT INTO events WITH RECURSIVE g (n) AS \
                   (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < 199), \
                   ids (id) AS (SELECT a.n * 100 + b.n + 1 FROM g a, g b WHERE b.n < 100) \
                 SELECT id, id % 50 FROM ids; ANALYZE TABLE events",
            )
        })
        .await
        .unwrap();
    let source = Source::new("events", "id", "at").unwrap();
    let run = store
        .open_run("seek", "{}", None, &Throttle::default())
        .await
        .unwrap();
    let plan = store
        .plan_run(
            run.id,
            &source,
            &Scopes::Whole,
            Strategy::Range { partitions: 4 },
            0,
        )
        .await
        .unwrap();
    let second = &plan.partitions[1];
    let lower = second.range.and_then(|r| r.lower).expect("a lower bound");
    let after = Cursor::new(lower.order, lower.key + 500);
    let text = store
        .explain_page(&source, second, Some(after), 100)
        .await
        .unwrap()
        .join("\n");
    // InnoDB keeps the primary key at the end of events_at: (at, id).
    assert!(text.contains(r#""key": "events_at""#), "{text}");
    assert!(text.contains(r#""access_type": "range""#), "{text}");
    assert!(
        text.contains(r#""key_length": "16""#),
        "seeks on both columns: {text}"
    );
}

/// Every pooled session ends idle transactions after the store's timeout,
/// in whole seconds rounded up, and keeps the server's setting when the
/// store sets none.
#[actix::test]
async fn sessions_carry_the_idle_transaction_timeout() {
    let Some(db) = common::mysql_database("idle_timeout") else {
        return;
    };
    let setting = |store: Store| async move {
        store
            .run(|c| {
                c.load::<N>(&Sql::new(
                    "SELECT CAST(@@SESSION.idle_transaction_timeout AS SIGNED) AS n",
                ))
            })
            .await
            .expect("read the session's setting")[0]
            .n
    };
    let mut options = StoreOptions::default();
    assert_eq!(setting(open(&db.url)).await, 30, "the default");
    options.idle_transaction_timeout = Some(Duration::from_millis(1500));
    let store = Store::open(&db.url, &options).expect("open store");
    assert_eq!(setting(store).await, 2, "rounded up");
    options.idle_transaction_timeout = None;
    let store = Store::open(&db.url, &options).expect("open store");
    let global = store
        .run(|c| {
            c.load::<N>(&Sql::new(
                "SELECT CAST(@@GLOBAL.idle_transaction_timeout AS SIGNED) AS n",
            ))
        })
        .await
        .unwrap()[0]
        .n;
    assert_eq!(setting(store).await, global, "the server's own");
}
