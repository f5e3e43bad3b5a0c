//! One conformance suite for the store, run against SQLite, PostgreSQL and
//! (built with the `mysql` feature) MySQL or MariaDB: every case is written
//! once and instantiated per backend.

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tranche::job::Throttle;
use tranche::job::{Cursor, FilterValue, Op};
use tranche::sink::{MemorySink, UpdateSink, UpdateSpec};
use tranche::store::{
    Bind, Checkpoint, PartitionState, RunRecord, RunState, Sql, Store, StoreOptions,
};
use tranche::store::{DeadLetter, StoreError, ThrottleOutcome};
use tranche::{Job, Message, Scope, Sink, Source, SourceRow, Strategy};

/// `items`: `rows` rows; the order column `ts` has heavy ties (a third of
/// the rows share ts = 500) and skew; `grp` alternates 0/1/2.
async fn seed_items(store: &Store, rows: i64) {
    store
        .run(move |c| {
            c.batch(
                "CREATE TABLE items (id BIGINT PRIMARY KEY, grp BIGINT NOT NULL, \
                 ts BIGINT NOT NULL, note TEXT, version BIGINT NOT NULL DEFAULT 1)",
            )?;
            for chunk in (1..=rows).collect::<Vec<_>>().chunks(500) {
                let mut sql = Sql::new("INSERT INTO items (id, grp, ts, note) VALUES ");
                for (i, id) in chunk.iter().enumerate() {
                    let ts = if id % 3 == 0 { 500 } else { (id * id) % 997 };
                    sql.push(
                        if i == 0 {
                            "(?, ?, ?, ?)"
                        } else {
                            ", (?, ?, ?, ?)"
                        },
                        [
                            Bind::Int(*id),
                            Bind::Int(id % 3),
                            Bind::Int(ts),
                            Bind::Text(format!("note {id}")),
                        ],
                    );
                }
                c.execute(&sql)?;
            }
            Ok(())
        })
        .await
        .expect("seed items");
}

fn job(name: &str, strategy: Strategy, source: Source) -> Job {
    let name_owned = name.to_owned();
    Job::builder(name)
        .source(source)
        .strategy(strategy)
        .processor(move |row: &SourceRow, _: &Scope| {
            Ok(Some(tranche::Message::new(
                &name_owned,
                row.key,
                2,
                Vec::new(),
            )))
        })
        .sink(Arc::new(MemorySink::new()))
        .build()
        .expect("valid job")
}

fn items() -> Source {
    Source::new("items", "id", "ts").unwrap()
}

fn open(url: &str) -> Store {
    Store::open(url, &StoreOptions::default()).expect("open store")
}

const LEASE: Duration = Duration::from_secs(30);

/// A late checkpoint of 50 rows by a holder whose lease was taken over
/// is refused.
async fn assert_fenced_off(store: &Store, partition_id: i64, owner: &str, epoch: i64) {
    let late = store
        .checkpoint(Checkpoint {
            partition_id,
            owner: owner.into(),
            epoch,
            cursor: Cursor::new(99, 99),
            rows: 50,
            done: false,
            dead_letters: vec![],
            lease: LEASE,
        })
        .await;
    assert!(
        matches!(late, Err(StoreError::LeaseLost { .. })),
        "{late:?}"
    );
}

/// A run of job `name` over 100 seeded items, planned as one range
/// partition.
async fn one_partition_run(store: &Store, name: &str) -> RunRecord {
    seed_items(store, 100).await;
    let job = job(name, Strategy::Range { partitions: 1 }, items());
    let run = store
        .open_run(name, "{}", None, &Throttle::default())
        .await
        .unwrap();
    store
        .plan_run(run.id, job.source(), job.scopes(), job.strategy(), 100)
        .await
        .unwrap();
    run
}

/// Reads every row of a partition through the keyset pages.
async fn walk(
    store: &Store,
    job: &Job,
    p: &tranche::store::PartitionRecord,
    page: usize,
) -> Vec<SourceRow> {
    let mut out = Vec::new();
    let mut cursor = p.cursor;
    loop {
        let fetched = store
            .fetch_page(job.source(), p, cursor, page)
            .await
            .unwrap();
        assert!(fetched.unreadable.is_empty(), "{:?}", fetched.unreadable);
        let rows = fetched.rows;
        if rows.is_empty() {
            return out;
        }
        let last = rows.last().unwrap();
        cursor = Some(Cursor::new(last.order, last.key));
        for w in rows.windows(2) {
            assert!(
                (w[0].order, w[0].key) < (w[1].order, w[1].key),
                "keyset order"
            );
        }
        out.extend(rows);
    }
}

async fn migrations_are_idempotent(url: String) {
    let first = tranche::run_migrations(&url).unwrap();
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count();
    assert_eq!(
        first.len(),
        shipped,
        "every migration applied on a fresh database"
    );
    assert!(tranche::run_migrations(&url).unwrap().is_empty());
    // The async entry point agrees, without blocking the caller's executor.
    assert!(tranche::migrate(&url).await.unwrap().is_empty());
}

