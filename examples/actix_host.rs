//! Embedding tranche in an actix host (an actix-web app has the same
//! `System`): start the runtime from inside the host's System, follow the
//! run's progress, and shut down cleanly.
//!
//! `cargo run --example actix_host`

use std::sync::Arc;
use std::time::Duration;

use tranche::sink::MemorySink;
use tranche::store::{Bind, Sql};
use tranche::{Job, Message, RuntimeConfig, RuntimeHandle, Scope, Source, SourceRow, Strategy};

#[actix::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("users.db").display());
    let mut config = RuntimeConfig::new(url);
    config.page_size = 500;
    // The runtime runs its own System on its own thread: it never competes
    // with the host's arbiters.
    let runtime = RuntimeHandle::start(config).await?;
    runtime
        .store()
        .run(|c| {
            c.batch(
                "CREATE TABLE users (id INTEGER PRIMARY KEY, signed_up BIGINT NOT NULL); \
                 CREATE INDEX users_signed_up ON users (signed_up, id)",
            )?;
            for chunk in (1..=50_000i64).collect::<Vec<_>>().chunks(1000) {
                let mut sql = Sql::new("INSERT INTO users (id, signed_up) VALUES ");
                for (i, id) in chunk.iter().enumerate() {
                    sql.push(
                        if i == 0 { "(?, ?)" } else { ", (?, ?)" },
                        [Bind::Int(*id), Bind::Int(id % 977)],
                    );
                }
                c.execute(&sql)?;
            }
            Ok(())
        })
        .await?;

    let sink = MemorySink::new();
    let job = Job::builder("welcome-back")
        .source(Source::new("users", "id", "signed_up")?)
        .strategy(Strategy::Modulo { modulus: 5 })
        .processor(|row: &SourceRow, _: &Scope| {
            Ok(Some(Message::new("welcome-back", row.key, 1, Vec::new())))
        })
        .sink(Arc::new(sink.clone()))
        .build()?;
    let run = runtime.start_run(job)?;
    let mut progress = run.subscribe();
    let watcher = actix::spawn(async move {
        while progress.changed().await.is_ok() {
            let p = progress.borrow().clone();
            println!("{} / {} rows", p.rows_done, p.rows_identified);
            actix::clock::sleep(Duration::from_millis(100)).await;
        }
    });
    let report = run.wait().await?;
    watcher.abort();
    println!(
        "{:?}: {} users, {} messages",
        report.state,
        report.rows_done,
        sink.len()
    );
    runtime.shutdown().await;
    Ok(())
}
