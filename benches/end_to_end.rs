//! End to end: `tranche demo` (seed, identify, update in-process, verify)
//! on SQLite and on PostgreSQL, printing rows per second for each run.
//!
//! `cargo bench --bench end_to_end`. Settings from the environment:
//! `TRANCHE_BENCH_ROWS` (default 1000000), `TRANCHE_BENCH_PG` (admin URL,
//! default `postgres://postgres@127.0.0.1:5432/postgres`; the bench creates
//! and uses the database `tranche_bench`), `TRANCHE_BENCH_CONCURRENCY`
//! (default 4), `TRANCHE_BENCH_PAGE` (default 1000). A backend that cannot
//! be reached is reported as skipped.

use std::process::Command;

use diesel::connection::SimpleConnection;
use diesel::Connection;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Measured {
    processed: i64,
    seconds: f64,
    verified: bool,
}

/// Runs `tranche demo` on `url` (seeded afresh, the in-process update
/// sink) and reads its summary: the run's rows and time, seeding excluded.
fn measure(url: &str, rows: u64, concurrency: usize, page: usize) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    let summary = dir.path().join("summary.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tranche"))
        .args([
            "demo",
            "--db",
            url,
            "--fresh",
            "--quiet",
            "--partitions",
            "8",
        ])
        .args(["--rows", &rows.to_string()])
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--page-size", &page.to_string()])
        .arg("--summary-json")
        .arg(&summary)
        .env("RUST_LOG", "warn")
        .output()?;
    if !out.status.success() {
        anyhow::bail!(
            "tranche demo failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary)?)?;
    Ok(Measured {
        processed: s["rows_published"].as_i64().unwrap_or(0),
        seconds: s["elapsed_s"].as_f64().unwrap_or(0.0),
        verified: s["verified"].as_bool().unwrap_or(false),
    })
}

fn pg_bench_url() -> anyhow::Result<String> {
    let admin = std::env::var("TRANCHE_BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = diesel::PgConnection::establish(&admin)?;
    conn.batch_execute("DROP DATABASE IF EXISTS tranche_bench WITH (FORCE)")?;
    conn.batch_execute("CREATE DATABASE tranche_bench")?;
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Ok(format!("{base}/tranche_bench"))
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // then this only checks that it builds and starts.
    if !std::env::args().any(|a| a == "--bench") {
        println!("end_to_end: run with `cargo bench --bench end_to_end`");
        return Ok(());
    }
    let rows: u64 = env_or("TRANCHE_BENCH_ROWS", 1_000_000);
    let concurrency: usize = env_or("TRANCHE_BENCH_CONCURRENCY", 4);
    let page: usize = env_or("TRANCHE_BENCH_PAGE", 1000);
    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
    println!(
        "end-to-end demo: {rows} subscriptions seeded, update sink, concurrency {concurrency}, page {page}, {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<12} {:>14} {:>10} {:>14} {:>9}",
        "backend", "rows processed", "seconds", "rows/s", "verified"
    );
    let backends: Vec<(&str, anyhow::Result<String>)> =
        vec![("sqlite", Ok(sqlite)), ("postgres", pg_bench_url())];
    for (name, url) in backends {
        let result = url.and_then(|url| measure(&url, rows, concurrency, page));
        match result {
            Ok(m) => println!(
                "{:<12} {:>14} {:>10.2} {:>14.0} {:>9}",
                name,
                m.processed,
                m.seconds,
                m.processed as f64 / m.seconds,
                m.verified
            ),
            Err(e) => println!(
                "{name:<12} skipped: {}",
                tranche::redact::redact_url(&e.to_string())
            ),
        }
    }
    Ok(())
}
