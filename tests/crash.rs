//! Crash tests: the real binary, killed with SIGKILL mid-run several times
//! and restarted, must lose nothing, deliver nothing unexpected and replay
//! at most one page per active partition per kill.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use diesel::connection::SimpleConnection;
use diesel::sql_types::BigInt;
use diesel::{Connection, PgConnection, QueryableByName, RunQueryDsl, SqliteConnection};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const ROWS: &str = "200000";
const PAGE: u64 = 500;
const CONCURRENCY: u64 = 3;

fn demo_args<'a>(db: &'a str, sink: &'a str, json: &'a str) -> Vec<&'a str> {
    vec![
        "demo",
        "--db",
        db,
        "--rows",
        ROWS,
        "--partitions",
        "6",
        "--concurrency",
        "3",
        "--page-size",
        "500",
        "--sink",
        sink,
        "--lease",
        "1500ms",
        "--heartbeat",
        "300ms",
        "--quiet",
        "--summary-json",
        json,
    ]
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tranche"))
        .args(args)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start tranche")
}

fn lines(path: &Path) -> u64 {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count() as u64)
}

/// Kills `child` with SIGKILL once `progressed` holds; returns the child's
/// output instead when it finished on its own first.
fn kill_when(mut child: Child, what: &str, mut progressed: impl FnMut() -> bool) -> Option<Output> {
    let mut finished = false;
    common::wait_until(what, 300, || {
        finished = child.try_wait().expect("poll child").is_some();
        finished || progressed()
    });
    if finished {
        return Some(child.wait_with_output().expect("reap"));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    None
}

fn read_summary(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("summary")).expect("json")
}

#[test]
fn sigkill_mid_run_loses_nothing_and_replays_at_most_a_page_per_partition_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("crash.db").display());
    sigkill_rounds(&db, dir.path());
}

#[test]
fn sigkill_mid_run_loses_nothing_and_replays_at_most_a_page_per_partition_on_postgres() {
    let Some(db) = common::pg_database("crash") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    sigkill_rounds(&db.url, dir.path());
}

#[cfg(feature = "mysql")]
#[test]
fn sigkill_mid_run_loses_nothing_and_replays_at_most_a_page_per_partition_on_mariadb() {
    let Some(db) = common::mysql_database("crash") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    sigkill_rounds(&db.url, dir.path());
}

