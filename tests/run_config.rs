//! `tranche run --config job.toml`: a configured job over a user's own
//! table, with the file sink on SQLite and the update sink on PostgreSQL,
//! and bad files rejected before anything is touched.

mod common;

use std::collections::HashMap;
use std::path::Path;

use diesel::connection::SimpleConnection;
use diesel::sql_types::BigInt;
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl, SqliteConnection};

/// 3000 orders; every fourth is cancelled; many share a timestamp.
const ORDERS: &str = "CREATE TABLE orders (id BIGINT PRIMARY KEY, placed_at BIGINT NOT NULL, \
     status TEXT NOT NULL, version BIGINT NOT NULL DEFAULT 1); \
     CREATE INDEX orders_paid ON orders (status, placed_at, id);";

fn insert_orders() -> String {
    let values: Vec<String> = (1..=3000)
        .map(|id| {
            let status = if id % 4 == 0 { "cancelled" } else { "paid" };
            format!("({id}, {}, '{status}')", id / 10)
        })
        .collect();
    format!(
        "INSERT INTO orders (id, placed_at, status) VALUES {};",
        values.join(", ")
    )
}

fn job_file(dir: &Path, db: &str, strategy: &str, sink: &str) -> String {
    let path = dir.join("job.toml");
    std::fs::write(
        &path,
        format!(
            r#"database_url = "{db}"

[job]
name = "paid-orders"
version = 2

[source]
table = "orders"
key_column = "id"
order_column = "placed_at"
columns = ["status"]
filter = [{{ column = "status", op = "eq", value = "paid" }}]

[strategy]
{strategy}

[runtime]
page_size = 100
concurrency = 3

[sink]
{sink}
"#
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn a_configured_job_delivers_every_matching_row_once_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let mut c = SqliteConnection::establish(db_path.to_str().unwrap()).unwrap();
    c.batch_execute(&format!("{ORDERS}{}", insert_orders()))
        .unwrap();
    let out = dir.path().join("out.jsonl");
    let config = job_file(
        dir.path(),
        &format!("sqlite://{}", db_path.display()),
        "kind = \"modulo\"\nmodulus = 4",
        &format!("kind = \"jsonl\"\npath = \"{}\"", out.display()),
    );
    let summary = dir.path().join("summary.json");
    let run = common::run_tranche(&[
        "run",
        "--config",
        &config,
        "--quiet",
        "--summary-json",
        summary.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let mut seen: HashMap<i64, u32> = HashMap::new();
    for line in std::fs::read_to_string(&out).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = v["key"].as_i64().unwrap();
        assert_eq!(v["id"], format!("paid-orders:{key}:2"));
        assert_eq!(v["payload"]["columns"]["status"], "paid");
        assert_eq!(v["payload"]["order"].as_i64(), Some(key / 10));
        *seen.entry(key).or_default() += 1;
    }
    assert_eq!(seen.len(), 2250, "every paid order");
    assert!(seen.keys().all(|k| k % 4 != 0), "no cancelled order");
    assert!(seen.values().all(|&n| n == 1));
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(
        (
            s["state"].as_str(),
            s["partitions"].as_i64(),
            s["rows_done"].as_i64()
        ),
        (Some("done"), Some(4), Some(2250))
    );
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[test]
fn a_configured_update_job_advances_versions_on_postgres() {
    let Some(db) = common::pg_database("run_config") else {
        return;
    };
    let mut c = PgConnection::establish(&db.url).unwrap();
    c.batch_execute(&format!("{ORDERS}{}", insert_orders()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The URL comes from the flag; the file's is a placeholder.
    let config = job_file(
        dir.path(),
        "postgres://nobody@127.0.0.1:1/unused",
        "kind = \"range\"\npartitions = 5",
        "kind = \"update\"\ntable = \"orders\"\nkey_column = \"id\"\nversion_column = \"version\"",
    );
    let run = common::run_tranche(&["run", "--config", &config, "--db", &db.url, "--quiet"]);
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let mut count = |sql: &str| diesel::sql_query(sql).load::<Count>(&mut c).unwrap()[0].n;
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM orders WHERE version = 2"),
        2250
    );
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM orders WHERE version = 2 AND status <> 'paid'"),
        0
    );
}

#[test]
fn a_bad_job_file_fails_before_anything_is_touched_and_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("never.db");
    let db = format!("sqlite://{}", db_path.display());
    let good = job_file(
        dir.path(),
        &db,
        "kind = \"range\"\npartitions = 2",
        "kind = \"jsonl\"\npath = \"x.jsonl\"",
    );
    let text = std::fs::read_to_string(&good).unwrap();
    for (from, to, field) in [
        ("page_size = 100", "page_size = 0", "runtime.page_size"),
        (
            "table = \"orders\"",
            "table = \"orders; drop table orders\"",
            "source.table",
        ),
        ("concurrency = 3", "concurency = 3", "concurency"),
        ("partitions = 2", "partitions = 0", "strategy.partitions"),
    ] {
        std::fs::write(&good, text.replace(from, to)).unwrap();
        let out = common::run_tranche(&["run", "--config", &good, "--quiet"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{to} should be rejected");
        assert!(
            stderr.contains(field),
            "{to}: error should name {field}: {stderr}"
        );
    }
    // A flag or a variable is validated like the file, and the error
    // names the field and where the bad value came from.
    std::fs::write(&good, &text).unwrap();
    // (flags, a variable, what the error must name)
    type Case<'a> = (&'a [&'a str], Option<(&'a str, &'a str)>, &'a [&'a str]);
    let bad_settings: [Case; 6] = [
        (
            &["--concurrency", "0"],
            None,
            &["runtime.concurrency", "--concurrency"],
        ),
        (
            &["--lease", "30"],
            None,
            &["runtime.lease", "--lease", "unit"],
        ),
        (
            &["--work-stealing", "maybe"],
            None,
            &["runtime.work_stealing"],
        ),
        (
            &[],
            Some(("TRANCHE_PAGE_SIZE", "-5")),
            &["runtime.page_size", "TRANCHE_PAGE_SIZE"],
        ),
        (
            &[],
            Some(("TRANCHE_POLL_INTERVAL", "")),
            &["runtime.poll_interval"],
        ),
        (
            &["--lease", "1s"],
            Some(("TRANCHE_HEARTBEAT", "2s")),
            &["runtime.heartbeat", "TRANCHE_HEARTBEAT"],
        ),
    ];
    for (flags, var, named) in bad_settings {
        let mut command = common::tranche_command();
        command
            .args(["run", "--config", &good, "--quiet"])
            .args(flags);
        if let Some((k, v)) = var {
            command.env(k, v);
        }
        let out = command.output().expect("run tranche");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{flags:?} {var:?} should be rejected"
        );
        for name in named {
            assert!(
                stderr.contains(name),
                "{flags:?} {var:?}: should name {name}: {stderr}"
            );
        }
    }
    assert!(!db_path.exists(), "nothing was created");
}

#[test]
fn mistakes_the_catalog_shows_are_refused_before_a_run_or_a_file_exists() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let db = format!("sqlite://{}", db_path.display());
    let mut c = SqliteConnection::establish(db_path.to_str().unwrap()).unwrap();
    c.batch_execute(&format!("{ORDERS}{}", insert_orders()))
        .unwrap();
    let out = dir.path().join("out.jsonl");
    let config = job_file(
        dir.path(),
        &db,
        "kind = \"range\"\npartitions = 2",
        &format!("kind = \"jsonl\"\npath = \"{}\"", out.display()),
    );
    let text = std::fs::read_to_string(&config).unwrap();
    let update = "kind = \"update\"\ntable = \"orders\"\nkey_column = \"id\"\n\
                  version_column = \"revision\"";
    let jsonl = format!("kind = \"jsonl\"\npath = \"{}\"", out.display());
    for (from, to, field) in [
        ("table = \"orders\"", "table = \"order\"", "source.table"),
        (
            "order_column = \"placed_at\"",
            "order_column = \"placed\"",
            "source.order_column",
        ),
        (
            "columns = [\"status\"]",
            "columns = [\"email\"]",
            "source.columns[0]",
        ),
        ("value = \"paid\"", "value = 1", "source.filter[0].value"),
        (
            "order_column = \"placed_at\"",
            "order_column = \"placed_at\"\norder_kind = \"timestamp\"",
            "source.order_kind",
        ),
        (
            "order_column = \"placed_at\"",
            "order_column = \"version\"",
            "CREATE INDEX",
        ),
        (jsonl.as_str(), update, "sink.version_column"),
    ] {
        std::fs::write(&config, text.replace(from, to)).unwrap();
        let run = common::run_tranche(&["run", "--config", &config, "--quiet"]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{to} should be refused");
        assert!(
            stderr.contains(field),
            "{to}: should name {field}: {stderr}"
        );
        let runs = diesel::sql_query("SELECT COUNT(*) AS n FROM tranche_runs")
            .load::<Count>(&mut c)
            .unwrap()[0]
            .n;
        assert_eq!(runs, 0, "{to}: no run was opened");
        assert!(!out.exists(), "{to}: no output file was created");
    }
    // Fixed, the job runs.
    std::fs::write(&config, &text).unwrap();
    let run = common::run_tranche(&["run", "--config", &config, "--quiet"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 2250);
}

#[test]
fn a_one_time_schedule_runs_once_and_the_history_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let mut c = SqliteConnection::establish(db_path.to_str().unwrap()).unwrap();
    c.batch_execute(&format!("{ORDERS}{}", insert_orders()))
        .unwrap();
    let out = dir.path().join("out.jsonl");
    let config = job_file(
        dir.path(),
        &format!("sqlite://{}", db_path.display()),
        "kind = \"range\"\npartitions = 3",
        &format!("kind = \"jsonl\"\npath = \"{}\"", out.display()),
    );
    // No [schedule] yet: `schedule` refuses, naming the section.
    let refused = common::run_tranche(&["schedule", "--config", &config, "--quiet"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("schedule"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[schedule]\nat = \"2000-01-01T00:00:00Z\"\n");
    std::fs::write(&config, text).unwrap();
    let lines = || std::fs::read_to_string(&out).unwrap().lines().count();
    for round in 0..2 {
        let run = common::run_tranche(&["schedule", "--config", &config, "--quiet"]);
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(
            run.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(stdout.contains("run 1 ended done"), "{stdout}");
        // The second time the tick's key names the finished run: nothing
        // is delivered again.
        assert_eq!(lines(), 2250, "round {round}");
    }
    let history = common::run_tranche(&["history", "--config", &config, "--json"]);
    assert!(history.status.success());
    let runs: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["run_key"], "tick-2000-01-01T00:00:00.000Z");
    assert_eq!(runs[0]["state"], "done");
    assert_eq!(runs[0]["rows_done"], 2250);
    let table = common::run_tranche(&["history", "--config", &config]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("tick-2000-01-01T00:00:00.000Z") && table.contains("done"),
        "{table}"
    );
}

#[test]
fn modulo_workers_take_n_from_the_file_and_any_number_of_instances_share_them() {
    let Some(db) = common::pg_database("modulo_instances") else {
        return;
    };
    let mut c = PgConnection::establish(&db.url).unwrap();
    c.batch_execute(&format!("{ORDERS}{}", insert_orders()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = job_file(
        dir.path(),
        &db.url,
        "kind = \"modulo\"\nmodulus = 6",
        "kind = \"update\"\ntable = \"orders\"\nkey_column = \"id\"\nversion_column = \"version\"",
    );
    let spawn = |id: &str| {
        let summary = dir.path().join(format!("{id}.json"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_tranche"))
            .args(["run", "--config", &config, "--quiet", "--run-key", "once"])
            .args([
                "--instance-id",
                id,
                "--summary-json",
                summary.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        (child, summary)
    };
    let instances = [spawn("m1"), spawn("m2"), spawn("m3")];
    let mut checkpointed = 0;
    for (child, summary) in instances {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(summary).unwrap()).unwrap();
        assert_eq!(s["state"], "done", "{s}");
        assert_eq!(s["run_key"], "once");
        checkpointed += s["rows_checkpointed"].as_i64().unwrap();
    }
    assert_eq!(
        checkpointed, 2250,
        "the six remainders were divided among the instances"
    );
    let mut count = |sql: &str| diesel::sql_query(sql).load::<Count>(&mut c).unwrap()[0].n;
    assert_eq!(count("SELECT COUNT(*) AS n FROM tranche_runs"), 1);
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM tranche_partitions WHERE state = 'done'"),
        6
    );
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM orders WHERE version = 2"),
        2250
    );
}
