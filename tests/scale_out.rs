//! Many instances, one run, on PostgreSQL (and, for all but the soak, on
//! MySQL or MariaDB with the `mysql` feature): the real binary started as
//! several processes on one database, under the faults of DESIGN.md
//! section 8 (SIGKILL, SIGSTOP past the lease, simultaneous start,
//! terminated connections, a soak of random kills).
//!
//! Every process writes its own JSON-lines file (`out-{instance}.jsonl`).
//! The oracle here reads all of them and checks them against the eligible
//! set computed from the database with its own SQL: nothing lost, nothing
//! unexpected, each key only ever with its one new version (so per-key
//! order holds), and replays within the bound of one page per partition a
//! killed or paused process held.
//!
//! The tests run one at a time (a shared lock): their timing bounds are
//! about tranche, not about competing for the machine's two cores.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;

use common::Db;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The database a cluster runs on.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Postgres,
    #[cfg(feature = "mysql")]
    Mariadb,
}

const PAGE: u64 = 500;
const LEASE_MS: i64 = 1500;
const POLL_MS: i64 = 100;

/// A `tranche demo` process sharing the run keyed `shared`.
struct Instance {
    id: String,
    child: Option<Child>,
    summary: PathBuf,
}

struct Cluster {
    db: String,
    dir: PathBuf,
    rows: u64,
    partitions: u32,
}

impl Cluster {
    fn args(&self, id: &str, concurrency: u32, steal: bool) -> Vec<String> {
        let mut args: Vec<String> = [
            "demo",
            "--db",
            &self.db,
            "--rows",
            &self.rows.to_string(),
            "--partitions",
            &self.partitions.to_string(),
            "--concurrency",
            &concurrency.to_string(),
            "--page-size",
            &PAGE.to_string(),
            "--lease",
            &format!("{LEASE_MS}ms"),
            "--heartbeat",
            "300ms",
            "--poll-interval",
            &format!("{POLL_MS}ms"),
            "--run-key",
            "shared",
            "--instance-id",
            id,
            "--sink",
            &format!("jsonl:{}/out-{{instance}}.jsonl", self.dir.display()),
            "--summary-json",
            &self.summary_path(id).display().to_string(),
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !steal {
            args.extend(["--work-stealing".into(), "false".into()]);
        }
        args
    }

    fn summary_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("summary-{id}.json"))
    }

    fn start(&self, id: &str, concurrency: u32, steal: bool) -> Instance {
        let child = Command::new(env!("CARGO_BIN_EXE_tranche"))
            .args(self.args(id, concurrency, steal))
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tranche");
        Instance {
            id: id.to_owned(),
            child: Some(child),
            summary: self.summary_path(id),
        }
    }

    fn lines(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
            .map(|e| lines(&e.path()))
            .sum()
    }
}

impl Instance {
    fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    }

    fn signal(&self, sig: Signal) {
        let pid = self.child.as_ref().expect("running").id();
        kill(Pid::from_raw(pid as i32), sig).expect("send signal");
    }

    fn finish(&mut self) -> (Output, serde_json::Value) {
        let out = self
            .child
            .take()
            .expect("running")
            .wait_with_output()
            .expect("wait");
        assert!(
            out.status.success(),
            "instance {} failed ({}):\n{}\n{}",
            self.id,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let summary = serde_json::from_slice(&std::fs::read(&self.summary).expect("summary"))
            .expect("summary is JSON");
        (out, summary)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn lines(path: &Path) -> u64 {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count() as u64)
}

#[derive(QueryableByName)]
struct Eligible {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = BigInt)]
    version: i64,
}

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName, Debug)]
struct Part {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Nullable<Text>)]
    owner: Option<String>,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    claimed_ms: Option<i64>,
    #[diesel(sql_type = BigInt)]
    rows_done: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    split_from: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    attempts: i32,
    #[diesel(sql_type = BigInt)]
    epoch: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    lease_expires_ms: Option<i64>,
}

