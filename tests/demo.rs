//! The demo binary end to end on both backends: seed, identify, update,
//! verify; a second run finds nothing left; bad flags fail clearly.

mod common;

use std::path::Path;

fn summary(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("summary written")).expect("summary is JSON")
}

fn demo_verifies(db: &str, dir: &Path) {
    let json = dir.join("summary.json");
    let args = [
        "demo",
        "--db",
        db,
        "--rows",
        "20000",
        "--partitions",
        "6",
        "--concurrency",
        "3",
        "--page-size",
        "256",
        "--fresh",
        "--quiet",
        "--summary-json",
        json.to_str().unwrap(),
    ];
    let out = common::run_tranche(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("verification: OK"), "{stdout}");
    let s = summary(&json);
    let identified = s["rows_identified"].as_i64().unwrap();
    assert!(
        identified > 5000,
        "a good share of subscriptions is eligible: {identified}"
    );
    assert_eq!(s["rows_published"].as_i64(), Some(identified));
    assert_eq!(s["rows_updated"].as_i64(), Some(identified));
    assert_eq!(s["rows_replayed"].as_i64(), Some(0));
    // Six planned, plus one per range an idle worker split off a busy one.
    assert_eq!(
        s["partitions"].as_i64(),
        Some(6 + s["steals"].as_i64().unwrap())
    );
    assert_eq!(s["verified"], true);
    assert_eq!(s["resumed"], false);
    assert!(s["rows_per_s"].as_f64().unwrap() > 0.0);
    assert!(s["elapsed_s"].as_f64().unwrap() > 0.0);

    // Running again finds nothing left to migrate and changes nothing.
    let again = common::run_tranche(
        &args[..args.len() - 4]
            .iter()
            .copied()
            .filter(|a| *a != "--fresh")
            .chain(["--quiet", "--summary-json", json.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let s = summary(&json);
    assert_eq!(s["rows_identified"].as_i64(), Some(0));
    assert_eq!(
        s["rows_updated"].as_i64(),
        Some(identified),
        "every update still in place, no other"
    );
    assert_eq!(s["verified"], true);
}

#[test]
fn the_demo_verifies_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("demo.db").display());
    demo_verifies(&db, dir.path());
}

#[test]
fn the_demo_verifies_on_postgres() {
    let Some(db) = common::pg_database("demo") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    demo_verifies(&db.url, dir.path());
}

#[cfg(feature = "mysql")]
#[test]
fn the_demo_verifies_on_mariadb() {
    let Some(db) = common::mysql_database("demo") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    demo_verifies(&db.url, dir.path());
}

#[test]
fn bad_flags_fail_before_anything_runs_and_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("demo.db").display());
    for (args, flag) in [
        (vec!["--sink", "kafka"], "--sink"),
        (vec!["--rows", "0"], "--rows"),
        (vec!["--page-size", "0"], "--page-size"),
        (vec!["--poll-interval", "0ms"], "runtime.poll_interval"),
        (vec!["--poll-interval", "500"], "--poll-interval"),
        (
            vec!["--lease", "1s", "--heartbeat", "1s"],
            "runtime.heartbeat",
        ),
        (vec!["--concurrency", "many"], "--concurrency"),
    ] {
        let mut all = vec!["demo", "--db", &db, "--quiet"];
        all.extend(args);
        let out = common::run_tranche(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{all:?} should fail");
        assert!(
            stderr.contains(flag),
            "{all:?}: error should name {flag}: {stderr}"
        );
    }
    assert!(!dir.path().join("demo.db").exists(), "nothing was created");
}

#[test]
fn credentials_never_reach_the_output() {
    let out = common::run_tranche(&[
        "demo",
        "--db",
        "postgres://app:hunter2@127.0.0.1:1/x",
        "--quiet",
    ]);
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("hunter2"), "{all}");
    assert!(all.contains("app:***@127.0.0.1:1"), "{all}");
}

fn demo_fills_the_outbox(db: &str, dir: &Path) {
    let json = dir.join("outbox.json");
    let out = common::run_tranche(&[
        "demo",
        "--db",
        db,
        "--rows",
        "20000",
        "--partitions",
        "4",
        "--page-size",
        "300",
        "--fresh",
        "--quiet",
        "--sink",
        "outbox",
        "--summary-json",
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&json);
    let identified = s["rows_identified"].as_i64().unwrap();
    assert!(identified > 5000, "{s}");
    assert_eq!(s["verified"], true, "{s}");
    assert_eq!(s["verification"]["delivered"].as_i64(), Some(identified));
    assert_eq!(s["rows_published"].as_i64(), Some(identified));
    assert_eq!(s["rows_replayed"].as_i64(), Some(0));
}

#[test]
fn the_demo_fills_the_outbox_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("outbox.db").display());
    demo_fills_the_outbox(&db, dir.path());
}

#[test]
fn the_demo_fills_the_outbox_on_postgres() {
    let Some(db) = common::pg_database("demo_outbox") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    demo_fills_the_outbox(&db.url, dir.path());
}

#[cfg(feature = "mysql")]
#[test]
fn the_demo_fills_the_outbox_on_mariadb() {
    let Some(db) = common::mysql_database("demo_outbox") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    demo_fills_the_outbox(&db.url, dir.path());
}