/// A `mysql://` URL in a build without the `mysql` feature is refused,
/// naming the feature, before anything connects; its password unshown.
#[cfg(not(feature = "mysql"))]
#[test]
fn a_mysql_url_without_the_feature_names_the_feature() {
    let err = tranche::run_migrations("mysql://app:S3cret@127.0.0.1:3306/shop").unwrap_err();
    let text = common::chain(&err);
    assert!(text.contains("mysql` feature"), "{text}");
    assert!(
        text.contains("mysql://app:***@127.0.0.1:3306/shop"),
        "{text}"
    );
    assert!(!text.contains("S3cret"), "{text}");
}

/// Outside an actix System a store cannot run its executor: opening one
/// says so, instead of panicking.
#[test]
fn opening_a_store_outside_a_runtime_is_an_error_not_a_panic() {
    let (_dir, url) = common::sqlite_database();
    match Store::open(&url, &StoreOptions::default()) {
        Err(StoreError::Unsupported(why)) => {
            assert!(why.contains("RuntimeHandle::start"), "{why}")
        }
        Err(other) => panic!("expected Unsupported, got {other}"),
        Ok(_) => panic!("expected an error outside an actix System"),
    }
}

async fn range_plan_covers_every_row_once_and_is_reused(url: String) {
    let store = open(&url);
    seed_items(&store, 3000).await;
    let job = job("cover", Strategy::Range { partitions: 7 }, items());
    let run = store
        .open_run("cover", "{}", None, &Throttle::default())
        .await
        .unwrap();
    assert_eq!(
        store
            .open_run("cover", "{}", None, &Throttle::default())
            .await
            .unwrap()
            .id,
        run.id,
        "one active run per job"
    );
    let plan = store
        .plan_run(run.id, job.source(), job.scopes(), job.strategy(), 100)
        .await
        .unwrap();
    assert!(!plan.reused);
    assert_eq!(plan.partitions.len(), 7);
    assert_eq!(plan.run.state, RunState::Running);
    assert_eq!(plan.run.rows_identified, 3000);
    let again = store
        .plan_run(run.id, job.source(), job.scopes(), job.strategy(), 100)
        .await
        .unwrap();
    assert!(again.reused, "planning twice reuses the partitions");
    assert_eq!(
        again.partitions.iter().map(|p| p.id).collect::<Vec<_>>(),
        plan.partitions.iter().map(|p| p.id).collect::<Vec<_>>()
    );
    let mut seen = BTreeSet::new();
    for p in &plan.partitions {
        let rows = walk(&store, &job, p, 64).await;
        assert_eq!(
            rows.len() as i64,
            p.rows_planned,
            "partition {} size as planned",
            p.number
        );
        for r in rows {
            assert!(seen.insert(r.key), "row {} read twice", r.key);
        }
    }
    assert_eq!(seen.len(), 3000, "every row read once");
    let sizes: Vec<i64> = plan.partitions.iter().map(|p| p.rows_planned).collect();
    assert!(
        sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
        "quantile sizes {sizes:?}"
    );
}

async fn the_high_water_mark_excludes_later_rows(url: String) {
    let store = open(&url);
    seed_items(&store, 500).await;
    let job = job("hwm", Strategy::Range { partitions: 3 }, items());
    let run = store
        .open_run("hwm", "{}", None, &Throttle::default())
        .await
        .unwrap();
    let plan = store
        .plan_run(run.id, job.source(), job.scopes(), job.strategy(), 100)
        .await
        .unwrap();
    store
        .run(|c| {
            c.batch("INSERT INTO items (id, grp, ts) VALUES (100000, 0, 5000), (100001, 0, 996)")
        })
        .await
        .unwrap();
    let mut total = 0;
    for p in &plan.partitions {
        let rows = walk(&store, &job, p, 50).await;
        assert!(rows.iter().all(|r| r.key < 100000), "late row read");
        total += rows.len();
    }
    assert_eq!(total, 500);
}

async fn scopes_and_filters_are_bound_not_spliced(url: String) {
    let store = open(&url);
    seed_items(&store, 300).await;
    let hostile = "x'); DROP TABLE items; --";
    let source = items()
        .filter("note", Op::Ne, FilterValue::Text(hostile.into()))
        .unwrap();
    let scope = Scope {
        label: "grp 1".into(),
        conditions: vec![tranche::job::Condition::new("grp", Op::Eq, FilterValue::Int(1)).unwrap()],
        params: serde_json::json!({"grp": 1}),
    };
    let job = Job::builder("scoped")
        .source(source)
        .scopes(tranche::job::Scopes::Fixed(vec![scope]))
        .strategy(Strategy::Range { partitions: 2 })
        .processor(|_: &SourceRow, _: &Scope| Ok(None))
        .sink(Arc::new(MemorySink::new()))
        .build()
        .unwrap();
    let run = store
        .open_run("scoped", "{}", None, &Throttle::default())
        .await
        .unwrap();
    let plan = store
        .plan_run(run.id, job.source(), job.scopes(), job.strategy(), 100)
        .await
        .unwrap();
    assert_eq!(plan.run.rows_identified, 100);
    for p in &plan.partitions {
        assert_eq!(p.scope.param_i64("grp"), Some(1));
        assert!(walk(&store, &job, p, 30)
            .await
            .iter()
            .all(|r| r.key % 3 == 1));
    }
    assert!(Source::new("items; DROP TABLE items", "id", "ts").is_err());
}

