//! Reading from PostgreSQL, the two costs `tranche bench` showed to matter
//! on its 1,000,000-row table (200-byte bodies, an order column shared by
//! eight keys):
//!
//! - `plan_1m_rows_8_ranges`: identifying and cutting the table into eight
//!   range partitions. The cut rows are found by a chain of `OFFSET`
//!   queries over the `(order, key)` index since issue 5; numbering every
//!   row with `ROW_NUMBER()` instead took about 310 ms on a vacuumed table
//!   (psql, the development machine), the chain about 50 ms, beside the
//!   90 ms `COUNT(*)` both need. This bench measured 129 ms for the whole
//!   plan there.
//! - `read_100k_rows_to_null_sink`: a whole run over 100,000 of the rows
//!   into the null sink: pages read as one prepared row-value range scan
//!   (before issue 5's fixes: an unprepared `UNION ALL` of two scans,
//!   planned on every page), pooled connections handed out without a
//!   `SELECT 1` while in steady use, and one checkpoint per page. On the
//!   full table these fixes took tranche from 0.73 to 0.98 to 1.10 times
//!   one bare keyset walk (`tranche bench`, medians of three rounds). This
//!   bench measured 180 ms (554,000 rows/s) there.
//!
//! - `read_100k_mixed_rows_typed` and `read_100k_mixed_rows_as_text`:
//!   100,000 rows of eight columns of mixed types (integers, a float, a
//!   numeric, a timestamp, a boolean, text, jsonb) read into the null sink
//!   with each row's payload serialized to JSON, first typed (each column
//!   in its binary form, decoded here), then with
//!   `Source::columns_as_text` (each column cast to text by the server, as
//!   every column was read before rows were typed). The typed read is held
//!   to at most 10% more time than the text read.
//!
//! PostgreSQL comes from `TRANCHE_BENCH_PG` (an admin URL, default
//! `postgres://postgres@127.0.0.1:5432/postgres`); the bench drops and
//! creates the database `tranche_read_bench` beside it. Without a
//! reachable server it says so and measures nothing.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use tranche::job::{Datum, FilterValue, Op, Throttle};
use tranche::sink::NullSink;
use tranche::{
    Job, Message, Poison, RuntimeConfig, RuntimeHandle, Scope, Sink, Source, SourceRow, Strategy,
};

const ROWS: i64 = 1_000_000;
const READ_ROWS: i64 = 100_000;
const DATABASE: &str = "tranche_read_bench";

/// Creates the bench database and table; its URL, or `None` when the
/// server cannot be reached.
fn database() -> Option<String> {
    let admin = std::env::var("TRANCHE_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = match PgConnection::establish(&admin) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("postgres_read: PostgreSQL unreachable ({e}); nothing measured");
            return None;
        }
    };
    // One statement per call: neither may run inside a transaction block.
    for sql in [
        format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"),
        format!("CREATE DATABASE {DATABASE}"),
    ] {
        conn.batch_execute(&sql).expect("create the bench database");
    }
    let (path, query) = admin.split_once('?').unwrap_or((&admin, ""));
    let (base, _) = path
        .rsplit_once('/')
        .expect("the admin URL names a database");
    let url = match query {
        "" => format!("{base}/{DATABASE}"),
        q => format!("{base}/{DATABASE}?{q}"),
    };
    let mut conn = PgConnection::establish(&url).expect("connect to the bench database");
    conn.batch_execute(&format!(
        "CREATE UNLOGGED TABLE events (id BIGINT PRIMARY KEY, at BIGINT NOT NULL, body TEXT NOT NULL);
         INSERT INTO events SELECT g, g / 8, substr(repeat(md5(g::text), 7), 1, 200)
             FROM generate_series(1, {ROWS}) g;
         CREATE INDEX ON events (at, id);
         CREATE UNLOGGED TABLE mixed (id BIGINT PRIMARY KEY, at BIGINT NOT NULL, i INTEGER,
             f DOUBLE PRECISION, n NUMERIC(12,2), ts TIMESTAMPTZ, b BOOLEAN, t TEXT, j JSONB);
         INSERT INTO mixed SELECT g, g / 8, g % 1000, g / 7.0, (g % 100000) / 100.0,
             TIMESTAMPTZ '2024-01-01' + g * INTERVAL '1 second', g % 2 = 0,
             'status-' || (g % 17), jsonb_build_object('n', g, 'tags', jsonb_build_array('a', g % 5))
             FROM generate_series(1, {READ_ROWS}) g;
         CREATE INDEX ON mixed (at, id);"
    ))
    .and_then(|()| conn.batch_execute("VACUUM ANALYZE events"))
    .and_then(|()| conn.batch_execute("VACUUM ANALYZE mixed"))
    .expect("seed the bench table");
    Some(url)
}