/// The demo through a broker: published, applied by two in-process
/// consumers, verified in the database.
fn demo_through(broker: &str, consumers: &str, dir: &Path) {
    let db = format!("sqlite://{}", dir.join("broker.db").display());
    demo_through_on(&db, broker, consumers, dir);
}

/// [`demo_through`] on the database at `db`.
fn demo_through_on(db: &str, broker: &str, consumers: &str, dir: &Path) {
    let json = dir.join("broker.json");
    let out = common::run_tranche(&[
        "demo",
        "--db",
        db,
        "--rows",
        "20000",
        "--partitions",
        "4",
        "--page-size",
        "300",
        "--fresh",
        "--quiet",
        "--sink",
        broker,
        "--consumers",
        consumers,
        "--summary-json",
        json.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = summary(&json);
    let identified = s["rows_identified"].as_u64().unwrap();
    assert!(identified > 5000, "{s}");
    assert_eq!(s["verified"], true, "{s}");
    assert_eq!(s["rows_updated"].as_u64(), Some(identified), "{s}");
    assert!(
        s["consumed"]["received"].as_u64().unwrap() >= identified,
        "{s}"
    );
    assert_eq!(s["consumed"]["dead_lettered"].as_u64(), Some(0), "{s}");
    assert!(stdout.contains("consumers:"), "{stdout}");
}

/// The demo's queue is one per broker: its RabbitMQ runs take turns.
static ONE_RABBITMQ_DEMO: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn the_demo_through_rabbitmq_verifies() {
    let _one = ONE_RABBITMQ_DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let Some(url) = common::amqp_url() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    demo_through(&url, "2", dir.path());
}

/// The consumers' `versions` apply on MariaDB.
#[cfg(feature = "mysql")]
#[test]
fn the_demo_through_rabbitmq_verifies_on_mariadb() {
    let _one = ONE_RABBITMQ_DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let Some(url) = common::amqp_url() else {
        return;
    };
    let Some(db) = common::mysql_database("demo_amqp") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    demo_through_on(&db.url, &url, "2", dir.path());
}

#[test]
fn the_demo_through_jetstream_verifies() {
    let Some(url) = common::nats_url() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    demo_through(&url, "2", dir.path());
}

/// One consumer: several would rebalance while consuming, and the tansu
/// broker on the test machine skips records when a fetch resumes in the
/// middle of a record batch (tests/consume.rs covers groups with one-record
/// batches).
#[test]
fn the_demo_through_kafka_verifies() {
    let Some(brokers) = common::kafka_brokers() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    demo_through(&format!("kafka://{brokers}"), "1", dir.path());
}

/// Two demo processes started at the same moment on one fresh database
/// (as `tranche demo` on two hosts would be): one seeds, the other waits for
/// its seeding lock and then finds the seed complete; both take part in one
/// run and verify it, and the table holds each row once.
fn two_demos_at_once_seed_once(db: &str, count_rows: impl Fn() -> i64) {
    let rows = "30000";
    let demo = || {
        common::tranche_command()
            .args([
                "demo",
                "--db",
                db,
                "--rows",
                rows,
                "--partitions",
                "4",
                "--quiet",
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start tranche demo")
    };
    let (a, b) = (demo(), demo());
    let mut seeded = 0;
    for child in [a, b] {
        let out = child.wait_with_output().expect("demo ends");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "demo failed: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("verification: OK"), "{stdout}");
        if stdout.contains(&format!("seeded {rows} subscriptions")) {
            seeded += 1;
        } else {
            assert!(stdout.contains("reusing the seeded data set"), "{stdout}");
        }
    }
    assert_eq!(seeded, 1, "exactly one process seeds");
    assert_eq!(count_rows(), 30_000, "each row once");
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

const COUNT_SUBSCRIPTIONS: &str = "SELECT COUNT(*) AS n FROM demo_subscriptions";

#[test]
fn two_demos_at_once_seed_one_sqlite_database_once() {
    use diesel::{Connection, RunQueryDsl, SqliteConnection};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("demo.db");
    two_demos_at_once_seed_once(path.to_str().unwrap(), || {
        let mut c = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
        diesel::sql_query(COUNT_SUBSCRIPTIONS)
            .get_result::<Count>(&mut c)
            .unwrap()
            .n
    });
}

#[test]
fn two_demos_at_once_seed_one_postgres_database_once() {
    use diesel::{Connection, PgConnection, RunQueryDsl};
    let Some(db) = common::pg_database("demo_prepare") else {
        return;
    };
    two_demos_at_once_seed_once(&db.url, || {
        let mut c = PgConnection::establish(&db.url).unwrap();
        diesel::sql_query(COUNT_SUBSCRIPTIONS)
            .get_result::<Count>(&mut c)
            .unwrap()
            .n
    });
}

#[cfg(feature = "mysql")]
#[test]
fn two_demos_at_once_seed_one_mariadb_database_once() {
    use diesel::{Connection, MysqlConnection, RunQueryDsl};
    let Some(db) = common::mysql_database("demo_prepare") else {
        return;
    };
    two_demos_at_once_seed_once(&db.url, || {
        let mut c = MysqlConnection::establish(&db.url).unwrap();
        diesel::sql_query(COUNT_SUBSCRIPTIONS)
            .get_result::<Count>(&mut c)
            .unwrap()
            .n
    });
}