async fn modulo_partitions_take_key_mod_n(url: String) {
    let store = open(&url);
    seed_items(&store, 1000).await;
    let job = job("modulo", Strategy::Modulo { modulus: 5 }, items());
    let run = store
        .open_run("modulo", "{}", None, &Throttle::default())
        .await
        .unwrap();
    let plan = store
        .plan_run(run.id, job.source(), job.scopes(), job.strategy(), 100)
        .await
        .unwrap();
    assert_eq!(plan.partitions.len(), 5);
    let mut all = BTreeSet::new();
    for p in &plan.partitions {
        let (m, r) = p.modulo.unwrap();
        let rows = walk(&store, &job, p, 77).await;
        assert_eq!(rows.len() as i64, p.rows_planned);
        assert!(rows.iter().all(|row| row.key % m == r));
        all.extend(rows.iter().map(|r| r.key));
    }
    assert_eq!(all.len(), 1000);
}

async fn claims_are_exclusive_and_bump_the_epoch(url: String) {
    let store = open(&url);
    seed_items(&store, 100).await;
    let job = job("claims", Strategy::Range { partitions: 2 }, items());
    let run = store
        .open_run("claims", "{}", None, &Throttle::default())
        .await
        .unwrap();
    store
        .plan_run(run.id, job.source(), job.scopes(), job.strategy(), 100)
        .await
        .unwrap();
    let a = store.claim(run.id, "a", LEASE).await.unwrap().unwrap();
    let b = store.claim(run.id, "b", LEASE).await.unwrap().unwrap();
    assert_ne!(a.id, b.id);
    assert_eq!(
        (a.epoch, a.owner.as_deref(), a.state),
        (1, Some("a"), PartitionState::Claimed)
    );
    assert!(!a.taken_over);
    assert!(
        store.claim(run.id, "c", LEASE).await.unwrap().is_none(),
        "nothing left"
    );
    let held = store.renew_leases("a", &[(a.id, 1)], LEASE).await.unwrap();
    assert_eq!(held, vec![(a.id, 1)]);
    // Only the pairs named are renewed: an instance restarted under the
    // same id does not keep its predecessor's leases alive.
    assert!(store
        .renew_leases("a", &[(b.id, 1)], LEASE)
        .await
        .unwrap()
        .is_empty());
}

