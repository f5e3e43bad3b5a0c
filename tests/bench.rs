//! `tranche bench` end to end on a small table against the real
//! PostgreSQL, RabbitMQ, NATS and Kafka-protocol broker: every measurement runs over every row and
//! the results are written as JSON, Markdown and PNG. Nothing is timed
//! here; the figures are the bench's business.

mod common;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

#[test]
fn the_bench_measures_each_group_over_every_row_and_writes_its_results() {
    let (Some(amqp), Some(nats), Some(kafka)) = (
        common::amqp_url(),
        common::nats_url(),
        common::kafka_brokers(),
    ) else {
        return;
    };
    // Skips (or fails, when services are required) without PostgreSQL.
    let Some(_probe) = common::pg_database("bench_probe") else {
        return;
    };
    let database = format!("tranche_bench_t_{}", std::process::id());
    let out = tempfile::tempdir().unwrap();
    let admin = common::pg_admin_url();
    // With the mysql feature, the MariaDB read group and update step too.
    let mysql: Vec<String> = if cfg!(feature = "mysql") {
        vec!["--mysql".into(), mysql_admin()]
    } else {
        Vec::new()
    };
    let mysql_args: Vec<&str> = mysql.iter().map(String::as_str).collect();
    // graphile-worker, when Node.js and the harness's packages are here
    // (`npm ci --prefix benches/peers`; .ci/run installs them).
    let peers_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peers");
    let peers = peers_dir
        .join("node_modules/graphile-worker/package.json")
        .is_file();
    assert!(
        peers || !common::services_required(),
        "the peers' packages are not installed: npm ci --prefix benches/peers"
    );
    let peers_arg = if peers {
        peers_dir.to_str().unwrap().to_owned()
    } else {
        "none".to_owned()
    };
    let mut args = vec![
        "bench",
        "--pg",
        &admin,
        "--database",
        &database,
        "--rows",
        "3000",
        "--page-size",
        "250",
        "--read-rounds",
        "2",
        "--latency-rows",
        "500",
        "--broker-rtt-rows",
        "400",
        "--memory-rows",
        "3000",
        "--baseline-budget-s",
        "1",
        "--peers",
        &peers_arg,
        "--peer-budget-s",
        "120",
        "--amqp",
        &amqp,
        "--nats",
        &nats,
        "--kafka",
        &kafka,
        "--out",
        out.path().to_str().unwrap(),
    ];
    args.extend(&mysql_args);
    let output = common::run_tranche(&args);
    if let Ok(mut conn) = PgConnection::establish(&admin) {
        let _ = conn.batch_execute(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"));
    }
    #[cfg(feature = "mysql")]
    if let Ok(mut conn) = diesel::MysqlConnection::establish(&mysql_admin()) {
        let _ = conn.batch_execute(&format!("DROP DATABASE IF EXISTS {database}"));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("bench.json")).unwrap())
            .unwrap();
    assert_eq!(json["skipped"], serde_json::json!([]), "{stdout}");
    let measured: Vec<(String, String, u64, u64)> = json["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["group"].as_str().unwrap().to_owned(),
                m["name"].as_str().unwrap().to_owned(),
                m["rows"].as_u64().unwrap(),
                m["measured_rows"].as_u64().unwrap(),
            )
        })
        .collect();
    let names: Vec<(&str, &str)> = measured
        .iter()
        .map(|(g, n, _, _)| (g.as_str(), n.as_str()))
        .collect();
    let s1 = "sequential worker (1)";
    let quick = "modulo workers (5)";
    let latency = "latency 20 ms, 500 rows";
    let (rabbit_away, jet_away) = ("RabbitMQ, 20 ms round trip", "JetStream, 20 ms round trip");
    let (range_peer, row_peer) = (
        "graphile-worker, a job per 1000 rows (4 at once)",
        "graphile-worker, a job per row (24 at once)",
    );
    let mut expected = vec![
        ("PostgreSQL read", "keyset walk, 1 connection"),
        ("PostgreSQL read", "COPY TO STDOUT"),
        ("PostgreSQL read", "tranche, null sink"),
        ("PostgreSQL read", "tranche, key order only"),
        ("RabbitMQ", "bare client, pipelined"),
        ("RabbitMQ", s1),
        ("RabbitMQ", quick),
        ("RabbitMQ", "tranche"),
        ("RabbitMQ", range_peer),
        ("RabbitMQ", row_peer),
        ("JetStream", "bare client, pipelined"),
        ("JetStream", s1),
        ("JetStream", quick),
        ("JetStream", "tranche"),
        ("Kafka", "bare client, pipelined"),
        ("Kafka", s1),
        ("Kafka", quick),
        ("Kafka", "tranche"),
        (rabbit_away, "bare client, pipelined"),
        (rabbit_away, s1),
        (rabbit_away, quick),
        (rabbit_away, "tranche"),
        (jet_away, "bare client, pipelined"),
        (jet_away, s1),
        (jet_away, quick),
        (jet_away, "tranche"),
        (latency, s1),
        (latency, quick),
        (latency, "tranche"),
        ("update step", "tranche, update step, SQLite"),
        ("update step", "tranche, update step, PostgreSQL"),
    ];
    // The group is named after the server: MariaDB or MySQL.
    let server = if names.iter().any(|(g, _)| *g == "MySQL read") {
        "MySQL"
    } else {
        "MariaDB"
    };
    let (read, update) = (
        format!("{server} read"),
        format!("tranche, update step, {server}"),
    );
    if !peers {
        expected.retain(|(_, n)| *n != range_peer && *n != row_peer);
    }
    if cfg!(feature = "mysql") {
        expected.extend([
            (read.as_str(), "keyset walk, 1 connection"),
            (read.as_str(), "tranche, null sink"),
            ("update step", update.as_str()),
        ]);
    }
    assert_eq!(names, expected);
    for (group, name, rows, done) in &measured {
        let want = match group.as_str() {
            g if g == latency => 500,
            g if g == rabbit_away || g == jet_away => 400,
            _ => 3000,
        };
        assert_eq!(*rows, want, "{group} / {name}");
        // Limits and tranche go through every row; a baseline may be
        // stopped at its budget, but it did some.
        if name.starts_with("sequential") || name.starts_with("modulo") || name == row_peer {
            assert!(*done > 0 && *done <= want, "{group} / {name}: {done}");
        } else {
            assert_eq!(*done, want, "{group} / {name}");
        }
    }
    // Through the relay every confirmation takes the 20 ms round trip, so
    // in its budget of 1 s a sequential worker confirms at most 50 rows.
    for (group, name, _, done) in &measured {
        if group == rabbit_away || group == jet_away {
            if name == s1 {
                assert!(*done <= 50, "{group} / {name}: {done}");
            } else if name == quick {
                assert!(*done <= 5 * 50, "{group} / {name}: {done}");
            }
        }
    }
    // tranche against each other measurement of its group (the read
    // group's two tranche rows each against the walk and COPY; MariaDB's
    // against its walk).
    assert_eq!(
        json["ratios"].as_array().unwrap().len(),
        2 * 2
            + 3
            + 2 * usize::from(peers)
            + 3
            + 3
            + 3
            + 3
            + 2
            + usize::from(cfg!(feature = "mysql"))
    );
    // Every measurement says what CPU it took; where the work read
    // PostgreSQL (this machine's server), the server's too.
    for m in json["measurements"].as_array().unwrap() {
        let what = format!("{} / {}", m["group"], m["name"]);
        assert!(m["cpu"]["process"]["user_s"].is_number(), "{what}: {m}");
        let on_postgres =
            m["group"] == "PostgreSQL read" || m["name"] == "tranche, update step, PostgreSQL";
        if on_postgres {
            assert!(m["cpu"]["postgres"]["user_s"].is_number(), "{what}: {m}");
        }
    }
    if peers {
        let peer = json["measurements"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == range_peer)
            .unwrap();
        assert_eq!(peer["kind"], "peer");
        assert!(
            peer["note"].as_str().unwrap().contains("3 jobs enqueued"),
            "{peer}"
        );
        assert!(
            peer["cpu"]["process"]["user_s"].as_f64().unwrap() > 0.0,
            "{peer}"
        );
    }
    // The targets the bench holds tranche to, each with its verdict.
    let targets: Vec<&str> = json["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["what"].as_str().unwrap())
        .collect();
    for want in [
        "PostgreSQL read: null sink / COPY TO STDOUT",
        "JetStream: tranche / bare client",
        "RabbitMQ: tranche / graphile-worker, a job per 1000 rows (4 at once)",
        "RabbitMQ: tranche's process CPU per 1M rows against that peer's",
    ] {
        assert!(targets.contains(&want), "{want}: {targets:?}");
    }
    assert!(
        targets.iter().any(|t| t.contains("checkpoints and leases")),
        "{targets:?}"
    );
    assert!(stdout.contains("PG CPU"), "{stdout}");
    let memory = &json["memory"][0];
    assert_eq!(memory["rows"], 3000);
    assert!(memory["peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    // The read group ran twice in turn, and says so; one median each.
    assert!(
        stdout.contains("tranche, null sink, round 2 of 2"),
        "{stdout}"
    );
    assert!(json["settings"]["reads"]
        .as_str()
        .unwrap()
        .contains("2 rounds"));
    assert!(json["settings"]["brokers at a distance"]
        .as_str()
        .unwrap()
        .contains("20 ms round trip"));
    assert!(json["settings"]["Kafka"]
        .as_str()
        .unwrap()
        .contains("acks=all"));
    assert!(json["settings"]["RabbitMQ"]
        .as_str()
        .unwrap()
        .contains("publisher confirms"));

    // The update step's SQLite database goes, with its log.
    let left: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("bench.db"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    let md = std::fs::read_to_string(out.path().join("bench.md")).unwrap();
    assert!(
        md.contains("| RabbitMQ | tranche | tranche | 3000 |"),
        "{md}"
    );
    assert!(md.contains("## Targets"));
    assert!(md.contains("CPU s / 1M rows"), "{md}");
    let png = std::fs::read(out.path().join("bench.png")).unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let info = decoder.read_info().unwrap();
    assert!(info.info().height > 400, "one bar per measurement");
    // The password of the broker URL never reaches the output.
    assert!(!stdout.contains("guest:guest"), "{stdout}");
}

/// The MySQL server the bench measures (`TRANCHE_TEST_MYSQL`).
fn mysql_admin() -> String {
    std::env::var("TRANCHE_TEST_MYSQL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}