fn sigkill_rounds(db: &str, dir: &Path) {
    let db = db.to_owned();
    let out = dir.join("out.jsonl");
    let sink = format!("jsonl:{}", out.display());
    let json = dir.join("summary.json");
    let json_s = json.to_str().unwrap();

    // Kill the run several times once it has made progress; a round that
    // ends on its own completed the run, and its summary is the verdict.
    let mut kills = 0u64;
    let mut completed = None;
    for _ in 0..4 {
        let before = lines(&out);
        let child = spawn(&demo_args(&db, &sink, json_s));
        completed = kill_when(child, "the run to make progress", || {
            lines(&out) >= before + 8_000
        });
        if completed.is_some() {
            break;
        }
        kills += 1;
    }
    assert!(
        kills >= 3,
        "the run should still have been going for at least 3 kills, got {kills}"
    );
    let last = completed.unwrap_or_else(|| {
        spawn(&demo_args(&db, &sink, json_s))
            .wait_with_output()
            .unwrap()
    });
    let stdout = String::from_utf8_lossy(&last.stdout);
    assert!(last.status.success(), "final run failed: {stdout}");
    assert!(stdout.contains("resumed from checkpoints"), "{stdout}");
    let s = read_summary(&json);
    let v = &s["verification"];
    assert_eq!(v["lost"], 0, "{s}");
    assert_eq!(v["unexpected"], 0, "{s}");
    assert_eq!(s["verified"], true);
    assert_eq!(s["resumed"], true);
    let duplicates = v["duplicates"].as_u64().unwrap();
    let bound = kills * CONCURRENCY * PAGE;
    assert!(
        duplicates <= bound,
        "replayed {duplicates} rows after {kills} kills; bound {bound}"
    );
    eprintln!("{kills} kills, {duplicates} rows replayed (bound {bound})");
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[test]
fn a_killed_update_run_resumes_from_its_checkpoints_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("update.db");
    let db = format!("sqlite://{}", path.display());
    let json = dir.path().join("summary.json");
    let json_s = json.to_str().unwrap();
    let updated = || -> i64 {
        let Ok(mut c) = SqliteConnection::establish(path.to_str().unwrap()) else {
            return 0;
        };
        if c.batch_execute("PRAGMA busy_timeout = 5000").is_err() {
            return 0;
        }
        diesel::sql_query(
            "SELECT COUNT(*) AS n FROM tranche_partitions p JOIN tranche_runs r ON r.id = p.run_id \
             WHERE p.rows_done > 0",
        )
        .load::<Count>(&mut c)
        .map_or(0, |r| r[0].n)
    };
    let child = spawn(&demo_args(&db, "update", json_s));
    assert!(
        kill_when(child, "checkpoints in two partitions", || updated() >= 2).is_none(),
        "run ended before the kill"
    );

    let last = spawn(&demo_args(&db, "update", json_s))
        .wait_with_output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&last.stdout);
    assert!(last.status.success(), "{stdout}");
    assert!(stdout.contains("resumed from checkpoints"), "{stdout}");
    let s = read_summary(&json);
    assert_eq!(s["resumed"], true);
    assert_eq!(s["verified"], true, "{s}");
    assert!(s["rows_done_at_start"].as_i64().unwrap() > 0);
    // Rows the sink applied after the last checkpoint before the kill are no
    // longer eligible, so they are not read again: rows_done may fall short
    // of rows_identified by at most the pages in flight at the kill.
    let identified = s["rows_identified"].as_u64().unwrap();
    let done = s["rows_done"].as_u64().unwrap();
    assert!(
        done <= identified && identified - done <= CONCURRENCY * PAGE,
        "{s}"
    );
}

#[test]
fn ctrl_c_checkpoints_hands_partitions_back_and_the_next_run_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("sigint.db").display());
    let out = dir.path().join("out.jsonl");
    let sink = format!("jsonl:{}", out.display());
    let json = dir.path().join("summary.json");
    let json_s = json.to_str().unwrap();

    // Throttled to 2,000 rows a second the first run needs most of a
    // minute, so the signal lands while it runs however loaded the machine.
    let mut first_args = demo_args(&db, &sink, json_s);
    first_args.extend(["--max-rows-per-s", "2000"]);
    let child = spawn(&first_args);
    common::wait_until("the run to make progress", 300, || lines(&out) >= 5_000);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("send SIGINT");
    let first = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert_eq!(
        first.status.code(),
        Some(130),
        "interrupted runs exit 130: {stdout}"
    );
    assert!(
        stdout.contains("run the same command again to continue"),
        "{stdout}"
    );
    let s = read_summary(&json);
    assert_eq!(s["interrupted"], true);
    assert_eq!(s["verified"], false, "an interrupted run is not verified");
    let done_before = s["rows_done"].as_u64().unwrap();
    assert!(done_before > 0);

    // The resumed run keeps its throttle until an operator lifts it.
    let lifted = Command::new(env!("CARGO_BIN_EXE_tranche"))
        .args([
            "throttle",
            "--db",
            &db,
            "--job",
            "demo-s0",
            "--unset",
            "max_rows_per_s",
        ])
        .output()
        .unwrap();
    assert!(lifted.status.success(), "{lifted:?}");
    let last = spawn(&demo_args(&db, &sink, json_s))
        .wait_with_output()
        .unwrap();
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stdout)
    );
    let s = read_summary(&json);
    assert_eq!(s["resumed"], true);
    assert_eq!(s["rows_done_at_start"].as_u64(), Some(done_before));
    assert_eq!(s["verified"], true, "{s}");
    assert_eq!(
        s["verification"]["duplicates"], 0,
        "a graceful stop replays nothing: {s}"
    );
}