async fn an_expired_lease_is_taken_over_and_the_old_holder_fenced(url: String) {
    let store = open(&url);
    let run = one_partition_run(&store, "fence").await;
    let zombie = store
        .claim(run.id, "zombie", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    store
        .checkpoint(Checkpoint {
            partition_id: zombie.id,
            owner: "zombie".into(),
            epoch: zombie.epoch,
            cursor: Cursor::new(10, 10),
            rows: 10,
            done: false,
            dead_letters: vec![],
            lease: Duration::from_millis(1),
        })
        .await
        .unwrap();
    // Wait on the database clock, not ours, for the lease to pass.
    let expires = store
        .partition(zombie.id)
        .await
        .unwrap()
        .lease_expires_ms
        .unwrap();
    while store.now_ms().await.unwrap() <= expires {
        tokio::task::yield_now().await;
    }
    let heir = store.claim(run.id, "heir", LEASE).await.unwrap().unwrap();
    assert_eq!(heir.id, zombie.id);
    assert_eq!(heir.epoch, zombie.epoch + 1);
    assert!(heir.taken_over);
    assert_eq!(
        heir.cursor,
        Some(Cursor::new(10, 10)),
        "resumes from the checkpoint"
    );
    assert_eq!(heir.rows_done, 10);

    assert_fenced_off(&store, zombie.id, "zombie", zombie.epoch).await;
    assert!(matches!(
        store.complete(zombie.id, "zombie", zombie.epoch).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(store
        .renew_leases("zombie", &[(zombie.id, zombie.epoch)], LEASE)
        .await
        .unwrap()
        .is_empty());
    let now = store.partition(zombie.id).await.unwrap();
    assert_eq!(
        (now.cursor, now.rows_done),
        (Some(Cursor::new(10, 10)), 10),
        "zombie wrote nothing"
    );
    store
        .checkpoint(Checkpoint {
            partition_id: heir.id,
            owner: "heir".into(),
            epoch: heir.epoch,
            cursor: Cursor::new(20, 20),
            rows: 90,
            done: true,
            dead_letters: vec![],
            lease: LEASE,
        })
        .await
        .unwrap();
    let done = store.partition(heir.id).await.unwrap();
    assert_eq!(
        (done.state, done.rows_done, done.takeovers),
        (PartitionState::Done, 100, 1)
    );
    let closed = store.finish_run_if_complete(run.id).await.unwrap();
    assert_eq!((closed.state, closed.rows_done), (RunState::Done, 100));
}

async fn release_failure_and_dead_letters(url: String) {
    let store = open(&url);
    seed_items(&store, 100).await;
    let job = job("fail", Strategy::Range { partitions: 2 }, items());
    let run = store
        .open_run("fail", "{}", None, &Throttle::default())
        .await
        .unwrap();
    store
        .plan_run(run.id, job.source(), job.scopes(), job.strategy(), 100)
        .await
        .unwrap();
    let p = store.claim(run.id, "me", LEASE).await.unwrap().unwrap();
    let letter = DeadLetter::new(run.id, Some(p.id), Some(7), "bad row");
    store
        .checkpoint(Checkpoint {
            partition_id: p.id,
            owner: "me".into(),
            epoch: p.epoch,
            cursor: Cursor::new(1, 7),
            rows: 7,
            done: false,
            dead_letters: vec![letter.clone()],
            lease: LEASE,
        })
        .await
        .unwrap();
    store.release(p.id, "me", p.epoch).await.unwrap();
    let again = store.claim(run.id, "me", LEASE).await.unwrap().unwrap();
    assert_eq!(
        (again.id, again.cursor, again.taken_over),
        (p.id, Some(Cursor::new(1, 7)), false)
    );
    // A replayed page records its dead letter once.
    store
        .checkpoint(Checkpoint {
            partition_id: again.id,
            owner: "me".into(),
            epoch: again.epoch,
            cursor: Cursor::new(1, 7),
            rows: 0,
            done: false,
            dead_letters: vec![letter.clone()],
            lease: LEASE,
        })
        .await
        .unwrap();
    assert_eq!(store.dead_letters(run.id).await.unwrap(), vec![letter]);
    assert_eq!(
        store
            .record_failure(again.id, "me", again.epoch, "boom", false)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .record_failure(
                again.id,
                "me",
                again.epoch,
                "boom at amqp://app:s3cr%2Fet@rabbit:5672/%2f",
                true
            )
            .await
            .unwrap(),
        2
    );
    // A stored error never holds a password, whoever wrote it.
    let failed = store.partition(again.id).await.unwrap();
    assert_eq!(
        (failed.state, failed.last_error.as_deref()),
        (
            PartitionState::Failed,
            Some("boom at amqp://app:***@rabbit:5672/%2f")
        )
    );
    let other = store.claim(run.id, "me", LEASE).await.unwrap().unwrap();
    assert_eq!(
        store.finish_run_if_complete(run.id).await.unwrap().state,
        RunState::Running
    );
    store.complete(other.id, "me", other.epoch).await.unwrap();
    assert_eq!(
        store.finish_run_if_complete(run.id).await.unwrap().state,
        RunState::Failed
    );
    assert_eq!(store.runs("fail", 10).await.unwrap().len(), 1);
}

async fn the_job_lease_admits_one_identifier(url: String) {
    let store = open(&url);
    assert!(store.acquire_job_lease("j", "a", LEASE).await.unwrap());
    assert!(!store.acquire_job_lease("j", "b", LEASE).await.unwrap());
    assert!(
        store.acquire_job_lease("j", "a", LEASE).await.unwrap(),
        "re-entrant"
    );
    assert!(store.renew_job_lease("j", "a", LEASE).await.unwrap());
    store.release_job_lease("j", "a").await.unwrap();
    // A renewal arriving after the release does not take the lease back.
    assert!(!store.renew_job_lease("j", "a", LEASE).await.unwrap());
    assert!(store.acquire_job_lease("j", "b", LEASE).await.unwrap());
}

async fn updates_are_idempotent(url: String) {
    let store = open(&url);
    seed_items(&store, 10).await;
    let spec = UpdateSpec::new("items", "id", "version").unwrap();
    let sink = UpdateSink::new(store.clone(), spec);
    let batch = |pairs: &[(i64, i64)]| -> Vec<Message> {
        pairs
            .iter()
            .map(|&(k, v)| Message::new("j", k, v, Vec::new()))
            .collect()
    };
    let first = batch(&[(1, 3), (2, 3), (3, 4), (999, 3)]);
    // Three rows move; key 999 has no row and changes nothing.
    assert_eq!(sink.deliver(&first).await.unwrap().duplicates, 1);
    assert_eq!(sink.deliver(&first).await.unwrap().duplicates, 4);
    assert_eq!(
        sink.deliver(&batch(&[(3, 2)])).await.unwrap().duplicates,
        1,
        "never moves back"
    );
    let versions: Vec<(i64, i64)> = store
        .run(|c| {
            c.load::<KeyVersion>(&Sql::new(
                "SELECT id AS k, version AS v FROM items WHERE id <= 4 ORDER BY id",
            ))
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.k, r.v))
        .collect();
    assert_eq!(versions, vec![(1, 3), (2, 3), (3, 4), (4, 1)]);
}

#[derive(diesel::QueryableByName)]
struct KeyVersion {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    k: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    v: i64,
}

async fn timestamp_order_columns_page_in_utc_microseconds(url: String) {
    let store = open(&url);
    let source = Source::new("stamped", "id", "at")
        .unwrap()
        .order_by_timestamp();
    let job = job("stamped", Strategy::Range { partitions: 4 }, source);
    let run = store
        .open_run("stamped", "{}", None, &Throttle::default())
        .await
        .unwrap();
    if store.dialect() == tranche::store::Dialect::Sqlite {
        store
            .run(|c| c.batch("CREATE TABLE stamped (id INTEGER PRIMARY KEY, at TEXT)"))
            .await
            .unwrap();
        let err = store
            .plan_run(run.id, job.source(), job.scopes(), job.strategy(), 100)
            .await
            .unwrap_err();
        assert!(common::chain(&err).contains("source.order_kind"), "{err}");
        return;
    }
    // 1200 rows over 3 distinct instants, with microseconds: heavy ties.
    // Written in a session whose time zone is not UTC; on PostgreSQL the
    // session keeps it, on MySQL (whose TIMESTAMP values are shown in the
    // session's zone) tranche's sessions are always in UTC.
    let mysql = store.dialect() == tranche::store::Dialect::Mysql;
    store
        .run(move |c| {
            c.batch(if mysql {
                "CREATE TABLE stamped (id BIGINT PRIMARY KEY, at TIMESTAMP(6) NOT NULL, KEY (at)); \
                 SET time_zone = '+02:00'; \
                 INSERT INTO stamped WITH RECURSIVE g (n) AS \
                   (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < 39), \
                   ids (id) AS (SELECT a.n * 30 + b.n + 1 FROM g a, g b WHERE b.n < 30) \
                 SELECT id, TIMESTAMP '2021-03-04 05:06:07.123456' + INTERVAL (id % 3) DAY \
                   + INTERVAL (id % 3) MICROSECOND FROM ids; \
                 SET time_zone = '+00:00'"
            } else {
                "CREATE TABLE stamped (id BIGINT PRIMARY KEY, at TIMESTAMPTZ NOT NULL); \
                 INSERT INTO stamped SELECT g, TIMESTAMPTZ '2021-03-04 05:06:07.123456+02' \
                 + (g % 3) * INTERVAL '1 day 1 microsecond' FROM generate_series(1, 1200) g; \
                 SET TIME ZONE 'America/New_York'"
            })
        })
        .await
        .unwrap();
    let plan = store
        .plan_run(run.id, job.source(), job.scopes(), job.strategy(), 100)
        .await
        .unwrap();
    assert_eq!((plan.partitions.len(), plan.run.rows_identified), (4, 1200));
    let mut seen = BTreeSet::new();
    for p in &plan.partitions {
        let rows = walk(&store, &job, p, 70).await;
        assert_eq!(rows.len() as i64, p.rows_planned);
        for r in rows {
            // 2021-03-04T03:06:07.123456Z plus (id % 3) days and microseconds.
            let expected = 1_614_827_167_123_456 + (r.key % 3) * (86_400_000_000 + 1);
            assert_eq!(r.order, expected, "row {}", r.key);
            assert!(seen.insert(r.key));
        }
    }
    assert_eq!(seen.len(), 1200);
}

async fn a_run_key_names_one_run_in_any_state(url: String) {
    let store = open(&url);
    seed_items(&store, 50).await;
    let job = job("keyed", Strategy::Range { partitions: 1 }, items());
    let first = store
        .open_run("keyed", "{}", Some("tick-1"), &Throttle::default())
        .await
        .unwrap();
    assert_eq!(first.run_key.as_deref(), Some("tick-1"));
    // Same key: the same run, and an unkeyed start joins it while active.
    assert_eq!(
        store
            .open_run("keyed", "{}", Some("tick-1"), &Throttle::default())
            .await
            .unwrap()
            .id,
        first.id
    );
    assert_eq!(
        store
            .open_run("keyed", "{}", None, &Throttle::default())
            .await
            .unwrap()
            .id,
        first.id
    );
    // Another key while it is active is refused, naming the active run.
    match store
        .open_run("keyed", "{}", Some("tick-2"), &Throttle::default())
        .await
    {
        Err(StoreError::RunActive { run_id, key, .. }) => {
            assert_eq!((run_id, key.as_str()), (first.id, "tick-2"))
        }
        other => panic!("expected RunActive, got {other:?}"),
    }
    store
        .plan_run(first.id, job.source(), job.scopes(), job.strategy(), 100)
        .await
        .unwrap();
    let p = store.claim(first.id, "a", LEASE).await.unwrap().unwrap();
    store
        .checkpoint(Checkpoint {
            partition_id: p.id,
            owner: "a".into(),
            epoch: p.epoch,
            cursor: Cursor::new(996, 50),
            rows: 50,
            done: true,
            dead_letters: vec![],
            lease: LEASE,
        })
        .await
        .unwrap();
    let done = store.finish_run_if_complete(first.id).await.unwrap();
    assert_eq!(done.state, RunState::Done);
    // After it ended, its key still names it: nothing starts again.
    let again = store
        .open_run("keyed", "{}", Some("tick-1"), &Throttle::default())
        .await
        .unwrap();
    assert_eq!((again.id, again.state), (first.id, RunState::Done));
    assert_eq!(
        store
            .run_by_key("keyed", "tick-1")
            .await
            .unwrap()
            .map(|r| r.id),
        Some(first.id)
    );
    // A new key starts a new run now that none is active.
    let second = store
        .open_run("keyed", "{}", Some("tick-2"), &Throttle::default())
        .await
        .unwrap();
    assert_ne!(second.id, first.id);
    assert_eq!(second.state, RunState::Planning);
}

async fn a_steal_splits_the_largest_remaining_range_and_the_holder_learns_it(url: String) {
    let store = open(&url);
    seed_items(&store, 3000).await;
    let job = job("steal", Strategy::Range { partitions: 2 }, items());
    let run = store
        .open_run("steal", "{}", None, &Throttle::default())
        .await
        .unwrap();
    let plan = store
        .plan_run(run.id, job.source(), job.scopes(), job.strategy(), 100)
        .await
        .unwrap();
    let steal = tranche::store::Steal::for_page_size(100);
    // Nothing claimed: nothing to steal (pending partitions are claimed).
    assert!(store
        .steal(job.source(), run.id, "thief", LEASE, steal)
        .await
        .unwrap()
        .is_none());
    let holder = store.claim(run.id, "holder", LEASE).await.unwrap().unwrap();
    let first_page = store
        .fetch_page(job.source(), &holder, None, 100)
        .await
        .unwrap()
        .rows;
    let last = first_page.last().unwrap();
    store
        .checkpoint(Checkpoint {
            partition_id: holder.id,
            owner: "holder".into(),
            epoch: holder.epoch,
            cursor: Cursor::new(last.order, last.key),
            rows: 100,
            done: false,
            dead_letters: vec![],
            lease: LEASE,
        })
        .await
        .unwrap();
    let before = walk(&store, &job, &store.partition(holder.id).await.unwrap(), 97).await;
    let stolen = store
        .steal(job.source(), run.id, "thief", LEASE, steal)
        .await
        .unwrap()
        .expect("a range of ~1400 rows is worth splitting");
    assert_eq!(stolen.split_from, Some(holder.id));
    assert_eq!((stolen.owner.as_deref(), stolen.epoch), (Some("thief"), 1));
    assert_eq!(stolen.state, PartitionState::Claimed);
    assert_eq!(stolen.number as usize, plan.partitions.len());
    // The holder keeps its epoch; its next checkpoint reports the cut.
    let narrowed = store.partition(holder.id).await.unwrap();
    assert_eq!(narrowed.epoch, holder.epoch);
    let cut = stolen.range.unwrap().lower.unwrap();
    assert_eq!(narrowed.range.unwrap().upper, Some(cut));
    assert_eq!(stolen.range.unwrap().upper, holder.range.unwrap().upper);
    let kept = walk(&store, &job, &narrowed, 97).await;
    let taken = walk(&store, &job, &stolen, 97).await;
    assert!(
        kept.len() as u64 >= steal.margin,
        "the holder keeps at least its read-ahead"
    );
    assert!(!taken.is_empty());
    let rejoined: Vec<i64> = kept.iter().chain(&taken).map(|r| r.key).collect();
    assert_eq!(
        rejoined,
        before.iter().map(|r| r.key).collect::<Vec<_>>(),
        "the two halves are exactly the rest of the range, in order"
    );
    assert_eq!(
        narrowed.rows_planned + stolen.rows_planned,
        holder.rows_planned,
        "planned rows are shared, not invented"
    );
    let next = &kept[..100];
    let ack = store
        .checkpoint(Checkpoint {
            partition_id: holder.id,
            owner: "holder".into(),
            epoch: holder.epoch,
            cursor: Cursor::new(next[99].order, next[99].key),
            rows: 100,
            done: false,
            dead_letters: vec![],
            lease: LEASE,
        })
        .await
        .unwrap();
    assert_eq!(ack.upper, Some(cut));
    assert_eq!(ack.rows_planned, narrowed.rows_planned);
    // Below the threshold, nothing more is split.
    let big = tranche::store::Steal {
        margin: 100,
        min_rows: 100_000,
    };
    assert!(store
        .steal(job.source(), run.id, "thief", LEASE, big)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store.run_record(run.id).await.unwrap().partitions as usize,
        plan.partitions.len() + 1
    );
}

/// Two planners of one run at the same moment (say one whose job lease
/// expired during a long identification): the run is planned once.
async fn concurrent_planners_plan_once(url: String) {
    let store = open(&url);
    seed_items(&store, 20_000).await;
    let job = job("twice", Strategy::Range { partitions: 6 }, items());
    let run = store
        .open_run("twice", "{}", None, &Throttle::default())
        .await
        .unwrap();
    let (a, b) = futures::join!(
        store.plan_run(run.id, job.source(), job.scopes(), job.strategy(), 100),
        store.plan_run(run.id, job.source(), job.scopes(), job.strategy(), 100)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        [a.reused, b.reused].iter().filter(|r| !**r).count(),
        1,
        "exactly one planner planned"
    );
    let ids =
        |p: &tranche::store::PlanOutcome| p.partitions.iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(store.partitions(run.id).await.unwrap().len(), 6);
}

async fn the_outbox_holds_each_message_once(url: String) {
    use tranche::sink::OutboxSink;
    use tranche::{Message, Sink};
    let store = open(&url);
    let sink = OutboxSink::new(store.clone(), "relay");
    // Bytes that are not UTF-8 survive the round trip.
    let batch: Vec<Message> = (1..=450)
        .map(|k| Message::new("relay", k, 3, vec![0xff, 0x00, k as u8]))
        .collect();
    let first = sink.deliver(&batch).await.unwrap();
    assert_eq!((first.confirmed, first.duplicates), (450, 0));
    // A replay of part of it, with new messages: only the new are written.
    let replay: Vec<Message> = (401..=500)
        .map(|k| Message::new("relay", k, 3, vec![0xff, 0x00, k as u8]))
        .collect();
    let second = sink.deliver(&replay).await.unwrap();
    assert_eq!((second.confirmed, second.duplicates), (100, 50));
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        message_id: String,
        #[diesel(sql_type = diesel::sql_types::Binary)]
        payload: Vec<u8>,
    }
    let rows: Vec<Row> = store
        .run(|c| {
            c.load(&Sql::new(
                "SELECT message_id, payload FROM tranche_outbox WHERE job_name = 'relay' ORDER BY row_key",
            ))
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 500);
    assert_eq!(rows[6].message_id, "relay:7:3");
    assert_eq!(rows[6].payload, vec![0xff, 0x00, 7]);
    let bad = OutboxSink::new(store.clone(), "relay")
        .with_table("outbox; drop")
        .err()
        .unwrap();
    assert_eq!(bad.field, "sink.table");
}

/// Two throttle changes made at once both take effect: the second is read
/// and written after the first, not beside it.
async fn throttle_changes_made_at_once_both_take_effect(url: String) {
    let store = open(&url);
    let run = store
        .open_run("throttled", "{}", None, &Throttle::default())
        .await
        .unwrap();
    let (read_tx, read) = tokio::sync::oneshot::channel();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let first = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .update_throttle(run.id, move |t| {
                    read_tx.send(()).expect("the test waits");
                    // Read, not yet written: the second change starts now.
                    go_rx.recv().ok();
                    t.max_rows_per_s = Some(100);
                })
                .await
        }
    });
    read.await.expect("the first change has read the throttle");
    let second = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .update_throttle(run.id, |t| t.max_active_partitions = Some(2))
                .await
        }
    });
    go.send(()).unwrap();
    for change in [first, second] {
        assert!(matches!(
            change.await.unwrap().unwrap(),
            ThrottleOutcome::Set(_)
        ));
    }
    let stored = store.run_record(run.id).await.unwrap().throttle;
    assert_eq!(
        (stored.max_rows_per_s, stored.max_active_partitions),
        (Some(100), Some(2)),
        "{stored:?}"
    );
    let invalid = store
        .update_throttle(run.id, |t| t.max_rows_per_s = Some(0))
        .await
        .unwrap();
    assert!(
        matches!(&invalid, ThrottleOutcome::Invalid(e) if e.field.contains("max_rows_per_s")),
        "{invalid:?}"
    );
    assert_eq!(
        store
            .run_record(run.id)
            .await
            .unwrap()
            .throttle
            .max_rows_per_s,
        Some(100),
        "an invalid change stores nothing"
    );
}

