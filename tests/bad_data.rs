//! Bad data, as a new user's tables hold it, on SQLite and PostgreSQL.
//!
//! Each case builds a table, runs a job over it through the public API and
//! holds the outcome to the contract: every row the filter admits is
//! delivered or dead-lettered with its reason and the run ends done with
//! its arithmetic closed, or the job is refused before any run exists,
//! naming the field, or (too many unreadable rows) the run ends failed
//! while planning, its error recorded. Never done with a row unaccounted
//! for.

#[macro_use]
mod common;

use std::sync::Arc;

use diesel::QueryableByName;
use tranche::job::{FilterValue, Op};
use tranche::sink::MemorySink;
use tranche::store::{Dialect, RunState, Sql};
use tranche::store::{Store, StoreError};
use tranche::{
    Error, Job, Message, RuntimeConfig, RuntimeHandle, Scope, Source, SourceRow, Strategy,
};

/// What a case must end in.
#[derive(Clone, Debug)]
enum Expect {
    /// Done: `delivered` messages and `dead` dead letters, which together
    /// are every row the filter admits.
    Ran { delivered: usize, dead: usize },
    /// Refused before any run exists, naming this field.
    Refused(&'static str),
    /// Failed while planning, naming this field, with its error recorded.
    PlanFailed(&'static str),
}

struct Case {
    name: &'static str,
    /// Statements creating and filling `t`, per dialect; `None`: the case
    /// does not apply to that database.
    setup: fn(Dialect) -> Option<String>,
    source: fn() -> Source,
    strategy: Strategy,
    /// Rows the filter admits (the oracle's count), per dialect.
    admitted: &'static str,
    expect: Expect,
}

const RANGE: Strategy = Strategy::Range { partitions: 4 };
const MODULO: Strategy = Strategy::Modulo { modulus: 3 };

/// `t (id, at, note)` with `n` rows, `ties` ids per `at`, and its keyset
/// index.
fn table(n: i64, ties: i64) -> String {
    format!(
        "CREATE TABLE t (id BIGINT PRIMARY KEY, at BIGINT NOT NULL, note TEXT); \
         CREATE INDEX t_at ON t (at, id); {}",
        rows(1, n, ties)
    )
}

/// Inserts ids `from..=to` into `t`, `ties` ids sharing one `at`.
fn rows(from: i64, to: i64, ties: i64) -> String {
    if to < from {
        return String::new();
    }
    format!(
        "INSERT INTO t (id, at, note) WITH RECURSIVE g(n) AS (SELECT {from} UNION ALL \
         SELECT n + 1 FROM g WHERE n < {to}) SELECT n, n / {ties}, 'note ' || n FROM g;"
    )
}

fn plain() -> Source {
    Source::new("t", "id", "at")
        .unwrap()
        .column("note")
        .unwrap()
}

fn sqlite_only(sql: &str, d: Dialect) -> Option<String> {
    (d == Dialect::Sqlite).then(|| sql.to_owned())
}

fn postgres_only(sql: &str, d: Dialect) -> Option<String> {
    (d == Dialect::Postgres).then(|| sql.to_owned())
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "empty table",
            setup: |_| Some(table(0, 1)),
            source: plain,
            strategy: RANGE,
            admitted: "SELECT COUNT(*) AS n FROM t",
            expect: Expect::Ran {
                delivered: 0,
                dead: 0,
            },
        },
        Case {
            name: "a single row",
            setup: |_| Some(table(1, 1)),
            source: plain,
            strategy: RANGE,
            admitted: "SELECT COUNT(*) AS n FROM t",
            expect: Expect::Ran {
                delivered: 1,
                dead: 0,
            },
        },
        Case {
            name: "more partitions than rows",
            setup: |_| Some(table(3, 1)),
            source: plain,
            strategy: Strategy::Range { partitions: 50 },
            admitted: "SELECT COUNT(*) AS n FROM t",
            expect: Expect::Ran {
                delivered: 3,
                dead: 0,
            },
        },
        Case {
            name: "every row shares one order value",
            setup: |_| Some(table(700, 1_000_000)),
            source: plain,
            strategy: RANGE,
            admitted: "SELECT COUNT(*) AS n FROM t",
            expect: Expect::Ran {
                delivered: 700,
                dead: 0,
            },
        },
        Case {
            name: "extreme keys and order values",
            setup: |_| {
                Some(
                    "CREATE TABLE t (id BIGINT PRIMARY KEY, at BIGINT NOT NULL, note TEXT); \
                     CREATE INDEX t_at ON t (at, id); \
                     INSERT INTO t VALUES (-9223372036854775808, 9223372036854775807, 'a'), \
                     (9223372036854775807, -9223372036854775808, 'b'), (0, 0, NULL), \
                     (-1, 9223372036854775807, 'c'), (1, -9223372036854775808, 'd');"
                        .into(),
                )
            },
            source: plain,
            strategy: RANGE,
            admitted: "SELECT COUNT(*) AS n FROM t",
            expect: Expect::Ran {
                delivered: 5,
                dead: 0,
            },
        },
        Case {
            name: "negative keys split by modulo",
            setup: |_| {
                Some(format!(
                    "{} UPDATE t SET id = -id WHERE id % 2 = 0;",
                    table(300, 3)
                ))
            },
            source: plain,
            strategy: MODULO,
            admitted: "SELECT COUNT(*) AS n FROM t",
            expect: Expect::Ran {
                delivered: 300,
                dead: 0,
            },
        },
        Case {
            name: "huge and odd text values",
            setup: |d| {
                // About 1 MB in one value.
                let huge = match d {
                    Dialect::Postgres => "repeat('x', 1000000)",
                    Dialect::Sqlite => "replace(hex(zeroblob(500000)), '0', 'x')",
                    other => panic!("no case for {other:?}"),
                };
                Some(format!(
                    "{} UPDATE t SET note = 'quote '' \" back\\slash \u{1F600} ünï' WHERE id % 3 = 0; \
                     UPDATE t SET note = NULL WHERE id % 3 = 1; UPDATE t SET note = {huge} WHERE id = 2;",
                    table(200, 4)
                ))
            },
            source: plain,
            strategy: RANGE,
            admitted: "SELECT COUNT(*) AS n FROM t",
            expect: Expect::Ran {
                delivered: 200,
                dead: 0,
            },
        },
        Case {
            name: "a filter that admits nothing",
            setup: |_| Some(table(50, 2)),
            source: || {
                plain()
                    .filter("at", Op::Gt, FilterValue::Int(1_000))
                    .unwrap()
            },
            strategy: RANGE,
            admitted: "SELECT COUNT(*) AS n FROM t WHERE at > 1000",
            expect: Expect::Ran {
                delivered: 0,
                dead: 0,
            },
        },
        Case {
            name: "missing table",
            setup: |_| Some(table(10, 1)),
            source: || Source::new("nope", "id", "at").unwrap(),
            strategy: RANGE,
            admitted: "SELECT 0 AS n",
            expect: Expect::Refused("source.table"),
        },
        Case {
            name: "missing key column",
            setup: |_| Some(table(10, 1)),
            source: || Source::new("t", "uid", "at").unwrap(),
            strategy: RANGE,
            admitted: "SELECT 0 AS n",
            expect: Expect::Refused("source.key_column"),
        },
        Case {
            name: "missing order column",
            setup: |_| Some(table(10, 1)),
            source: || Source::new("t", "id", "made").unwrap(),
            strategy: RANGE,
            admitted: "SELECT 0 AS n",
            expect: Expect::Refused("source.order_column"),
        },
        Case {
            name: "a text key column",
            setup: |_| {
                Some(
                    "CREATE TABLE t (id TEXT PRIMARY KEY, at BIGINT NOT NULL); \
                     CREATE INDEX t_at ON t (at, id); INSERT INTO t VALUES ('a', 1);"
                        .into(),
                )
            },
            source: || Source::new("t", "id", "at").unwrap(),
            strategy: RANGE,
            admitted: "SELECT 0 AS n",
            expect: Expect::Refused("source.key_column"),
        },
        Case {
            name: "a text order column",
            setup: |_| Some(table(10, 1)),
            source: || Source::new("t", "id", "note").unwrap(),
            strategy: RANGE,
            admitted: "SELECT 0 AS n",
            expect: Expect::Refused("source.order_column"),
        },
        Case {
            name: "a missing extra column",
            setup: |_| Some(table(10, 1)),
            source: || plain().column("email").unwrap(),
            strategy: RANGE,
            admitted: "SELECT 0 AS n",
            expect: Expect::Refused("source.columns[1]"),
        },
        Case {
            name: "a missing filter column",
            setup: |_| Some(table(10, 1)),
            source: || {
                plain()
                    .filter("status", Op::Eq, FilterValue::Int(1))
                    .unwrap()
            },
            strategy: RANGE,
            admitted: "SELECT 0 AS n",
            expect: Expect::Refused("source.filter[0].column"),
        },
        Case {
            name: "a text filter value on an integer column",
            setup: |_| Some(table(10, 1)),
            source: || {
                plain()
                    .filter("at", Op::Gt, FilterValue::Text("5".into()))
                    .unwrap()
            },
            strategy: RANGE,
            admitted: "SELECT 0 AS n",
            expect: Expect::Refused("source.filter[0].value"),
        },
        Case {
            name: "duplicate keys without a unique index",
            setup: |_| {
                Some(format!(
                    "CREATE TABLE t (id BIGINT NOT NULL, at BIGINT NOT NULL, note TEXT); \
                     CREATE INDEX t_at ON t (at, id); {} {}",
                    rows(1, 100, 3),
                    rows(20, 24, 3)
                ))
            },
            source: plain,
            strategy: RANGE,
            admitted: "SELECT 0 AS n",
            expect: Expect::Refused("source.key_column"),
        },
        Case {
            name: "duplicate keys, accepted",
            setup: |_| {
                Some(format!(
                    "CREATE TABLE t (id BIGINT NOT NULL, at BIGINT NOT NULL, note TEXT); \
                     CREATE INDEX t_at ON t (at, id); {} {} {}",
                    rows(1, 300, 3),
                    rows(20, 24, 3),
                    rows(63, 64, 3)
                ))
            },
            source: || plain().allowing_duplicate_keys(),
            strategy: RANGE,
            admitted: "SELECT COUNT(*) AS n FROM t",
            expect: Expect::Ran {
                delivered: 307,
                dead: 0,
            },
        },
        Case {
            name: "no index serves the order",
            setup: |_| {
                Some(format!(
                    "CREATE TABLE t (id BIGINT PRIMARY KEY, at BIGINT NOT NULL, note TEXT); {}",
                    rows(1, 50, 2)
                ))
            },
            source: plain,
            strategy: RANGE,
            admitted: "SELECT 0 AS n",
            expect: Expect::Refused("source.order_column"),
        },
        Case {
            name: "no index serves the order, sequential scans accepted",
            setup: |_| {
                Some(format!(
                    "CREATE TABLE t (id BIGINT PRIMARY KEY, at BIGINT NOT NULL, note TEXT); {}",
                    rows(1, 50, 2)
                ))
            },
            source: || plain().allowing_sequential_scan(),
            strategy: RANGE,
            admitted: "SELECT COUNT(*) AS n FROM t",
            expect: Expect::Ran {
                delivered: 50,
                dead: 0,
            },
        },
        Case {
            name: "key order alone over a primary key (range)",
            setup: |_| {
                Some(format!(
                    "CREATE TABLE t (id BIGINT PRIMARY KEY, at BIGINT NOT NULL, note TEXT); {}",
                    rows(1, 500, 1)
                ))
            },
            source: || Source::by_key("t", "id").unwrap().column("note").unwrap(),
            strategy: RANGE,
            admitted: "SELECT COUNT(*) AS n FROM t",
            expect: Expect::Ran {
                delivered: 500,
                dead: 0,
            },
        },
        Case {
            name: "key order alone over a primary key (modulo)",
            setup: |_| {
                Some(format!(
                    "CREATE TABLE t (id BIGINT PRIMARY KEY, at BIGINT NOT NULL, note TEXT); {}",
                    rows(1, 500, 1)
                ))
            },
            source: || Source::by_key("t", "id").unwrap(),
            strategy: MODULO,
            admitted: "SELECT COUNT(*) AS n FROM t",
            expect: Expect::Ran {
                delivered: 500,
                dead: 0,
            },
        },
        Case {
            name: "NULL order values",
            setup: |_| {
                Some(format!(
                    "CREATE TABLE t (id BIGINT PRIMARY KEY, at BIGINT, note TEXT); \
                     CREATE INDEX t_at ON t (at, id); {} UPDATE t SET at = NULL WHERE id % 50 = 0;",
                    rows(1, 400, 3)
                ))
            },
            source: plain,
            strategy: RANGE,
            admitted: "SELECT COUNT(*) AS n FROM t",
            expect: Expect::Ran {
                delivered: 392,
                dead: 8,
            },
        },
        Case {
            name: "a NULL key",
            setup: |_| {
                Some(format!(
                    "CREATE TABLE t (id BIGINT UNIQUE, at BIGINT NOT NULL, note TEXT); \
                     CREATE INDEX t_at ON t (at, id); {} INSERT INTO t VALUES (NULL, 5, 'no key');",
                    rows(1, 100, 3)
                ))
            },
            source: plain,
            strategy: MODULO,
            admitted: "SELECT COUNT(*) AS n FROM t",
            expect: Expect::Ran {
                delivered: 100,
                dead: 1,
            },
        },
        Case {
            name: "too many NULL order values",
            setup: |_| {
                Some(format!(
                    "CREATE TABLE t (id BIGINT PRIMARY KEY, at BIGINT, note TEXT); \
                     CREATE INDEX t_at ON t (at, id); {} UPDATE t SET at = NULL WHERE id % 2 = 0;",
                    rows(1, 400, 3)
                ))
            },
            source: plain,
            strategy: RANGE,
            admitted: "SELECT 0 AS n",
            expect: Expect::PlanFailed("source.order_column"),
        },
        Case {
            name: "SQLite: a text value in an integer order column",
            setup: |d| {
                sqlite_only(
                    &format!("{} UPDATE t SET at = 'abc' WHERE id = 77;", table(1001, 3)),
                    d,
                )
            },
            source: plain,
            strategy: RANGE,
            admitted: "SELECT COUNT(*) AS n FROM t",
            expect: Expect::Ran {
                delivered: 1000,
                dead: 1,
            },
        },
        Case {
            name: "SQLite: dates, reals beyond i64 and blobs as order values",
            setup: |d| {
                sqlite_only(
                    &format!(
                        "{} UPDATE t SET at = '2024-01-01' WHERE id = 3; \
                         UPDATE t SET at = 1e20 WHERE id = 4; UPDATE t SET at = 2.5 WHERE id = 5; \
                         UPDATE t SET at = X'00' WHERE id = 6; UPDATE t SET at = '500' WHERE id = 7;",
                        table(1001, 3)
                    ),
                    d,
                )
            },
            source: plain,
            strategy: MODULO,
            admitted: "SELECT COUNT(*) AS n FROM t",
            // '500' takes the column's INTEGER affinity and is an integer.
            expect: Expect::Ran {
                delivered: 997,
                dead: 4,
            },
        },
        Case {
            name: "SQLite: a text key",
            setup: |d| {
                sqlite_only(
                    &format!(
                        "CREATE TABLE t (id BIGINT UNIQUE, at BIGINT NOT NULL, note TEXT); \
                         CREATE INDEX t_at ON t (at, id); {} INSERT INTO t VALUES ('k-1', 9, 'x');",
                        rows(1, 60, 3)
                    ),
                    d,
                )
            },
            source: plain,
            strategy: RANGE,
            admitted: "SELECT COUNT(*) AS n FROM t",
            expect: Expect::Ran {
                delivered: 60,
                dead: 1,
            },
        },
        Case {
            name: "SQLite: text that is not UTF-8",
            setup: |d| {
                sqlite_only(
                    &format!(
                        "{} UPDATE t SET note = CAST(X'61FF62' AS TEXT) WHERE id = 10;",
                        table(300, 3)
                    ),
                    d,
                )
            },
            source: plain,
            strategy: RANGE,
            admitted: "SELECT COUNT(*) AS n FROM t",
            expect: Expect::Ran {
                delivered: 299,
                dead: 1,
            },
        },
        Case {
            name: "SQLite: a DATETIME order column",
            setup: |d| {
                sqlite_only(
                    "CREATE TABLE t (id INTEGER PRIMARY KEY, made DATETIME NOT NULL); \
                     CREATE INDEX t_made ON t (made); INSERT INTO t VALUES (1, '2024-01-01');",
                    d,
                )
            },
            source: || Source::new("t", "id", "made").unwrap(),
            strategy: RANGE,
            admitted: "SELECT 0 AS n",
            expect: Expect::Refused("source.order_column"),
        },
        Case {
            name: "SQLite: a timestamp kind declared on an integer column",
            setup: |d| sqlite_only(&table(10, 1), d),
            source: || plain().order_by_timestamp(),
            strategy: RANGE,
            admitted: "SELECT 0 AS n",
            expect: Expect::Refused("source.order_kind"),
        },
        Case {
            name: "PostgreSQL: a timestamptz order column, kind taken from it",
            setup: |d| {
                postgres_only(
                    "CREATE TABLE t (id BIGINT PRIMARY KEY, at TIMESTAMPTZ NOT NULL, note TEXT); \
                     CREATE INDEX t_at ON t (at, id); \
                     INSERT INTO t SELECT g, TIMESTAMPTZ '2024-02-29 23:59:59.999999+05' \
                     + (g % 5) * INTERVAL '1 microsecond', 'n' FROM generate_series(1, 400) g;",
                    d,
                )
            },
            source: plain,
            strategy: RANGE,
            admitted: "SELECT COUNT(*) AS n FROM t",
            expect: Expect::Ran {
                delivered: 400,
                dead: 0,
            },
        },
        Case {
            name: "PostgreSQL: an integer kind declared on a timestamptz column",
            setup: |d| {
                postgres_only(
                    "CREATE TABLE t (id BIGINT PRIMARY KEY, at TIMESTAMPTZ NOT NULL); \
                     CREATE INDEX t_at ON t (at, id); INSERT INTO t VALUES (1, now());",
                    d,
                )
            },
            source: || Source::new("t", "id", "at").unwrap().order_by_integer(),
            strategy: RANGE,
            admitted: "SELECT 0 AS n",
            expect: Expect::Refused("source.order_kind"),
        },
        Case {
            name: "PostgreSQL: a text filter value on a timestamptz column",
            setup: |d| {
                postgres_only(
                    "CREATE TABLE t (id BIGINT PRIMARY KEY, at TIMESTAMPTZ NOT NULL); \
                     CREATE INDEX t_at ON t (at, id); INSERT INTO t VALUES (1, now());",
                    d,
                )
            },
            source: || {
                Source::new("t", "id", "at")
                    .unwrap()
                    .filter("at", Op::Gt, FilterValue::Text("2024-01-01".into()))
                    .unwrap()
            },
            strategy: RANGE,
            admitted: "SELECT 0 AS n",
            expect: Expect::Refused("source.filter[0].value"),
        },
        Case {
            name: "PostgreSQL: NULLs in a timestamp(3) order column over a domain key",
            setup: |d| {
                postgres_only(
                    "CREATE DOMAIN case_key AS BIGINT; \
                     CREATE TABLE t (id case_key PRIMARY KEY, at TIMESTAMP(3), note TEXT); \
                     CREATE INDEX t_at ON t (at, id); \
                     INSERT INTO t SELECT g, CASE WHEN g % 40 = 0 THEN NULL ELSE \
                     TIMESTAMP '2024-01-01' + (g / 7) * INTERVAL '1 second' END, 'n' \
                     FROM generate_series(1, 400) g;",
                    d,
                )
            },
            source: plain,
            strategy: MODULO,
            admitted: "SELECT COUNT(*) AS n FROM t",
            expect: Expect::Ran {
                delivered: 390,
                dead: 10,
            },
        },
        Case {
            name: "PostgreSQL: a numeric order column",
            setup: |d| {
                postgres_only(
                    "CREATE TABLE t (id BIGINT PRIMARY KEY, at NUMERIC(12, 2) NOT NULL); \
                     CREATE INDEX t_at ON t (at, id); INSERT INTO t VALUES (1, 1.5);",
                    d,
                )
            },
            source: || Source::new("t", "id", "at").unwrap(),
            strategy: RANGE,
            admitted: "SELECT 0 AS n",
            expect: Expect::Refused("source.order_column"),
        },
        Case {
            name: "PostgreSQL: a key unique only under a partial index",
            setup: |d| {
                postgres_only(
                    "CREATE TABLE t (id BIGINT NOT NULL, at BIGINT NOT NULL); \
                     CREATE UNIQUE INDEX t_id ON t (id) WHERE at > 0; \
                     CREATE INDEX t_at ON t (at, id); INSERT INTO t VALUES (1, 1), (1, 0);",
                    d,
                )
            },
            source: || Source::new("t", "id", "at").unwrap(),
            strategy: RANGE,
            admitted: "SELECT 0 AS n",
            expect: Expect::Refused("source.key_column"),
        },
    ]
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

fn job(source: Source, strategy: Strategy, sink: &MemorySink) -> Result<Job, tranche::ConfigError> {
    Job::builder("bad-data")
        .source(source)
        .strategy(strategy)
        .processor(|row: &SourceRow, _: &Scope| {
            let payload = serde_json::to_vec(&row.columns).expect("a row serializes");
            Ok(Some(Message::new("bad-data", row.key, 1, payload)))
        })
        .sink(Arc::new(sink.clone()))
        .build()
}

/// Runs a count whose `FROM t` names the case's table.
async fn admitted(store: &Store, table: &str, sql: &str) -> i64 {
    let sql = sql.replace(" FROM t", &format!(" FROM {table}"));
    store
        .run(move |c| c.load::<N>(&Sql::new(sql)))
        .await
        .unwrap()[0]
        .n
}

async fn each_case_ends_delivered_dead_lettered_or_refused(url: String) {
    let mut ran = 0;
    for (i, case) in cases().into_iter().enumerate() {
        // A database of its own per case: a fresh SQLite file, or a
        // schema on PostgreSQL.
        let (_dir, case_url) = if url.starts_with("postgres") {
            (None, url.clone())
        } else {
            let (dir, url) = common::sqlite_database();
            (Some(dir), url)
        };
        let mut config = RuntimeConfig::new(&case_url);
        config.page_size = 64;
        config.concurrency = 3;
        config.skip_limit = 20;
        let runtime = RuntimeHandle::start(config).await.unwrap();
        let store = runtime.store().clone();
        let dialect = store.dialect();
        let Some(setup) = (case.setup)(dialect) else {
            runtime.shutdown().await;
            continue;
        };
        ran += 1;
        let schema = format!("case_{i}");
        let prefix = match dialect {
            Dialect::Postgres => format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; \
                 SET search_path TO {schema}, public; "
            ),
            Dialect::Sqlite => String::new(),
            other => panic!("no case for {other:?}"),
        };
        let batch = format!("{prefix}{setup}");
        store
            .run(move |c| c.batch(&batch))
            .await
            .unwrap_or_else(|e| panic!("{}: setup: {e}", case.name));
        let mut source = (case.source)();
        let table = match dialect {
            Dialect::Postgres => format!("{schema}.t"),
            Dialect::Sqlite => "t".to_owned(),
            other => panic!("no case for {other:?}"),
        };
        if dialect == Dialect::Postgres {
            source.table =
                tranche::job::Ident::parse("t", &format!("{schema}.{}", source.table)).unwrap();
        }
        let sink = MemorySink::new();
        let job = job(source, case.strategy, &sink).unwrap();
        let runs_before = store.runs("bad-data", 1000).await.unwrap().len();
        let outcome = runtime.run(job).await;
        let runs = store.runs("bad-data", 1000).await.unwrap();
        let name = case.name;
        match case.expect {
            Expect::Refused(field) => {
                match &outcome {
                    Err(Error::Config(e)) => assert_eq!(e.field, field, "{name}: {e}"),
                    other => panic!("{name}: expected a refusal naming {field}, got {other:?}"),
                }
                assert_eq!(runs.len(), runs_before, "{name}: no run is opened");
                assert!(sink.messages().is_empty(), "{name}: nothing is delivered");
            }
            Expect::PlanFailed(field) => {
                match &outcome {
                    Err(Error::Store(e @ StoreError::UnreadableRows { field: f, .. })) => {
                        assert_eq!(*f, field, "{name}: {e}")
                    }
                    other => {
                        panic!("{name}: expected a planning failure on {field}, got {other:?}")
                    }
                }
                let last = runs.first().expect("the failed run is recorded");
                assert_eq!(last.state, RunState::Failed, "{name}");
                assert!(
                    last.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains(field)),
                    "{name}: {:?}",
                    last.last_error
                );
                assert!(sink.messages().is_empty(), "{name}: nothing is delivered");
            }
            Expect::Ran { delivered, dead } => {
                let report = outcome.unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(report.state, RunState::Done, "{name}: {report:?}");
                let letters = store.dead_letters(report.run_id).await.unwrap();
                let messages = sink.messages();
                let admitted = admitted(&store, &table, case.admitted).await;
                assert_eq!(
                    (messages.len(), letters.len()),
                    (delivered, dead),
                    "{name}: {letters:?}"
                );
                assert_eq!(
                    (messages.len() + letters.len()) as i64,
                    admitted,
                    "{name}: every admitted row is delivered or dead-lettered"
                );
                assert!(letters.iter().all(|l| !l.reason.is_empty()), "{name}");
                let run = store.run_record(report.run_id).await.unwrap();
                assert_eq!(
                    run.rows_identified,
                    run.rows_done + run.rows_dead_at_plan,
                    "{name}: the report's arithmetic closes"
                );
                assert_eq!(run.rows_identified, admitted, "{name}");
            }
        }
        runtime.shutdown().await;
    }
    assert!(ran >= 30, "only {ran} cases ran");
}