/// A job over `events` (its first `upto` rows when given) into `sink`,
/// each payload the row's body.
fn job(name: &str, sink: Arc<dyn Sink>, upto: Option<i64>) -> Job {
    let mut source = Source::new("events", "id", "at")
        .unwrap()
        .column("body")
        .unwrap();
    if let Some(upto) = upto {
        source = source.filter("id", Op::Le, FilterValue::Int(upto)).unwrap();
    }
    let owned = name.to_owned();
    Job::builder(name)
        .source(source)
        .strategy(Strategy::Range { partitions: 8 })
        .processor(move |row: &SourceRow, _: &Scope| {
            let body = row.text("body")?.unwrap_or_default().to_owned();
            Ok(Some(Message::new(&owned, row.key, 1, body.into_bytes())))
        })
        .sink(sink)
        .build()
        .unwrap()
}

const MIXED: &[&str] = &["i", "f", "n", "ts", "b", "t", "j"];

/// A job over `mixed` into `sink`, each payload the row's columns by name
/// as JSON, as a configured job writes them.
fn mixed_job(name: &str, sink: Arc<dyn Sink>, as_text: bool) -> Job {
    let mut source = Source::new("mixed", "id", "at").unwrap();
    for column in MIXED {
        source = source.column(column).unwrap();
    }
    if as_text {
        source = source.columns_as_text();
    }
    let owned = name.to_owned();
    Job::builder(name)
        .source(source)
        .strategy(Strategy::Range { partitions: 8 })
        .processor(move |row: &SourceRow, _: &Scope| {
            let by_name: std::collections::BTreeMap<&str, &Datum> = row.iter().collect();
            let body = serde_json::to_vec(&by_name).map_err(|e| Poison(e.to_string()))?;
            Ok(Some(Message::new(&owned, row.key, 1, body)))
        })
        .sink(sink)
        .build()
        .unwrap()
}

fn postgres_read(c: &mut Criterion) {
    let Some(url) = database() else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut group = c.benchmark_group("postgres_read");
    group.sample_size(10);

    let runtime = rt.block_on(async {
        let mut config = RuntimeConfig::new(&url);
        config.concurrency = 4;
        config.db_threads = 8;
        RuntimeHandle::start(config).await.unwrap()
    });
    let store = runtime.store().clone();
    let mut n = 0u64;
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("plan_1m_rows_8_ranges", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let name = format!("plan-{n}");
            let store = store.clone();
            async move {
                let job = job(&name, Arc::new(NullSink::new()), None);
                let run = store
                    .open_run(&name, "{}", None, &Throttle::default())
                    .await
                    .unwrap();
                let plan = store
                    .plan_run(run.id, job.source(), job.scopes(), job.strategy(), 100)
                    .await
                    .unwrap();
                assert_eq!(plan.run.rows_identified, ROWS);
                assert_eq!(plan.partitions.len(), 8);
            }
        })
    });

    let mut n = 0u64;
    group.throughput(Throughput::Elements(READ_ROWS as u64));
    group.bench_function("read_100k_rows_to_null_sink", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let name = format!("read-{n}");
            let runtime = &runtime;
            async move {
                let sink = NullSink::new();
                let report = runtime
                    .run(job(&name, Arc::new(sink.clone()), Some(READ_ROWS)))
                    .await
                    .unwrap();
                assert_eq!(report.rows_done, READ_ROWS);
                assert_eq!(sink.bytes(), READ_ROWS as u64 * 200);
            }
        })
    });
    for (label, as_text) in [
        ("read_100k_mixed_rows_typed", false),
        ("read_100k_mixed_rows_as_text", true),
    ] {
        let mut n = 0u64;
        group.bench_function(label, |b| {
            b.to_async(&rt).iter(|| {
                n += 1;
                let name = format!("{label}-{n}");
                let runtime = &runtime;
                async move {
                    let sink = NullSink::new();
                    let report = runtime
                        .run(mixed_job(&name, Arc::new(sink.clone()), as_text))
                        .await
                        .unwrap();
                    assert_eq!(report.rows_done, READ_ROWS);
                }
            })
        });
    }
    group.finish();
    rt.block_on(runtime.shutdown());
}

criterion_group!(benches, postgres_read);
criterion_main!(benches);
