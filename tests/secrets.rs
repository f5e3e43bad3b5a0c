//! Secrets stay secret: passwords holding `/ ? @ % # :` and spaces, in
//! database URLs (percent-encoded, as written, in the query) and keyword
//! DSNs and in broker URLs, through every command's failure paths
//! (unreachable server, unknown database, unknown role, refused broker
//! login), appear in no output at `RUST_LOG=trace` (which prints every
//! line the lower levels print, and more), no summary and no history; URLs
//! that name no backend tranche reads are refused, naming the accepted
//! forms, before anything is created on disk.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Passwords, each holding one character URLs and DSNs treat specially.
/// Every one is made of the two fragments below, which no output may hold.
const PASSWORDS: &[&str] = &[
    "Pq7/Zx9Kw",
    "Pq7?Zx9Kw",
    "Pq7@Zx9Kw",
    "Pq7%Zx9Kw",
    "Pq7#Zx9Kw",
    "Pq7:Zx9Kw",
    "Pq7 Zx9Kw",
];
const FRAGMENTS: &[&str] = &["Pq7", "Zx9Kw"];

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `host`, `port` of the test PostgreSQL server.
fn pg_host_port() -> (String, u16) {
    let admin = url::Url::parse(&common::pg_admin_url()).expect("TRANCHE_TEST_PG is a URL");
    (
        admin.host_str().unwrap_or("127.0.0.1").to_owned(),
        admin.port().unwrap_or(5432),
    )
}

/// One command run: its arguments, the files it may write, and where its
/// output goes.
struct Case {
    what: String,
    args: Vec<String>,
    dir: PathBuf,
}