/// A table shaped like pgbench's `pgbench_accounts`, whose only index is
/// its integer primary key, read in key order alone with both strategies:
/// every row arrives, and each page is an index range scan, never a scan
/// of the table.
async fn a_primary_key_alone_serves_every_page(url: String) {
    let mut config = RuntimeConfig::new(&url);
    config.page_size = 100;
    let runtime = RuntimeHandle::start(config).await.unwrap();
    let store = runtime.store().clone();
    let dialect = store.dialect();
    let analyze = match dialect {
        Dialect::Postgres => "ANALYZE accounts",
        Dialect::Sqlite => "ANALYZE",
        Dialect::Mysql => "ANALYZE TABLE accounts",
        other => panic!("no case for {other:?}"),
    };
    let setup = format!(
        "CREATE TABLE accounts (aid INTEGER PRIMARY KEY, bid INTEGER NOT NULL, \
           abalance INTEGER NOT NULL, filler CHAR(84)); \
         INSERT INTO accounts (aid, bid, abalance, filler) WITH RECURSIVE g(n) AS \
           (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < 199), \
           ids(n) AS (SELECT a.n * 100 + b.n + 1 FROM g a, g b WHERE b.n < 100) \
           SELECT n, 1 + n / 1000, 0, '' FROM ids; {analyze}"
    );
    store.run(move |c| c.batch(&setup)).await.unwrap();
    for strategy in [RANGE, MODULO] {
        let sink = MemorySink::new();
        let source = Source::by_key("accounts", "aid")
            .unwrap()
            .column("abalance")
            .unwrap();
        let job = job(source, strategy, &sink).unwrap();
        let report = runtime.run(job.clone()).await.unwrap();
        assert_eq!(report.state, RunState::Done, "{strategy:?}: {report:?}");
        let mut keys: Vec<i64> = sink.messages().iter().map(|m| m.key).collect();
        keys.sort_unstable();
        assert_eq!(keys, (1..=20_000).collect::<Vec<_>>(), "{strategy:?}");
        let partitions = store.partitions(report.run_id).await.unwrap();
        let second = partitions.get(1).expect("more than one partition");
        for after in [None, Some(tranche::job::Cursor::new(5_000, 5_000))] {
            let plan = store
                .explain_page(job.source(), second, after, 100)
                .await
                .unwrap();
            let text = plan.join("\n");
            let indexed = match dialect {
                Dialect::Postgres => {
                    text.contains("Index Scan using accounts_pkey")
                        || text.contains("Index Only Scan using accounts_pkey")
                }
                Dialect::Sqlite => text.contains("USING INTEGER PRIMARY KEY"),
                Dialect::Mysql => {
                    text.contains(r#""key": "PRIMARY""#)
                        && text.contains(r#""access_type": "range""#)
                }
                other => panic!("no case for {other:?}"),
            };
            let scans = text.contains("Seq Scan")
                || text.contains("SCAN accounts")
                || text.contains(r#""access_type": "ALL""#);
            assert!(indexed && !scans, "{strategy:?} after {after:?}:\n{text}");
        }
    }
    runtime.shutdown().await;
}

on_both_backends!(
    #[tokio::test]
    each_case_ends_delivered_dead_lettered_or_refused,
    a_primary_key_alone_serves_every_page,
);
