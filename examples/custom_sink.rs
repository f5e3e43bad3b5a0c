//! Writing your own sink: deliver the batch, return only once it is durable.
//!
//! This one appends to a file per lane-batch and fsyncs; a real one would
//! publish to a broker and await its confirmations, pipelined.
//! `cargo run --example custom_sink`

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tranche::store::{Bind, Sql};
use tranche::{
    Delivery, Job, Message, RuntimeConfig, RuntimeHandle, Scope, Sink, SinkError, Source,
    SourceRow, Strategy,
};

/// Counts deliveries and writes one line per message to a file.
struct AuditSink {
    file: Mutex<std::fs::File>,
    batches: AtomicU64,
}

#[tranche::async_trait]
impl Sink for AuditSink {
    fn name(&self) -> &str {
        "audit"
    }

    async fn deliver(&self, batch: &[Message]) -> Result<Delivery, SinkError> {
        let fatal = |e: std::io::Error| SinkError::fatal("audit", e);
        {
            let mut file = self.file.lock().unwrap();
            for m in batch {
                writeln!(file, "{} {}", m.id, String::from_utf8_lossy(&m.payload))
                    .map_err(fatal)?;
            }
            // Durable before confirming: tranche checkpoints right after.
            file.sync_data().map_err(fatal)?;
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
        Ok(Delivery::confirmed(batch.len()))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("audit.db").display());
    let runtime = RuntimeHandle::start(RuntimeConfig::new(url)).await?;
    runtime
        .store()
        .run(|c| {
            c.batch(
                "CREATE TABLE invoices (id INTEGER PRIMARY KEY, issued BIGINT NOT NULL); \
                 CREATE INDEX invoices_issued ON invoices (issued, id)",
            )?;
            let mut sql = Sql::new("INSERT INTO invoices (id, issued) VALUES ");
            for id in 1..=5_000i64 {
                sql.push(
                    if id == 1 { "(?, ?)" } else { ", (?, ?)" },
                    [Bind::Int(id), Bind::Int(id / 2)],
                );
            }
            c.execute(&sql).map(|_| ())
        })
        .await?;
    let path = dir.path().join("audit.log");
    let sink = Arc::new(AuditSink {
        file: Mutex::new(std::fs::File::create(&path)?),
        batches: AtomicU64::new(0),
    });
    let job = Job::builder("audit-invoices")
        .source(Source::new("invoices", "id", "issued")?)
        .strategy(Strategy::Range { partitions: 3 })
        .processor(|row: &SourceRow, _: &Scope| {
            Ok(Some(Message::new(
                "audit-invoices",
                row.key,
                1,
                format!("issued={}", row.order).into_bytes(),
            )))
        })
        .sink(sink.clone())
        .build()?;
    let report = runtime.run(job).await?;
    println!(
        "{} invoices audited in {} batches -> {}",
        report.rows_done,
        sink.batches.load(Ordering::Relaxed),
        path.display()
    );
    runtime.shutdown().await;
    Ok(())
}