/// Runs every case at once (they mostly wait on connection timeouts),
/// each in a directory of its own, and returns each one's output and the
/// files it left.
fn run_all(cases: Vec<Case>) -> Vec<(Case, String, Vec<PathBuf>)> {
    let mut out = Vec::new();
    for chunk in cases.into_iter().collect::<Vec<_>>().chunks_mut(16) {
        let mut running: Vec<(Child, usize)> = Vec::new();
        for (i, case) in chunk.iter().enumerate() {
            std::fs::create_dir_all(&case.dir).unwrap();
            let log = std::fs::File::create(case.dir.join("output.log")).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_tranche"))
                .args(&case.args)
                .current_dir(&case.dir)
                .env("RUST_LOG", "trace")
                .env("RUST_BACKTRACE", "0")
                .env_remove("TRANCHE_DATABASE_URL")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .stdin(Stdio::null())
                .spawn()
                .expect("start tranche");
            running.push((child, i));
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        for (mut child, i) in running {
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let case = &chunk[i];
            let text = String::from_utf8_lossy(
                &std::fs::read(case.dir.join("output.log")).unwrap_or_default(),
            )
            .into_owned();
            let files = std::fs::read_dir(&case.dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            out.push((
                Case {
                    what: case.what.clone(),
                    args: case.args.clone(),
                    dir: case.dir.clone(),
                },
                text,
                files,
            ));
        }
    }
    out
}

fn assert_nothing_leaks(what: &str, text: &str) {
    for f in FRAGMENTS {
        assert!(
            !text.contains(f),
            "{what}: the output holds {f:?}:\n{}",
            text.lines()
                .filter(|l| l.contains(f))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

fn job_file(dir: &Path, database_url: &str) -> PathBuf {
    let path = dir.join("job.toml");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        &path,
        format!(
            "database_url = {database_url:?}\n\
             [job]\nname = \"secrets\"\n\
             [source]\ntable = \"t\"\nkey_column = \"id\"\n\
             [strategy]\nkind = \"range\"\npartitions = 2\n\
             [sink]\nkind = \"jsonl\"\npath = {:?}\n",
            dir.join("out.jsonl").display().to_string()
        ),
    )
    .unwrap();
    path
}

/// A consumer file reading from `from` (an `amqp://` or `nats://` URL).
fn consume_file(dir: &Path, database_url: &str, from: &str) -> PathBuf {
    let source = if from.starts_with("nats") {
        format!(
            "kind = \"nats\"\nurl = {from:?}\nstream = \"tranche-secrets\"\n\
             durable = \"tranche-secrets\"\n"
        )
    } else {
        format!("kind = \"amqp\"\nurl = {from:?}\nqueue = \"tranche-secrets\"\n")
    };
    let path = dir.join("consume.toml");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        &path,
        format!(
            "database_url = {database_url:?}\n\
             [consume]\nname = \"secrets\"\n\
             [from]\n{source}\
             [apply]\nkind = \"versions\"\ntable = \"t\"\nkey_column = \"id\"\n\
             version_column = \"version\"\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn passwords_appear_in_no_output_summary_or_history() {
    if common::pg_database("secrets_probe").is_none() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (host, port) = pg_host_port();
    let mut cases = Vec::new();
    let mut n = 0usize;
    for pw in PASSWORDS {
        // Unreachable server, unknown database, unknown role.
        for (h, p, user, db) in [
            ("127.0.0.1", 1u16, "postgres", "postgres"),
            (host.as_str(), port, "postgres", "tranche_no_such_database"),
            (host.as_str(), port, "tranche_no_such_role", "postgres"),
        ] {
            let quoted = pw.replace('\\', "\\\\").replace('\'', "\\'");
            for url in [
                format!("postgres://{user}:{}@{h}:{p}/{db}", encode(pw)),
                format!("postgres://{user}:{pw}@{h}:{p}/{db}"),
                format!("postgresql://{user}@{h}:{p}/{db}?password={}", encode(pw)),
                format!("host={h} port={p} user={user} password='{quoted}' dbname={db}"),
            ] {
                n += 1;
                let dir = root.path().join(format!("case{n}"));
                let summary = dir.join("summary.json").display().to_string();
                let args: Vec<String> = match n % 4 {
                    0 => vec![
                        "demo",
                        "--db",
                        &url,
                        "--rows",
                        "10",
                        "--summary-json",
                        &summary,
                    ]
                    .into_iter()
                    .map(String::from)
                    .collect(),
                    1 => vec!["history", "--db", &url, "--job", "secrets"]
                        .into_iter()
                        .map(String::from)
                        .collect(),
                    2 => {
                        let file = job_file(&dir, &url);
                        vec!["run".into(), "--config".into(), file.display().to_string()]
                    }
                    _ => {
                        let file = consume_file(&dir, &url, "amqp://guest:guest@127.0.0.1:1/%2f");
                        vec![
                            "consume".into(),
                            "--config".into(),
                            file.display().to_string(),
                        ]
                    }
                };
                cases.push(Case {
                    what: format!("PostgreSQL, {} with {url:?}", args[0]),
                    args,
                    dir,
                });
            }
        }
    }
    // MySQL (a build with the mysql feature): an unreachable server, a
    // refused password, an unknown database, through the same commands.
    #[cfg(feature = "mysql")]
    for pw in PASSWORDS {
        for (p, db) in [
            (1u16, "test"),
            (3306, "test"),
            (3306, "tranche_no_such_database"),
        ] {
            for url in [
                format!("mysql://root:{}@127.0.0.1:{p}/{db}", encode(pw)),
                format!("mariadb://root:{pw}@127.0.0.1:{p}/{db}"),
            ] {
                n += 1;
                let dir = root.path().join(format!("case{n}"));
                let args: Vec<String> = match n % 3 {
                    0 => ["demo", "--db", &url, "--rows", "10"]
                        .into_iter()
                        .map(String::from)
                        .collect(),
                    1 => ["history", "--db", &url, "--job", "secrets"]
                        .into_iter()
                        .map(String::from)
                        .collect(),
                    _ => {
                        let file = job_file(&dir, &url);
                        vec!["run".into(), "--config".into(), file.display().to_string()]
                    }
                };
                cases.push(Case {
                    what: format!("MySQL, {} with {url:?}", args[0]),
                    args,
                    dir,
                });
            }
        }
    }
    // Brokers: a refused RabbitMQ login, an unreachable NATS server, and
    // a NATS server that lets the user in, as sinks and as a source.
    let amqp = common::amqp_url();
    let nats = common::nats_url();
    for pw in PASSWORDS {
        let enc = encode(pw);
        let mut broker_cases: Vec<(String, Vec<String>)> = Vec::new();
        if let Some(amqp) = &amqp {
            let at = url::Url::parse(amqp).unwrap();
            let refused = format!(
                "amqp://guest:{enc}@{}:{}/%2f",
                at.host_str().unwrap(),
                at.port().unwrap_or(5672)
            );
            broker_cases.push((
                "demo, amqp sink".into(),
                vec!["--sink".into(), refused.clone()],
            ));
            broker_cases.push(("consume, amqp source".into(), vec![refused]));
        }
        broker_cases.push((
            "demo, unreachable nats sink".into(),
            vec!["--sink".into(), format!("nats://u:{enc}@127.0.0.1:1")],
        ));
        if let Some(nats) = &nats {
            let at = url::Url::parse(nats).unwrap();
            let with_password = format!(
                "nats://u:{enc}@{}:{}",
                at.host_str().unwrap(),
                at.port().unwrap_or(4222)
            );
            broker_cases.push((
                "demo, nats sink".into(),
                vec!["--sink".into(), with_password.clone()],
            ));
            broker_cases.push(("consume, nats source".into(), vec![with_password]));
        }
        for (what, extra) in broker_cases {
            n += 1;
            let dir = root.path().join(format!("case{n}"));
            let db = format!("sqlite://{}", dir.join("b.db").display());
            let args = if what.starts_with("consume") {
                let file = consume_file(&dir, &db, &extra[0]);
                vec![
                    "consume".into(),
                    "--config".into(),
                    file.display().to_string(),
                ]
            } else {
                let summary = dir.join("summary.json").display().to_string();
                let mut args: Vec<String> = ["demo", "--db", &db, "--rows", "10", "--summary-json"]
                    .into_iter()
                    .map(String::from)
                    .collect();
                args.push(summary);
                args.extend(extra);
                args
            };
            cases.push(Case {
                what: format!("{what} with {pw:?}"),
                args,
                dir,
            });
        }
    }
    let results = run_all(cases);
    let mut histories = Vec::new();
    for (case, text, files) in &results {
        assert!(!text.trim().is_empty(), "{}: no output at all", case.what);
        assert_nothing_leaks(&case.what, text);
        for f in files {
            if f.extension().is_some_and(|e| e == "json") {
                let summary = std::fs::read_to_string(f).unwrap();
                assert_nothing_leaks(&format!("{}: {}", case.what, f.display()), &summary);
            }
            if f.extension().is_some_and(|e| e == "db") {
                histories.push(f.clone());
            }
        }
        if case.what.starts_with("PostgreSQL") && case.args[0] != "run" {
            // Nothing on disk for a PostgreSQL URL, however it failed.
            let made: Vec<_> = files
                .iter()
                .filter(|f| {
                    let name = f.file_name().unwrap().to_string_lossy().into_owned();
                    !matches!(
                        name.as_str(),
                        "output.log" | "consume.toml" | "summary.json"
                    )
                })
                .collect();
            assert!(made.is_empty(), "{}: created {made:?}", case.what);
        }
    }
    // The runs the broker cases recorded, as `history` shows them.
    assert!(!histories.is_empty());
    for db in histories {
        let url = format!("sqlite://{}", db.display());
        let out = common::run_tranche(&["history", "--db", &url, "--job", "demo-s0", "--json"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_nothing_leaks(&format!("history of {url}"), &text);
    }
}

#[test]
fn urls_naming_no_backend_create_nothing_and_list_the_accepted_forms() {
    for db in [
        "postgress://app:Pq7Zx9Kw@127.0.0.1:5432/app",
        "mysqlx://app:Pq7Zx9Kw@127.0.0.1:3306/app",
        "app_Pq7Zx9Kw",
        "postgres://app:Pq7?Zx9Kw@127.0.0.1:5432/app",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tranche"))
            .args(["demo", "--db", db, "--rows", "10"])
            .current_dir(dir.path())
            .env("RUST_LOG", "trace")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{db}: {text}");
        assert!(
            text.contains("sqlite://path") && text.contains("keyword DSN"),
            "{db}: the error lists the accepted forms: {text}"
        );
        assert_nothing_leaks(db, &text);
        let made: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(made.is_empty(), "{db}: created {made:?}");
    }
    // A keyword DSN is PostgreSQL, as libpq reads it: it is connected to,
    // never taken for a file name.
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tranche"))
        .args([
            "history",
            "--db",
            "host=127.0.0.1 port=1 user=app password='Pq7 Zx9Kw' dbname=app",
            "--job",
            "x",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(text.contains("port 1 failed"), "{text}");
    assert_nothing_leaks("keyword DSN", &text);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Two processes opening one fresh SQLite file at the same moment both
/// start (one waits on the other's lock) and share the run (one run key,
/// so that the later one joins it however quickly the first finished).
#[test]
fn two_processes_on_a_fresh_sqlite_file_both_start_and_share_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("fresh.db").display());
    let spawn = |name: &str| {
        let summary = dir.path().join(name).display().to_string();
        Command::new(env!("CARGO_BIN_EXE_tranche"))
            .args([
                "demo",
                "--db",
                &db,
                "--rows",
                "20000",
                "--quiet",
                "--run-key",
                "fresh",
                "--summary-json",
                &summary,
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("a.json"), spawn("b.json"));
    for (name, child) in [("a.json", a), ("b.json", b)] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.path().join(name)).unwrap()).unwrap()
    };
    let (a, b) = (read("a.json"), read("b.json"));
    assert_eq!(a["run_id"], b["run_id"], "one run, shared");
    assert_eq!(a["verified"], true, "{a}");
    assert_eq!(b["verified"], true, "{b}");
}