fn parts(c: &mut Db) -> Vec<Part> {
    c.load(
        "SELECT id, owner, state, claimed_ms, rows_done, split_from, \
         attempts, epoch, lease_expires_ms FROM tranche_partitions ORDER BY id",
    )
    .unwrap_or_default()
}

/// A one-number query; 0 while tranche's tables do not exist yet.
/// The partitions `owner` holds now (claimed, whatever the lease).
fn claimed_by(c: &mut Db, owner: &str) -> Vec<Part> {
    parts(c)
        .into_iter()
        .filter(|p| p.state == "claimed" && p.owner.as_deref() == Some(owner))
        .collect()
}

fn count(c: &mut Db, sql: &str) -> i64 {
    match c.load::<N>(sql) {
        Ok(rows) => rows[0].n,
        Err(e)
            if common::chain(&e).contains("does not exist")
                || common::chain(&e).contains("doesn't exist") =>
        {
            0
        }
        Err(e) => panic!("{sql}: {e}"),
    }
}

fn db_now(c: &mut Db) -> i64 {
    let now = if c.mysql() {
        "SELECT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED) AS n"
    } else {
        "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) AS n"
    };
    count(c, now)
}

/// What reached the sinks, checked against the database.
#[derive(Debug)]
struct Verdict {
    eligible: u64,
    lost: u64,
    unexpected: u64,
    replays: u64,
}

/// The independent oracle: every eligible subscription (computed here with
/// its own SQL) present in some instance's file with its product's new
/// version; nothing else; every copy of a key identical.
fn oracle(c: &mut Db, dir: &Path) -> Verdict {
    let eligible: HashMap<i64, i64> = c
        .load::<Eligible>(
            "SELECT s.id AS id, p.version AS version FROM demo_subscriptions s \
             JOIN demo_products p ON p.id = s.product_id WHERE s.seeded_version < p.version",
        )
        .unwrap()
        .into_iter()
        .map(|e| (e.id, e.version))
        .collect();
    let mut seen: HashMap<i64, u64> = HashMap::new();
    let mut unexpected = 0;
    for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        if !entry.file_name().to_string_lossy().ends_with(".jsonl") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        // A killed writer may leave a torn last line; it was never confirmed.
        let complete = text.rfind('\n').map_or("", |i| &text[..i]);
        for line in complete.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: bad line {line:?}: {e}", entry.path().display()));
            let key = v["key"].as_i64().expect("key");
            let version = v["version"].as_i64().expect("version");
            assert_eq!(
                v["id"].as_str(),
                Some(format!("demo-s0:{key}:{version}").as_str()),
                "deterministic id"
            );
            if eligible.get(&key) == Some(&version) {
                *seen.entry(key).or_default() += 1;
            } else {
                unexpected += 1;
            }
        }
    }
    Verdict {
        eligible: eligible.len() as u64,
        lost: eligible.keys().filter(|k| !seen.contains_key(k)).count() as u64,
        unexpected,
        replays: seen.values().map(|n| n - 1).sum(),
    }
}

/// A cluster on a fresh PostgreSQL database, with what keeps it alive.
fn cluster(
    hint: &str,
    rows: u64,
    partitions: u32,
) -> Option<(common::PgDatabase, Cluster, tempfile::TempDir)> {
    let db = common::pg_database(hint)?;
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster {
        db: db.url.clone(),
        dir: dir.path().to_path_buf(),
        rows,
        partitions,
    };
    Some((db, cluster, dir))
}