on_both_backends!(
    #[actix::test]
    the_outbox_holds_each_message_once,
    throttle_changes_made_at_once_both_take_effect,
    concurrent_planners_plan_once,
    a_run_key_names_one_run_in_any_state,
    a_steal_splits_the_largest_remaining_range_and_the_holder_learns_it,
    migrations_are_idempotent,
    range_plan_covers_every_row_once_and_is_reused,
    the_high_water_mark_excludes_later_rows,
    scopes_and_filters_are_bound_not_spliced,
    modulo_partitions_take_key_mod_n,
    claims_are_exclusive_and_bump_the_epoch,
    an_expired_lease_is_taken_over_and_the_old_holder_fenced,
    release_failure_and_dead_letters,
    the_job_lease_admits_one_identifier,
    updates_are_idempotent,
    timestamp_order_columns_page_in_utc_microseconds,
);

/// A holder paused between two statements of a transaction (as a process
/// stopped inside a claim or a checkpoint) keeps the rows it locked only
/// until the server ends its idle session: once its lease has run out,
/// another instance claims the partition, and the holder's transaction is
/// rolled back and fails with a retryable error. SQLite has no server to
/// end a session; a paused writer there holds the write lock.
async fn a_holder_paused_inside_a_transaction_does_not_keep_its_partition(url: String) {
    let mut options = StoreOptions::default();
    options.threads = 1;
    options.idle_transaction_timeout = Some(Duration::from_secs(1));
    let paused = Store::open(&url, &options).expect("open the paused holder's store");
    let heir_store = open(&url);
    let run = one_partition_run(&heir_store, "paused").await;
    let held = paused
        .claim(run.id, "paused", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();

    // The holder locks what a claim and a checkpoint lock (the run's row,
    // the partition's row), writes, and stops before its next statement.
    let (locked_tx, locked) = tokio::sync::oneshot::channel();
    let (resume, resume_rx) = std::sync::mpsc::channel::<()>();
    let (run_id, partition_id, epoch) = (run.id, held.id, held.epoch);
    let stalled = tokio::spawn(async move {
        let ended = paused
            .run(move |c| {
                c.write_transaction(|c| {
                    c.execute(
                        &Sql::new("UPDATE tranche_runs SET id = id WHERE id = ?")
                            .bind(Bind::Int(run_id)),
                    )?;
                    c.execute(
                        &Sql::new(
                            "UPDATE tranche_partitions SET rows_done = rows_done + 7 \
                             WHERE id = ? AND owner = 'paused' AND epoch = ?",
                        )
                        .bind(Bind::Int(partition_id))
                        .bind(Bind::Int(epoch)),
                    )?;
                    locked_tx.send(()).expect("the test waits");
                    // Paused: no statement until the test lets it go on.
                    resume_rx.recv().ok();
                    Ok::<_, StoreError>(())
                })
            })
            .await;
        (ended, paused)
    });
    locked.await.expect("the holder took its locks");

    // The heir claims once the lease has passed on the database clock; a
    // claim skips a locked partition (or waits for the run's row), so
    // this only succeeds once the server has ended the paused session.
    let expires = held.lease_expires_ms.unwrap();
    let claimed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if heir_store.now_ms().await.unwrap() > expires {
                if let Some(p) = heir_store.claim(run_id, "heir", LEASE).await.unwrap() {
                    break p;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the heir claimed the paused holder's partition within 30 s");
    assert_eq!(
        (claimed.id, claimed.epoch, claimed.taken_over),
        (partition_id, epoch + 1, true)
    );
    assert_eq!(claimed.rows_done, 0, "the paused write was rolled back");

    resume.send(()).unwrap();
    let (ended, paused) = stalled.await.unwrap();
    let err = ended.expect_err("the paused holder's transaction cannot commit");
    assert!(err.is_retryable(), "an ended session is retryable: {err}");
    // On a new session, the holder's checkpoint is fenced off.
    assert_fenced_off(&paused, partition_id, "paused", epoch).await;
    assert_eq!(
        heir_store.partition(partition_id).await.unwrap().rows_done,
        0,
        "nothing of the paused transaction was committed"
    );
}

#[actix::test]
async fn a_holder_paused_inside_a_transaction_does_not_keep_its_partition_on_postgres() {
    let Some(db) = common::pg_database("paused_holder") else {
        return;
    };
    a_holder_paused_inside_a_transaction_does_not_keep_its_partition(db.url.clone()).await;
}

#[cfg(feature = "mysql")]
#[actix::test]
async fn a_holder_paused_inside_a_transaction_does_not_keep_its_partition_on_mysql() {
    let Some(db) = common::mysql_database("paused_holder") else {
        return;
    };
    a_holder_paused_inside_a_transaction_does_not_keep_its_partition(db.url.clone()).await;
}

/// A session the server ended fails the statement that finds it, and is
/// then dropped by the pool instead of being handed out again: the store
/// comes back by itself, at the cost of one failure per pooled session.
#[actix::test]
async fn a_connection_the_server_ended_is_not_reused() {
    use diesel::{Connection as _, PgConnection, RunQueryDsl};
    let Some(db) = common::pg_database("ended") else {
        return;
    };
    let mut options = StoreOptions::default();
    options.threads = 1;
    options.application_name = Some("tranche ended-session test".into());
    let store = Store::open(&db.url, &options).expect("open store");
    #[derive(diesel::QueryableByName)]
    struct Pid {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        pid: i32,
    }
    let pid = || async {
        store
            .run(|c| c.load::<Pid>(&Sql::new("SELECT pg_backend_pid() AS pid")))
            .await
            .map(|rows| rows[0].pid)
    };
    let before = pid().await.expect("a first query");

    let mut admin = PgConnection::establish(&db.url).expect("admin connection");
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let sessions = |admin: &mut PgConnection| {
        diesel::sql_query(
            "SELECT COUNT(*) AS n FROM pg_stat_activity \
             WHERE application_name = 'tranche ended-session test'",
        )
        .load::<N>(admin)
        .expect("count sessions")[0]
            .n
    };
    // The first query took the pool's idle session, so the pool opens
    // another in the background to keep one idle; wait until it is there,
    // which fills the pool, so that no session opens after the terminate.
    common::wait_until("the pool to hold its two sessions", 30, || {
        sessions(&mut admin) == 2
    });
    diesel::sql_query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'tranche ended-session test'",
    )
    .execute(&mut admin)
    .expect("terminate the store's sessions");
    common::wait_until("the terminated sessions to be gone", 30, || {
        sessions(&mut admin) == 0
    });

    // The pool holds threads + 1 = 2 sessions: at most that many failures,
    // each one a retryable error, then a new session answers.
    let mut failures = 0;
    let after = loop {
        match pid().await {
            Ok(p) => break p,
            Err(e) => {
                assert!(e.is_retryable(), "a dead session is retryable: {e}");
                failures += 1;
                assert!(failures <= 2, "a dead session was handed out again: {e}");
            }
        }
    };
    assert_ne!(after, before, "a new session");
    for _ in 0..3 {
        pid().await.expect("the store stays usable");
    }
}
