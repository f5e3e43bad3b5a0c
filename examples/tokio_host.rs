//! Embedding tranche in a plain `#[tokio::main]` service (axum, tonic, ...):
//! the runtime owns its actix System on its own thread; the host only holds
//! a `Send + Clone` handle.
//!
//! `cargo run --example tokio_host` (SQLite file in a temporary directory;
//! set `DATABASE_URL` to use PostgreSQL instead).

use std::sync::Arc;

use tranche::sink::JsonLinesSink;
use tranche::store::{Bind, Sql};
use tranche::{Job, Message, RuntimeConfig, RuntimeHandle, Scope, Source, SourceRow, Strategy};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let dir = tempfile::tempdir()?;
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| format!("sqlite://{}", dir.path().join("orders.db").display()));
    let runtime = RuntimeHandle::start(RuntimeConfig::new(&url)).await?;

    // The host's own table: orders whose confirmation e-mail must be resent.
    runtime
        .store()
        .run(|c| {
            c.batch(
                "CREATE TABLE IF NOT EXISTS orders (id BIGINT PRIMARY KEY, \
                 placed_at BIGINT NOT NULL, status TEXT NOT NULL); \
                 CREATE INDEX IF NOT EXISTS orders_placed_at ON orders (placed_at, id)",
            )?;
            c.batch("DELETE FROM orders")?;
            let mut sql = Sql::new("INSERT INTO orders (id, placed_at, status) VALUES ");
            for id in 1..=10_000i64 {
                let status = if id % 4 == 0 { "cancelled" } else { "paid" };
                sql.push(
                    if id == 1 { "(?, ?, ?)" } else { ", (?, ?, ?)" },
                    [
                        Bind::Int(id),
                        Bind::Int(1_700_000_000 + id / 3),
                        Bind::Text(status.into()),
                    ],
                );
            }
            c.execute(&sql).map(|_| ())
        })
        .await?;

    let out = dir.path().join("emails.jsonl");
    let job = Job::builder("resend-confirmations")
        .source(
            Source::new("orders", "id", "placed_at")?
                .column("status")?
                .filter(
                    "status",
                    tranche::job::Op::Eq,
                    tranche::job::FilterValue::Text("paid".into()),
                )?,
        )
        .strategy(Strategy::Range { partitions: 4 })
        .processor(|row: &SourceRow, _: &Scope| {
            let payload = serde_json::json!({"order": row.key, "status": row.text("status")?});
            Ok(Some(Message::new(
                "resend-confirmations",
                row.key,
                1,
                payload.to_string().into_bytes(),
            )))
        })
        .sink(Arc::new(JsonLinesSink::open(&out)?))
        .build()?;

    // Any task of the host may drive the handle; it is Send + Clone.
    let handle = runtime.clone();
    let report = tokio::spawn(async move { handle.run(job).await }).await??;
    println!(
        "run {}: {:?}, {} orders, {} messages in {:?} -> {}",
        report.run_id,
        report.state,
        report.rows_done,
        report.rows_published,
        report.elapsed,
        out.display()
    );
    runtime.shutdown().await;
    Ok(())
}