/// SIGTERM, as a rolling deploy sends it, stops a run as Ctrl-C does: the
/// pages in flight are checkpointed, the partitions handed back at once
/// (no lease is left to expire), the summary written; a second instance
/// then finishes the run without taking anything over.
#[test]
fn sigterm_hands_partitions_back_at_once_and_the_next_instance_finishes_on_postgres() {
    let Some(pg) = common::pg_database("sigterm") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let sink = format!("jsonl:{}", out.display());
    let json = dir.path().join("summary.json");
    let json_s = json.to_str().unwrap();
    // Leases far longer than the test: one left held would be taken over.
    let mut args = demo_args(&pg.url, &sink, json_s);
    let at = args.iter().position(|a| *a == "--lease").unwrap();
    args[at + 1] = "120s";

    let child = spawn(&args);
    common::wait_until("the run to make progress", 300, || lines(&out) >= 10_000);
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("send SIGTERM");
    let first = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert_eq!(
        first.status.code(),
        Some(130),
        "SIGTERM exits 130: {stdout}"
    );
    let s = read_summary(&json);
    assert_eq!(s["interrupted"], true, "{s}");
    let done_before = s["rows_done"].as_u64().unwrap();
    assert!(done_before > 0, "{s}");
    let mut conn = PgConnection::establish(&pg.url).unwrap();
    let held = diesel::sql_query(
        "SELECT COUNT(*) AS n FROM tranche_partitions \
         WHERE state = 'claimed' OR lease_expires_ms IS NOT NULL",
    )
    .get_result::<Count>(&mut conn)
    .unwrap()
    .n;
    assert_eq!(held, 0, "every partition is handed back at once");

    let last = spawn(&args).wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&last.stdout);
    assert!(last.status.success(), "{stdout}");
    let s = read_summary(&json);
    assert_eq!(s["resumed"], true, "{s}");
    assert_eq!(s["rows_done_at_start"].as_u64(), Some(done_before), "{s}");
    assert_eq!(s["takeovers"], 0, "nothing was left to take over: {s}");
    assert_eq!(s["verification"]["lost"], 0, "{s}");
    assert_eq!(s["verified"], true, "{s}");
}

#[test]
fn a_killed_outbox_run_writes_every_message_once() {
    let Some(db) = common::pg_database("crash_outbox") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let json_s = json.to_str().unwrap();
    let mut c = PgConnection::establish(&db.url).unwrap();
    let mut written = || -> i64 {
        diesel::sql_query("SELECT COUNT(*) AS n FROM tranche_outbox")
            .load::<Count>(&mut c)
            .map_or(0, |r| r[0].n)
    };
    let child = spawn(&demo_args(&db.url, "outbox", json_s));
    assert!(
        kill_when(child, "messages in the outbox", || written() >= 20_000).is_none(),
        "run ended before the kill"
    );
    let last = spawn(&demo_args(&db.url, "outbox", json_s))
        .wait_with_output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&last.stdout);
    assert!(last.status.success(), "{stdout}");
    let s = read_summary(&json);
    assert_eq!(s["resumed"], true, "{s}");
    assert_eq!(s["verified"], true, "{s}");
    let identified = s["rows_identified"].as_i64().unwrap();
    assert_eq!(written(), identified, "each message once in the outbox");
    // Pages written after the last checkpoint are read again and found
    // there: the sink counts them as duplicates, within one page per
    // partition that was active at the kill.
    let replayed = s["rows_replayed"].as_u64().unwrap();
    assert!(replayed <= CONCURRENCY * PAGE, "{s}");
    // The report's bound on replays covers what the sink found again: a
    // report never says fewer than there were.
    let bound = s["rows_possibly_replayed"].as_u64().unwrap();
    assert!(bound > 0 && replayed <= bound, "{s}");
}