/// A cluster on a fresh database of `backend`.
fn cluster_on(
    backend: Backend,
    hint: &str,
    rows: u64,
    partitions: u32,
) -> Option<(Box<dyn std::any::Any>, Cluster, tempfile::TempDir)> {
    let mysql = !matches!(backend, Backend::Postgres);
    let (guard, url) = common::server_database(mysql, hint)?;
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster {
        db: url,
        dir: dir.path().to_path_buf(),
        rows,
        partitions,
    };
    Some((guard, cluster, dir))
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits (polling the database) until `instance` holds at least `n` claimed
/// partitions and some rows are in the files.
fn wait_holding(c: &mut Db, cluster: &Cluster, instance: &str, n: usize) {
    common::wait_until(&format!("{instance} to hold {n} partitions"), 120, || {
        claimed_by(c, instance).len() >= n && cluster.lines() >= 2 * PAGE
    });
}

/// The sessions on the database other than the test's own (MySQL, which
/// does not name sessions after their instance; empty on PostgreSQL).
fn other_sessions(c: &mut Db) -> Vec<i64> {
    if !c.mysql() {
        return Vec::new();
    }
    c.load::<N>(
        "SELECT CAST(ID AS SIGNED) AS n FROM information_schema.PROCESSLIST \
         WHERE DB = DATABASE() AND ID <> CONNECTION_ID()",
    )
    .unwrap()
    .into_iter()
    .map(|r| r.n)
    .collect()
}

/// Waits until the server has closed every session of `instance`: on
/// PostgreSQL by their name, on MySQL by their ids (`sessions`, taken while
/// `instance` was the only one).
fn wait_gone(c: &mut Db, instance: &str, sessions: &[i64]) {
    common::wait_until(&format!("{instance}'s sessions to close"), 30, || {
        if c.mysql() {
            let ids = sessions.iter().map(i64::to_string).collect::<Vec<_>>();
            ids.is_empty()
                || count(
                    c,
                    &format!(
                        "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE ID IN ({})",
                        ids.join(", ")
                    ),
                ) == 0
        } else {
            count(
                c,
                &format!(
                    "SELECT COUNT(*) AS n FROM pg_stat_activity \
                     WHERE application_name = 'tranche {instance}'"
                ),
            ) == 0
        }
    });
}

#[test]
fn three_instances_share_one_run_and_all_of_them_work() {
    three_instances_share_one_run(Backend::Postgres);
}

#[cfg(feature = "mysql")]
#[test]
fn three_instances_share_one_run_and_all_of_them_work_on_mariadb() {
    three_instances_share_one_run(Backend::Mariadb);
}

fn three_instances_share_one_run(backend: Backend) {
    let _one = lock();
    let Some((_db, cluster, _dir)) = cluster_on(backend, "three", 200_000, 6) else {
        return;
    };
    let mut instances: Vec<Instance> = ["a", "b", "c"]
        .iter()
        .map(|id| cluster.start(id, 2, true))
        .collect();
    let summaries: Vec<serde_json::Value> = instances.iter_mut().map(|i| i.finish().1).collect();
    let mut c = Db::open(&cluster.db);
    let v = oracle(&mut c, &cluster.dir);
    assert_eq!((v.lost, v.unexpected), (0, 0), "{v:?}");
    assert_eq!(v.replays, 0, "no fault, no replay: {v:?}");
    assert!(v.eligible >= 100_000, "{v:?}");
    let run_ids: HashSet<i64> = summaries
        .iter()
        .map(|s| s["run_id"].as_i64().unwrap())
        .collect();
    assert_eq!(run_ids.len(), 1, "one run shared by all");
    assert_eq!(count(&mut c, "SELECT COUNT(*) AS n FROM tranche_runs"), 1);
    let mut total = 0;
    for s in &summaries {
        assert_eq!(
            s["verified"], true,
            "each instance verifies the whole run: {s}"
        );
        let done = s["rows_checkpointed"].as_u64().unwrap();
        let published = s["rows_published"].as_u64().unwrap();
        assert!(done > 0, "every instance worked: {s}");
        assert_eq!(done, published, "{s}");
        total += done;
    }
    assert_eq!(total, v.eligible, "the work was divided, not repeated");
    let owners: HashSet<String> = parts(&mut c).into_iter().filter_map(|p| p.owner).collect();
    assert_eq!(
        owners.len(),
        3,
        "partitions finished by all three: {owners:?}"
    );
    eprintln!(
        "rows per instance: {:?}",
        summaries
            .iter()
            .map(|s| (
                s["instance_id"].clone(),
                s["rows_checkpointed"].clone(),
                s["steals"].clone()
            ))
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_killed_instance_s_partitions_are_taken_over_only_after_their_leases_expire() {
    takeover_after_sigkill(Backend::Postgres);
}

/// Three demo processes on MariaDB, one killed: one run, nothing lost.
#[cfg(feature = "mysql")]
#[test]
fn a_killed_instance_s_partitions_are_taken_over_only_after_their_leases_expire_on_mariadb() {
    takeover_after_sigkill(Backend::Mariadb);
}

fn takeover_after_sigkill(backend: Backend) {
    let _one = lock();
    let Some((_db, cluster, _dir)) = cluster_on(backend, "takeover", 200_000, 6) else {
        return;
    };
    let mut c = Db::open(&cluster.db);
    // The victim claims every partition. The survivors start as it dies:
    // they have free workers and do not split ranges, so the only work they
    // can get is a takeover, which the lease allows 1.5 s after the kill.
    let mut victim = cluster.start("victim", 6, true);
    wait_holding(&mut c, &cluster, "victim", 6);
    let sessions = other_sessions(&mut c);
    let killed_at = db_now(&mut c);
    victim.kill();
    let mut survivors = [cluster.start("s1", 3, false), cluster.start("s2", 3, false)];
    wait_gone(&mut c, "victim", &sessions);
    // The victim is gone: its leases, by the database clock, are final.
    let leases: std::collections::HashMap<i64, i64> = claimed_by(&mut c, "victim")
        .iter()
        .map(|p| {
            (
                p.id,
                p.lease_expires_ms.expect("a claimed partition has a lease"),
            )
        })
        .collect();
    let held: Vec<i64> = leases.keys().copied().collect();
    assert!(!held.is_empty(), "the victim died holding partitions");
    common::wait_until("every held partition to be taken over", 60, || {
        parts(&mut c)
            .iter()
            .filter(|p| held.contains(&p.id))
            .all(|p| p.owner.as_deref() != Some("victim"))
    });
    assert!(
        parts(&mut c)
            .iter()
            .filter(|p| held.contains(&p.id))
            .all(|p| p.owner.as_deref() == Some("s1") || p.owner.as_deref() == Some("s2")),
        "taken over by the survivors"
    );
    let delays: Vec<i64> = parts(&mut c)
        .iter()
        .filter(|p| held.contains(&p.id))
        .map(|p| p.claimed_ms.unwrap() - killed_at)
        .collect();
    // The safety side of a takeover: no survivor claimed a partition
    // before the victim's lease on it had expired, by the database clock.
    // (How soon after expiry is a matter of speed, not asserted here.)
    for p in parts(&mut c).iter().filter(|p| held.contains(&p.id)) {
        let claimed = p.claimed_ms.unwrap();
        assert!(
            claimed >= leases[&p.id],
            "partition {} was taken over at {claimed}, before the lease expired at {}",
            p.id,
            leases[&p.id]
        );
    }
    let summaries: Vec<serde_json::Value> = survivors.iter_mut().map(|i| i.finish().1).collect();
    let taken: u64 = summaries
        .iter()
        .map(|s| s["takeovers"].as_u64().unwrap())
        .sum();
    assert!(taken as usize >= held.len(), "{summaries:?}");
    let v = oracle(&mut c, &cluster.dir);
    assert_eq!((v.lost, v.unexpected), (0, 0), "{v:?}");
    let bound = held.len() as u64 * PAGE;
    assert!(
        v.replays <= bound,
        "replayed {} rows; bound {bound}",
        v.replays
    );
    eprintln!(
        "takeover after SIGKILL: {delays:?} ms (lease {LEASE_MS}, poll {POLL_MS}); \
         {} partitions, {} rows replayed",
        held.len(),
        v.replays
    );
}

#[test]
fn a_paused_instance_loses_its_leases_and_its_late_checkpoints_are_rejected() {
    zombie_past_its_lease(Backend::Postgres);
}

#[cfg(feature = "mysql")]
#[test]
fn a_paused_instance_loses_its_leases_and_its_late_checkpoints_are_rejected_on_mariadb() {
    zombie_past_its_lease(Backend::Mariadb);
}

fn zombie_past_its_lease(backend: Backend) {
    let _one = lock();
    let Some((_db, cluster, _dir)) = cluster_on(backend, "zombie", 200_000, 4) else {
        return;
    };
    let mut c = Db::open(&cluster.db);
    let mut zombie = cluster.start("zombie", 4, true);
    wait_holding(&mut c, &cluster, "zombie", 4);
    zombie.signal(Signal::SIGSTOP);
    let mut heir = cluster.start("heir", 4, false);
    let held: Vec<i64> = claimed_by(&mut c, "zombie").iter().map(|p| p.id).collect();
    // A statement sent just before the pause may still complete a partition.
    common::wait_until("the heir to take over the paused partitions", 60, || {
        parts(&mut c)
            .iter()
            .filter(|p| held.contains(&p.id))
            .all(|p| p.owner.as_deref() == Some("heir") || p.state == "done")
    });
    let taken = parts(&mut c)
        .iter()
        .filter(|p| held.contains(&p.id) && p.owner.as_deref() == Some("heir"))
        .count();
    assert!(
        taken >= 1,
        "the heir took over the paused instance's partitions"
    );
    zombie.signal(Signal::SIGCONT);
    let (_, zs) = zombie.finish();
    let (_, hs) = heir.finish();
    assert!(
        zs["leases_lost"].as_u64().unwrap() >= 1,
        "the resumed zombie found its leases gone: {zs}"
    );
    assert!(hs["takeovers"].as_u64().unwrap() >= taken as u64, "{hs}");
    let v = oracle(&mut c, &cluster.dir);
    assert_eq!((v.lost, v.unexpected), (0, 0), "{v:?}");
    // The fence: the zombie's late checkpoints counted nothing twice.
    let done: i64 = parts(&mut c).iter().map(|p| p.rows_done).sum();
    assert_eq!(done as u64, v.eligible, "rows_done counts each row once");
    let bound = held.len() as u64 * PAGE;
    assert!(
        v.replays <= bound,
        "replayed {} rows; bound {bound}",
        v.replays
    );
    eprintln!(
        "SIGSTOP past the lease: {} partitions taken over, zombie lost {} leases, {} rows replayed",
        held.len(),
        zs["leases_lost"],
        v.replays
    );
}

#[test]
fn two_instances_started_at_the_same_instant_plan_once() {
    same_instant_start(Backend::Postgres);
}

#[cfg(feature = "mysql")]
#[test]
fn two_instances_started_at_the_same_instant_plan_once_on_mariadb() {
    same_instant_start(Backend::Mariadb);
}

fn same_instant_start(backend: Backend) {
    let _one = lock();
    let Some((_db, cluster, _dir)) = cluster_on(backend, "same_instant", 200_000, 6) else {
        return;
    };
    let mut both = [cluster.start("x", 2, true), cluster.start("y", 2, true)];
    let summaries: Vec<serde_json::Value> = both.iter_mut().map(|i| i.finish().1).collect();
    let mut c = Db::open(&cluster.db);
    assert_eq!(count(&mut c, "SELECT COUNT(*) AS n FROM tranche_runs"), 1);
    let planned = parts(&mut c)
        .iter()
        .filter(|p| p.split_from.is_none())
        .count();
    assert_eq!(planned, 6, "the partitions were planned once");
    // `key` is a reserved word on MySQL.
    let key = if c.mysql() { "`key`" } else { "key" };
    assert_eq!(
        count(
            &mut c,
            &format!("SELECT COUNT(*) AS n FROM demo_meta WHERE {key} = 'seeded_rows'")
        ),
        1
    );
    let v = oracle(&mut c, &cluster.dir);
    assert_eq!((v.lost, v.unexpected, v.replays), (0, 0, 0), "{v:?}");
    assert_eq!(summaries[0]["run_id"], summaries[1]["run_id"]);
}

/// Ends every database session of `instance` from the server's side:
/// PostgreSQL by the sessions' name, MySQL by the ids of the sessions
/// other than the test's own (`instance` being the only other client).
/// How many were ended.
fn terminate_sessions(c: &mut Db, instance: &str) -> i64 {
    if !c.mysql() {
        return count(
            c,
            &format!(
                "SELECT COUNT(*) AS n FROM (SELECT pg_terminate_backend(pid) AS t \
                 FROM pg_stat_activity WHERE application_name = 'tranche {instance}') k WHERE t"
            ),
        );
    }
    let mut ended = 0;
    for id in other_sessions(c) {
        // A session may close by itself in between: that is no failure.
        if c.batch(&format!("KILL CONNECTION {id}")).is_ok() {
            ended += 1;
        }
    }
    ended
}

#[test]
fn an_instance_whose_connections_are_terminated_recovers() {
    terminated_sessions(Backend::Postgres);
}

#[cfg(feature = "mysql")]
#[test]
fn an_instance_whose_connections_are_terminated_recovers_on_mariadb() {
    terminated_sessions(Backend::Mariadb);
}

fn terminated_sessions(backend: Backend) {
    let _one = lock();
    let Some((_db, cluster, _dir)) = cluster_on(backend, "terminated", 200_000, 4) else {
        return;
    };
    let mut c = Db::open(&cluster.db);
    let mut victim = cluster.start("victim", 4, true);
    wait_holding(&mut c, &cluster, "victim", 4);
    let mut terminated = 0;
    for _ in 0..3 {
        terminated += terminate_sessions(&mut c, "victim");
        let seen = cluster.lines();
        common::wait_until("work to go on after the terminations", 60, || {
            cluster.lines() >= seen + PAGE
                || count(
                    &mut c,
                    "SELECT COUNT(*) AS n FROM tranche_runs WHERE state = 'done'",
                ) == 1
        });
    }
    assert!(terminated >= 1, "some sessions were terminated");
    let (_, s) = victim.finish();
    assert_eq!(s["verified"], true, "{s}");
    let ps = parts(&mut c);
    assert!(ps.iter().all(|p| p.state == "done"), "{ps:?}");
    assert!(
        ps.iter().all(|p| p.attempts < 5),
        "recovered within the attempts: {ps:?}"
    );
    let v = oracle(&mut c, &cluster.dir);
    assert_eq!((v.lost, v.unexpected), (0, 0), "{v:?}");
    eprintln!(
        "terminated {terminated} sessions ({backend:?}); attempts per partition {:?}; {} rows replayed",
        ps.iter().map(|p| p.attempts).collect::<Vec<_>>(),
        v.replays
    );
}

/// Twenty SIGKILLs at random instances, spread over one run of at least
/// 1,000,000 rows (1,930,000 subscriptions seeded, about 52% of them
/// eligible), each killed instance restarted at once under the same id.
#[test]
fn soak_twenty_random_kills_across_three_instances() {
    let _one = lock();
    let Some((db, cluster, _dir)) = cluster("soak", 1_930_000, 8) else {
        return;
    };
    let mut c = Db::open(&db.url);
    let ids = ["p", "q", "r"];
    let mut instances: BTreeMap<&str, Instance> = ids
        .iter()
        .map(|id| (*id, cluster.start(id, 2, true)))
        .collect();
    // The eligible count, once identification has run.
    common::wait_until("the run to be planned", 300, || {
        count(
            &mut c,
            "SELECT COUNT(*) AS n FROM tranche_runs WHERE state <> 'planning'",
        ) == 1
    });
    let eligible = count(&mut c, "SELECT rows_identified AS n FROM tranche_runs") as u64;
    assert!(eligible >= 1_000_000, "a run of a million rows: {eligible}");
    let step = eligible / 25;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut kills = 0u64;
    // (partition, epoch) held by a killed process: each may replay a page.
    let mut killed_holding: HashSet<(i64, i64)> = HashSet::new();
    while kills < 20 {
        let target = (kills + 1) * step;
        common::wait_until("progress before the next kill", 300, || {
            let done = count(
                &mut c,
                "SELECT CAST(COALESCE(SUM(rows_done), 0) AS BIGINT) AS n FROM tranche_partitions",
            );
            done as u64 >= target
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let id = ids[(rng % 3) as usize];
        let inst = instances.get_mut(id).unwrap();
        if inst.child.as_mut().unwrap().try_wait().unwrap().is_some() {
            let (out, summary) = inst.finish();
            panic!(
                "{id} ended before kill {} of 20: {summary}\n{}",
                kills + 1,
                String::from_utf8_lossy(&out.stdout)
            );
        }
        inst.kill();
        wait_gone(&mut c, id, &[]);
        killed_holding.extend(claimed_by(&mut c, id).iter().map(|p| (p.id, p.epoch)));
        kills += 1;
        eprintln!("soak: kill {kills} of {id} at {target} rows");
        *inst = cluster.start(id, 2, true);
    }
    assert_eq!(kills, 20, "the run outlasted twenty kills");
    for inst in instances.values_mut() {
        let (_, s) = inst.finish();
        assert_eq!(s["verified"], true, "{s}");
    }
    let v = oracle(&mut c, &cluster.dir);
    assert_eq!((v.lost, v.unexpected), (0, 0), "{v:?}");
    assert_eq!(v.eligible, eligible);
    // At most one unconfirmed page per partition a killed process held.
    let bound = killed_holding.len() as u64 * PAGE;
    assert!(
        v.replays <= bound,
        "replayed {} rows; bound {bound}",
        v.replays
    );
    let done: i64 = parts(&mut c).iter().map(|p| p.rows_done).sum();
    assert_eq!(done as u64, eligible, "each row checkpointed once");
    eprintln!(
        "soak: {kills} kills, {} rows replayed ({:.0} per kill; bound {bound}), {} eligible",
        v.replays,
        v.replays as f64 / kills as f64,
        v.eligible
    );
}

/// Helper check for the oracle itself: a file with a lost row, an
/// unexpected row and a duplicate is judged so (the oracle can fail).
#[test]
fn the_oracle_detects_loss_duplicates_and_strangers() {
    let _one = lock();
    let Some(db) = common::pg_database("oracle") else {
        return;
    };
    let mut c = Db::open(&db.url);
    c.batch(
        "CREATE TABLE demo_products (id BIGINT PRIMARY KEY, version BIGINT NOT NULL);
         CREATE TABLE demo_subscriptions (id BIGINT PRIMARY KEY, product_id BIGINT NOT NULL,
             seeded_version BIGINT NOT NULL);
         INSERT INTO demo_products VALUES (1, 2);
         INSERT INTO demo_subscriptions VALUES (1, 1, 1), (2, 1, 1), (3, 1, 2);",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let line =
        |k: i64, v: i64| format!("{{\"id\":\"demo-s0:{k}:{v}\",\"key\":{k},\"version\":{v}}}\n");
    std::fs::write(
        dir.path().join("out-a.jsonl"),
        format!("{}{}{}{{\"torn", line(1, 2), line(1, 2), line(3, 2)),
    )
    .unwrap();
    let v = oracle(&mut c, dir.path());
    assert_eq!(
        (v.eligible, v.lost, v.unexpected, v.replays),
        (2, 1, 1, 1),
        "{v:?}"
    );
}
